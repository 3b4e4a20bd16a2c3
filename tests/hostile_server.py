"""One small OpenAI/TGI-shaped server that misbehaves one way per mode, for tests of what llmcompare
does with servers it does not control. It listens on 127.0.0.1 only, on a free port.

Use it as a context manager that gives its root URL (append ``/v1`` for the ``openai`` backend)::

    with HostileServer("usage", usage_raw="100000000") as url:
        ...

``healthy_first=k`` answers the first ``k`` generation requests (POSTs) as a healthy server would, so
the backend's probe in ``load()`` passes and the measured requests meet the misbehaviour; 0 (the
default) misbehaves from the probe on. ``requests`` lists what the server received (path, headers,
body), for assertions on what the client sent.

Modes (what a generation request gets):

``ok``            a healthy stream: ``max_tokens`` ids, usage, ``[DONE]``
``usage``         ``events`` text events without ids, then ``usage.completion_tokens`` written as the raw
                  JSON ``usage_raw`` (``100000000``, ``1`` followed by 400 zeros, ``-1000000``, ``"8"``,
                  ``true``, ``8.5``, ``NaN``...)
``ids_usage``     ``ids`` token ids, then usage ``usage_raw`` (ids and usage disagreeing)
``extra``         ``ids`` token ids whatever ``max_tokens`` says, usage agreeing (more tokens than asked)
``endless``       token ids, as fast as the socket takes them, never ending (ignores ``max_tokens``)
``trickle``       events without tokens, one every ``interval_s``, never ending
``flood``         keep-alive comments as fast as the socket takes them, never ending
``huge_line``     ``data: `` and then one line that never ends
``sse_bomb``      a 200 event stream, gzip-compressed, whose one line inflates to 1 GiB
``gzip_bomb``     HTTP 500 whose gzip body inflates to 1 GiB (``deflate_bomb``: a deflate body, 256 MiB)
``redirect``      HTTP ``status`` (307 or 308) to ``target`` + the same path, for every route (with
                  ``healthy_first``: for the generation requests after the healthy ones only)
``surrogate``     lone surrogates (valid JSON escapes) in ``owned_by``, the version, text, ``finish_reason``;
                  ``error`` in the message of a 500 too when ``error_too`` is set
``huge_models``   ``GET /v1/models`` answers 8 MiB of model entries
``echo``          HTTP ``status`` (default 400) whose body echoes the request's ``Authorization`` header,
                  URL and body (a server that quotes secrets back)

In any mode, ``fail_posts=(a, b)`` answers the generation requests numbered ``a`` to ``b - 1`` (the
first is 1) with HTTP 500 and the plain-text body ``error_text`` (to fail a warm-up wave, or most of
a level); ``owned_by`` is what ``GET /v1/models`` names as the server.

TGI's ``/generate_stream`` follows the same modes where they apply (``ok``, ``ids_usage`` with
``generated_tokens`` as ``usage_raw``, ``extra``, ``endless``, ``surrogate``, the bombs, ``redirect``,
``echo``); ``/info`` answers for it.

``python tests/hostile_server.py MODE [key=value ...]`` serves one mode until interrupted (it prints
its URL), to reproduce a case by hand.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import sys
import threading
import zlib
from typing import Any

from aiohttp import web

HOST = "127.0.0.1"
BOMB_BYTES = 1 << 30


@functools.lru_cache(maxsize=None)
def gzip_bomb() -> bytes:
    """A gzip body that inflates to :data:`BOMB_BYTES` zero bytes: 16 members of 64 MiB each."""
    member = gzip.compress(b"\0" * (64 << 20), 9)
    return member * (BOMB_BYTES // (64 << 20))


@functools.lru_cache(maxsize=None)
def deflate_bomb() -> bytes:
    """A zlib (``Content-Encoding: deflate``) body that inflates to 256 MiB of zero bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, 15)
    block = b"\0" * (1 << 20)
    return b"".join([c.compress(block) for _ in range(256)] + [c.flush()])


@functools.lru_cache(maxsize=None)
def sse_bomb() -> bytes:
    """A gzip event stream of one ``data:`` line that inflates to 1 GiB without a newline."""
    member = gzip.compress(b"a" * (64 << 20), 9)
    return gzip.compress(b"data: ") + member * (BOMB_BYTES // (64 << 20))


def _sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


class HostileServer:
    """See the module docstring."""

    def __init__(self, mode: str = "ok", *, healthy_first: int = 0, usage_raw: str = "8", events: int | None = None,
                 ids: int = 8, status: int | None = None, target: str = "", interval_s: float = 0.5,
                 error_too: bool = False, owned_by: str = "hostile", fail_posts: tuple[int, int] = (0, 0),
                 error_text: str = "injected failure"):
        self.mode = mode
        self.healthy_first = healthy_first
        self.usage_raw = usage_raw
        self.events = events
        self.ids = ids
        self.status = status
        self.target = target.rstrip("/")
        self.interval_s = interval_s
        self.error_too = error_too
        self.owned_by = owned_by
        self.fail_posts = tuple(fail_posts)
        self.error_text = error_text
        self.requests: list[dict[str, Any]] = []
        self.posts = 0
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        if mode in ("gzip_bomb",):
            gzip_bomb()  # build it before the clock of any test starts
        elif mode == "deflate_bomb":
            deflate_bomb()
        elif mode == "sse_bomb":
            sse_bomb()

    # ---- life ----
    def __enter__(self) -> str:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"hostile-{self.mode}", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(30)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/version", self.version)
        app.router.add_get("/info", self.info)
        app.router.add_post("/v1/completions", self.generate)
        app.router.add_post("/v1/chat/completions", self.generate)
        app.router.add_post("/generate_stream", self.generate)
        app.router.add_route("*", "/{tail:.*}", self.anything)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{HOST}:{port}"

    # ---- routes ----
    def _redirect(self, request: web.Request, post: bool = False) -> web.Response | None:
        """A redirect in ``redirect`` mode: every route, or with ``healthy_first`` the generation
        requests after the healthy ones only."""
        if self.mode != "redirect" or (self.healthy_first and (not post or self.posts <= self.healthy_first)):
            return None
        return web.Response(status=self.status or 307, headers={"Location": self.target + request.path_qs})

    async def anything(self, request: web.Request) -> web.Response:
        return self._redirect(request) or web.Response(status=404, text="no such route")

    async def models(self, request: web.Request) -> web.Response:
        if (r := self._redirect(request)) is not None:
            return r
        if self.mode == "huge_models":  # 8 MiB of model entries
            entry = '{"id": "m%d", "object": "model", "owned_by": "' + "x" * 200 + '"}'
            body = '{"object": "list", "data": [' + ", ".join(entry % i for i in range(36000)) + "]}"
            return web.Response(text=body, content_type="application/json")
        owner = '"\\ud800"' if self.mode == "surrogate" else json.dumps(self.owned_by)
        body = '{"object": "list", "data": [{"id": "hostile", "object": "model", "owned_by": %s}]}' % owner
        return web.Response(text=body, content_type="application/json")

    async def version(self, request: web.Request) -> web.Response:
        if (r := self._redirect(request)) is not None:
            return r
        version = '"1.0-\\udc80"' if self.mode == "surrogate" else '"hostile-1.0"'
        return web.Response(text='{"version": %s}' % version, content_type="application/json")

    async def info(self, request: web.Request) -> web.Response:
        if (r := self._redirect(request)) is not None:
            return r
        version = '"\\ud800"' if self.mode == "surrogate" else '"hostile-1.0"'
        return web.Response(text='{"version": %s, "model_id": "hostile", "model_device_type": "cpu"}' % version,
                            content_type="application/json")

    async def generate(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        self.posts += 1
        if (r := self._redirect(request, post=True)) is not None:
            return r
        if self.fail_posts[0] <= self.posts < self.fail_posts[1]:
            return web.Response(status=500, text=self.error_text)  # as it is: control characters raw
        tgi = request.path == "/generate_stream"
        n = int((body.get("parameters") or {}).get("max_new_tokens", 8) if tgi else body.get("max_tokens", 8))
        mode = "ok" if self.posts <= self.healthy_first else self.mode
        handler = getattr(self, f"_{mode}")
        return await handler(request, body, n, tgi)

    # ---- what a generation request gets, per mode ----
    async def _open(self, request: web.Request, headers: dict[str, str] | None = None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **(headers or {})})
        await resp.prepare(request)
        return resp

    @staticmethod
    def _ids_event(ids: list[int], tgi: bool, last: bool = False, usage_raw: str | None = None,
                   finish: str = "length") -> bytes:
        if tgi:
            out = b""
            for i, t in enumerate(ids):
                details = (b', "details": {"finish_reason": "%s", "generated_tokens": %s, "input_length": 3}'
                           % (finish.encode(), (usage_raw or str(len(ids))).encode())
                           if last and i == len(ids) - 1 else b', "details": null')
                out += b'data:{"index": %d, "token": {"id": %d, "text": "a", "logprob": -0.1, "special": false}' \
                       b', "generated_text": null%s}\n\n' % (i, t, details)
            return out
        choice = {"index": 0, "text": "a" * len(ids), "token_ids": ids, "finish_reason": finish if last else None}
        return _sse({"choices": [choice]})

    async def _ok(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        resp = await self._open(request)
        ids = [5 + i % 90 for i in range(n)]
        await resp.write(self._ids_event(ids, tgi, last=True))
        if not tgi:
            await resp.write(_sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n}}))
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _extra(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        resp = await self._open(request)
        ids = [5 + i % 90 for i in range(self.ids)]
        for i in range(0, len(ids), 4):  # four tokens a read
            await resp.write(self._ids_event(ids[i:i + 4], tgi, last=i + 4 >= len(ids),
                                             usage_raw=str(len(ids))))
        if not tgi:
            await resp.write(_sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(ids)}}))
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _ids_usage(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        resp = await self._open(request)
        ids = [5 + i % 90 for i in range(self.ids)]
        await resp.write(self._ids_event(ids, tgi, last=True, usage_raw=self.usage_raw))
        if not tgi:
            await resp.write(b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": %s}}\n\n'
                             % self.usage_raw.encode())
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _usage(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        resp = await self._open(request)
        events = self.events if self.events is not None else n
        chat = request.path.endswith("/chat/completions")
        for i in range(events):
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length" if i == events - 1 else None}
            if chat:
                choice["delta"] = {"content": "a"}
            else:
                choice["text"] = "a"
            await resp.write(_sse({"choices": [choice]}))
        await resp.write(b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": %s}}\n\n'
                         % self.usage_raw.encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _endless(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        resp = await self._open(request)
        block = b"".join(self._ids_event([5 + i % 90], tgi) for i in range(200))
        try:
            while True:
                await resp.write(block)
        except (ConnectionError, asyncio.CancelledError, RuntimeError):
            pass
        return resp

    async def _trickle(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        resp = await self._open(request)
        try:
            while True:
                await resp.write(_sse({"choices": [{"index": 0, "text": "", "finish_reason": None}]}))
                await asyncio.sleep(self.interval_s)
        except (ConnectionError, asyncio.CancelledError, RuntimeError):
            pass
        return resp

    async def _flood(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        resp = await self._open(request)
        block = b": keep-alive\n\n" * 4096
        try:
            while True:
                await resp.write(block)
        except (ConnectionError, asyncio.CancelledError, RuntimeError):
            pass
        return resp

    async def _huge_line(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        resp = await self._open(request)
        block = b"x" * (1 << 20)
        try:
            await resp.write(b"data: ")
            while True:
                await resp.write(block)
        except (ConnectionError, asyncio.CancelledError, RuntimeError):
            pass
        return resp

    async def _bomb(self, request: web.Request, status: int, payload: bytes, encoding: str,
                    ctype: str) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={"Content-Type": ctype, "Content-Encoding": encoding,
                                                          "Content-Length": str(len(payload))})
        await resp.prepare(request)
        try:
            for i in range(0, len(payload), 1 << 16):
                await resp.write(payload[i:i + (1 << 16)])
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError, RuntimeError):
            pass
        return resp

    async def _gzip_bomb(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        return await self._bomb(request, 500, gzip_bomb(), "gzip", "application/json")

    async def _deflate_bomb(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        return await self._bomb(request, 500, deflate_bomb(), "deflate", "application/json")

    async def _sse_bomb(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        return await self._bomb(request, 200, sse_bomb(), "gzip", "text/event-stream")

    async def _surrogate(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.StreamResponse:
        if self.error_too:
            # a JSON escape of a lone surrogate, and the same code point as raw (invalid) UTF-8 bytes
            return web.Response(status=500, body=b'{"error": {"message": "broken \\ud800 \xed\xa0\x80 here"}}',
                                content_type="application/json")
        resp = await self._open(request)
        if tgi:
            for i in range(n):
                last = i == n - 1
                details = (', "details": {"finish_reason": "length\\udfff", "generated_tokens": %d}' % n) if last \
                    else ', "details": null'
                await resp.write(('data:{"token": {"id": %d, "text": "\\ud800", "special": false}%s}\n\n'
                                  % (5 + i, details)).encode())
        else:
            for i in range(n):
                finish = '"length\\udfff"' if i == n - 1 else "null"
                await resp.write(('data: {"choices": [{"index": 0, "text": "\\ud800", "token_ids": [%d],'
                                  ' "finish_reason": %s}]}\n\n' % (5 + i, finish)).encode())
            await resp.write(b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": %d}}\n\n' % n)
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _echo(self, request: web.Request, body: dict, n: int, tgi: bool) -> web.Response:
        echoed = (f"refused. Authorization: {request.headers.get('Authorization', '')}; "
                  f"url: {request.url}; Host: {request.headers.get('Host', '')}; body: {json.dumps(body)}")
        return web.Response(status=self.status or 400, text=json.dumps({"error": {"message": echoed}}),
                            content_type="application/json")


def main(argv: list[str]) -> None:
    mode, *pairs = argv
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        kwargs[key] = int(value) if value.isdigit() and key not in ("usage_raw",) else value
    with HostileServer(mode, **kwargs) as url:
        print(f"listening on {url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
