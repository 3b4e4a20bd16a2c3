"""The HTTP plumbing the server clients share (``openai_http.py``, ``tgi.py``): one aiohttp session,
the request's deadlines, bounded reads, redirects, the status and error mapping, and the SSE parser.

Every read from the server is bounded by :mod:`llmcompare.limits` (whatever the server sends):

* a streamed answer asking for ``N`` tokens may bring :func:`~llmcompare.limits.stream_byte_budget`
  bytes after decompression (``overrun`` beyond), one event :data:`~llmcompare.limits.MAX_EVENT_BYTES`
  (``malformed`` beyond); the token cap is the stream handlers' (``openai_stream.py``, ``tgi.py``);
* an error body is read to :data:`~llmcompare.limits.MAX_ERROR_BODY_BYTES` and a JSON document to
  :data:`~llmcompare.limits.MAX_JSON_BODY_BYTES`, through aiohttp's stream (which decompresses gzip
  and deflate in bounded steps), never with ``resp.text()``: a compressed bomb costs what is read;
* the probe in ``load()`` obeys the configured timeouts, with bounded ones where they are 0.

Redirects are not followed: a 3xx is a ``redirect`` failure naming its (redacted) target. With
``follow_redirects=true`` up to :data:`~llmcompare.limits.MAX_REDIRECTS` are followed (a POST only
through 307/308, which keep the method and body), never to another origin (scheme, host, port) while
credentials are sent.

Credentials: a URL's userinfo (``http://user:KEY@host/v1``) is taken out of the URL and sent as HTTP
Basic auth; ``api_key_env`` names a variable whose value is sent as a Bearer token. Neither is ever
echoed: :attr:`HttpClient.shown_url` is the redacted URL, and every message made from what the server
says passes through :meth:`HttpClient.redact` (``llmcompare.redact``), which also hides the secret
values of ``extra_body``. Strings from the server are data: made valid UTF-8 and bounded
(:func:`llmcompare.limits.safe_text`) before they go anywhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmcompare import limits
from llmcompare.backend import BackendConfig, Chunk, OptionSpec, clock
from llmcompare.errors import OptionError, RequestFailed, UserError
from llmcompare.limits import safe_text
from llmcompare.redact import redact_text, redact_url, secret_values, split_credentials

try:  # Python 3.11+
    from asyncio import timeout_at as _timeout_at
except ImportError:  # Python 3.10: aiohttp depends on async-timeout there
    from async_timeout import timeout_at as _timeout_at  # type: ignore[no-redef]

MAX_ERROR_BODY = limits.MAX_ERROR_TEXT
_READ_STEP = 64 * 1024


@dataclass
class CheckedChunk(Chunk):
    """A :class:`Chunk` that also carries the request's count cross-check (on the closing chunk):
    the counts each source gave and a verdict (:func:`llmcompare.records.count_check`). The session
    copies it into the request's record."""

    count_check: dict[str, Any] | None = None


class Secret:
    """A value that never shows itself in a repr, str or format (an API key, Basic auth, the list of
    values to redact)."""

    __slots__ = ("_value",)

    def __init__(self, value: Any):
        self._value = value

    def reveal(self) -> Any:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "<secret>"


def read_api_key(env_name: str | None) -> Secret | None:
    """The key held in the environment variable ``env_name`` (None when no name is given)."""
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise UserError(f"api_key_env={env_name}: the environment variable {env_name} is not set or empty")
    return Secret(value)


def parse_json_object(backend: str, key: str, raw: str | None) -> dict[str, Any]:
    """Parse a JSON-object option (``extra_body``) without I/O; raise :class:`OptionError` if it is not one.
    The message never quotes the value (it may hold a key)."""
    if raw in (None, ""):
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise OptionError(f"option {key} for backend {backend!r} is not valid JSON"
                          f" (line {getattr(exc, 'lineno', '?')}, column {getattr(exc, 'colno', '?')})") from None
    if not isinstance(value, dict):
        raise OptionError(f"option {key} for backend {backend!r} must be a JSON object")
    return value


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion from synchronous code (``load()``), on a fresh event loop; in a
    helper thread if this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def closing_after(coro: Coroutine[Any, Any, Any], client: HttpClient) -> Any:
    """Await ``coro``, then close ``client``'s session on the same event loop (``load()``'s probes)."""
    try:
        return await coro
    finally:
        await client.aclose()


# ---- failures ----------------------------------------------------------------------------------

def status_failure(status: int, body: str | bytes, redact: Any = None) -> RequestFailed:
    """Map a non-200 answer to a failure kind (the status is kept as ``.status``). 424 is TGI's
    "the model shard failed": a server error. ``body`` is what was read of the answer (bounded);
    ``redact`` (a callable) hides secrets the server may echo."""
    text = safe_text(body, limits.MAX_ERROR_BODY_BYTES).strip()[:MAX_ERROR_BODY]
    if redact is not None:
        text = redact(text)
    message = f"HTTP {status}: {text}" if text else f"HTTP {status}"
    if status in (429, 503) or "overload" in text.lower():
        failure = RequestFailed("overload", message)
    elif status >= 500 or status == 424:
        failure = RequestFailed("server_error", message)
    elif 400 <= status < 500:
        failure = RequestFailed("client_error", message)
    elif 300 <= status < 400:
        failure = RequestFailed("redirect", message)
    else:
        failure = RequestFailed("malformed", f"unexpected answer {message}")
    failure.status = status  # type: ignore[attr-defined]
    return failure


def error_event_failure(obj: Mapping[str, Any], payload: bytes | str | None = None, redact: Any = None) -> RequestFailed:
    """Map a mid-stream ``{"error": ...}`` event (OpenAI servers: an object; TGI: a string plus
    ``error_type``) to a failure kind. The message quotes the event's bytes, bounded and redacted."""
    err = obj.get("error")
    code = err.get("code") if isinstance(err, dict) else None
    if payload is None:
        try:
            payload = json.dumps(obj)
        except (ValueError, TypeError, RecursionError):
            payload = "{...}"
    text = safe_text(payload, MAX_ERROR_BODY)
    if redact is not None:
        text = redact(text)
    kind_text = text.lower() + " " + safe_text(obj.get("error_type"), 64).lower()
    if "overload" in kind_text or (type(code) in (int, str) and code in (429, 503, "429", "503")):
        return RequestFailed("overload", f"error event: {text}")
    if type(code) is int and 400 <= code < 500:
        return RequestFailed("client_error", f"error event: {text}")
    return RequestFailed("server_error", f"error event: {text}")


def redacted(exc: RequestFailed, redact: Any) -> RequestFailed:
    """``exc`` with its message redacted (kind, HTTP status and redirect target kept)."""
    out = RequestFailed(exc.kind, redact(str(exc)))
    for attr in ("status", "location"):
        if hasattr(exc, attr):
            setattr(out, attr, getattr(exc, attr))
    return out


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---- SSE ---------------------------------------------------------------------------------------

class SSEParser:
    """Splits a server-sent-events byte stream into the data payloads of its events.

    Feed it bytes as they arrive; it returns the payloads of the events completed so far (several
    ``data:`` lines of one event are joined with newlines; comments, ``event:``, ``id:`` and
    ``retry:`` lines are dropped). Both ``data: x`` and ``data:x`` are read (TGI writes the latter),
    and ``\\r\\n`` line ends are accepted. An event (complete or still pending) longer than
    ``max_event`` bytes (:data:`llmcompare.limits.MAX_EVENT_BYTES`) is ``malformed``.
    """

    __slots__ = ("_buf", "max_event")

    def __init__(self, max_event: int = limits.MAX_EVENT_BYTES) -> None:
        self._buf = b""
        self.max_event = max_event

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else bytes(data)
        keep = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # maybe the first half of a \r\n split across two reads
                buf, keep = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop() + keep
        if len(self._buf) > self.max_event or any(len(b) > self.max_event for b in blocks):
            self._buf = b""
            raise RequestFailed("malformed", f"an event longer than {self.max_event} bytes")
        return [p for p in map(self._payload, blocks) if p is not None]

    def flush(self) -> list[bytes]:
        """The last event when the stream ended without its blank line."""
        rest, self._buf = self._buf, b""
        payload = self._payload(rest.replace(b"\r\n", b"\n").strip(b"\n")) if rest.strip() else None
        return [payload] if payload is not None else []

    @staticmethod
    def _payload(block: bytes) -> bytes | None:
        if block.startswith(b"data:") and b"\n" not in block:  # the common case: one data line
            return block[6:] if block.startswith(b"data: ") else block[5:]
        lines = []
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                lines.append(line[6:] if line.startswith(b"data: ") else line[5:])
        return b"\n".join(lines) if lines else None


class EventStream:
    """The events of one streamed response, read read-by-read with the request's deadlines.

    ``async for arrived, payloads in stream`` gives each network read's arrival time
    (:func:`clock`) and the event payloads it completed. Call :meth:`first_token` once the first
    generated token arrived: from then on only the total deadline applies. More than ``budget``
    bytes (decompressed) in all is ``overrun``.
    """

    def __init__(self, response: Any, deadlines: _Deadlines, budget: int | None = None):
        self.response = response
        self._deadlines = deadlines
        self._parser = SSEParser()
        self._eof = False
        self.budget = budget
        self.bytes_read = 0

    def first_token(self) -> None:
        self._deadlines.got_first = True

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> tuple[float, list[bytes]]:
        import aiohttp

        content = self.response.content
        while not self._eof:
            deadline = self._deadlines.current()
            try:
                if deadline is None:
                    data = await content.readany()
                else:
                    async with _timeout_at(deadline):
                        data = await content.readany()
            except asyncio.TimeoutError:
                raise self._deadlines.failure() from None
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError) as exc:
                raise RequestFailed("stream_cut", f"the stream broke off: {safe_text(_describe(exc), 300)}") from None
            arrived = clock()
            if not data:
                self._eof = True
                payloads = self._parser.flush()
            else:
                self.bytes_read += len(data)
                payloads = self._parser.feed(data)  # first: an event beyond its bound is malformed
                if self.budget is not None and self.bytes_read > self.budget:
                    raise RequestFailed("overrun", f"the stream went past {self.budget} bytes, more than the"
                                        " tokens asked for can take (llmcompare.limits.stream_byte_budget)")
            if payloads:
                return arrived, payloads
        raise StopAsyncIteration


class _Deadlines:
    """A request's first-token and total deadlines, on the event loop's clock."""

    __slots__ = ("first", "got_first", "total")

    def __init__(self, first_s: float, total_s: float):
        now = asyncio.get_running_loop().time()
        self.first = now + first_s if first_s > 0 else None
        self.total = now + total_s if total_s > 0 else None
        self.got_first = False

    def current(self) -> float | None:
        if self.got_first or self.first is None:
            return self.total
        return self.first if self.total is None else min(self.first, self.total)

    def failure(self) -> RequestFailed:
        if not self.got_first and self.first is not None and (self.total is None or self.first <= self.total):
            return RequestFailed("timeout_first_token", "no first token within the first-token timeout")
        return RequestFailed("timeout_total", "the request did not finish within the total timeout")


async def read_bounded(response: Any, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of ``response``'s body, decompressed, read through its stream in steps
    (so a compressed bomb costs what is read, not what it inflates to); and whether more was left."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        data = await response.content.read(min(_READ_STEP, limit - size))
        if not data:
            return b"".join(parts), False
        parts.append(data)
        size += len(data)
    more = not response.content.at_eof()
    if more:  # one more byte says whether the body really goes on
        more = bool(await response.content.read(1))
    return b"".join(parts), more


def _origin(url: Any) -> tuple[str, str, int | None]:
    return (url.scheme, (url.host or "").lower(), url.port)


# ---- the client --------------------------------------------------------------------------------

class HttpClient:
    """One aiohttp session on the event loop that uses it (opened lazily, closed by :meth:`aclose`),
    with the timeouts, bounds, redirect policy and failure mapping every HTTP backend shares.

    No connection limit (load tests hold thousands of streams); ``connect_timeout_s`` bounds each
    new connection; the API key is added per request from its :class:`Secret`, never kept in the
    session's default headers; the URL's userinfo becomes :class:`aiohttp.BasicAuth`.
    """

    def __init__(self, base_url: str, *, connect_timeout_s: float, first_token_timeout_s: float,
                 total_timeout_s: float, api_key: Secret | None = None, follow_redirects: bool = False,
                 secrets: Iterable[str] = ()):
        clean, user, password = split_credentials(str(base_url).rstrip("/"))
        self.base_url = clean.rstrip("/")
        self.shown_url = redact_url(str(base_url).rstrip("/"))
        """The URL as messages show it (credentials replaced by ``***``)."""
        self.connect_timeout_s = connect_timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.total_timeout_s = total_timeout_s
        self.follow_redirects = follow_redirects
        self._api_key = api_key
        self._auth: Any = None
        hidden = [s for s in secrets if s]
        if (user is not None or password is not None) and api_key is not None:
            raise UserError(f"the url {self.shown_url} carries credentials and api_key_env names a key: both would"
                            " be the Authorization header; pass one of them")
        if user is not None or password is not None:
            import aiohttp

            self._auth = Secret(aiohttp.BasicAuth(user or "", password or "", encoding="utf-8"))
            hidden += [password or "", f"{user or ''}:{password or ''}"]
        if api_key is not None:
            hidden.append(api_key.reveal())
        self._secrets = Secret(tuple(s for s in hidden if s))
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"HttpClient({self.shown_url!r})"

    @property
    def has_credentials(self) -> bool:
        return self._auth is not None or self._api_key is not None

    def redact(self, text: Any) -> str:
        """``text`` with this client's secrets (and any credential-looking value) replaced by ``***``."""
        return redact_text(text, self._secrets.reveal())

    def _headers(self, stream: bool = False) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"} if stream else {}
        if self._api_key is not None:
            headers["Authorization"] = "Bearer " + self._api_key.reveal()
        return headers

    def session(self) -> Any:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s or None)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    async def request(self, method: str, url: str, *, data: str | None = None, stream: bool = False) -> Any:
        """Send one request; answer its response, following redirects only as the policy allows (see
        the module docstring). A 3xx that is not followed is a ``redirect`` failure naming its target."""
        import yarl

        session = self.session()
        target = yarl.URL(url)
        base_origin = _origin(yarl.URL(self.base_url))
        for hop in range(limits.MAX_REDIRECTS + 1):
            same = _origin(target) == base_origin
            response = await session.request(method, target, data=data, headers=self._headers(stream) if same else
                                             {k: v for k, v in self._headers(stream).items() if k != "Authorization"},
                                             auth=self._auth.reveal() if same and self._auth else None,
                                             allow_redirects=False)
            if not 300 <= response.status < 400 or response.status == 304:
                return response
            status = response.status
            location = response.headers.get("Location", "")
            response.close()
            try:
                nxt = target.join(yarl.URL(location)) if location else None
            except ValueError:
                nxt = None
            shown = redact_url(str(nxt)) if nxt is not None else safe_text(location, 300) or "nowhere (no Location)"
            shown = self.redact(shown)
            failure = RequestFailed("redirect", f"HTTP {status} redirect to {shown}")
            failure.status = status  # type: ignore[attr-defined]
            failure.location = shown  # type: ignore[attr-defined]
            if nxt is None or not self.follow_redirects:
                raise failure
            if method != "GET" and status not in (307, 308):
                raise RequestFailed("redirect", f"HTTP {status} redirect to {shown}: only 307 and 308 keep a POST's"
                                    " method and body; point the url at the target")
            if self.has_credentials and _origin(nxt) != base_origin:
                raise RequestFailed("redirect", f"HTTP {status} redirect to {shown}, another host: not followed while"
                                    " credentials are sent (point the url at the target)")
            if hop == limits.MAX_REDIRECTS:
                raise RequestFailed("redirect", f"more than {limits.MAX_REDIRECTS} redirects (the last to {shown})")
            target = nxt
        raise AssertionError("unreachable")

    async def error_failure(self, response: Any) -> RequestFailed:
        """The failure for a non-200 ``response``, from at most :data:`MAX_ERROR_BODY_BYTES` of its body."""
        try:
            body, more = await read_bounded(response, limits.MAX_ERROR_BODY_BYTES)
        except Exception:
            body, more = b"", True
        if more or not response.content.at_eof():
            response.close()  # the rest is never read: drop the connection instead of draining it
        else:
            response.release()
        return status_failure(response.status, body.decode("utf-8", "replace"), self.redact)

    async def get_json(self, path: str) -> Any:
        """GET a JSON document (the server's model list, version, info) under the connect timeout,
        bounded as a whole by the first-token timeout (else the connect timeout, else
        :data:`~llmcompare.limits.GET_TIMEOUT_S`) and the total timeout, and in size by
        :data:`~llmcompare.limits.MAX_JSON_BODY_BYTES`."""
        url = self.url(path)
        limit_s = self.first_token_timeout_s or self.connect_timeout_s or limits.GET_TIMEOUT_S
        if self.total_timeout_s > 0:
            limit_s = min(limit_s, self.total_timeout_s)
        deadlines = _Deadlines(limit_s, 0)
        shown = self.redact(redact_url(url))
        try:
            async with _timeout_at(deadlines.current()):
                response = await self.request("GET", url)
                if response.status != 200:
                    raise await self.error_failure(response)
                try:
                    body, more = await read_bounded(response, limits.MAX_JSON_BODY_BYTES)
                finally:
                    response.close()
        except asyncio.TimeoutError as exc:
            raise _connect_timeout(exc, deadlines) from None
        except RequestFailed:
            raise
        except Exception as exc:
            raise _connect_failure(exc, self.redact) from None
        if more:
            raise RequestFailed("malformed", f"GET {shown} answered more than {limits.MAX_JSON_BODY_BYTES} bytes")
        return limits.parse_json(body, f"GET {shown} answered a body")

    def stream(self, path: str, body: Mapping[str, Any], max_tokens: int | None = None,
               probe: bool = False) -> _StreamContext:
        """``async with client.stream(path, body, n) as events:`` POSTs ``body`` and yields an
        :class:`EventStream` whose bytes are bounded by :func:`~llmcompare.limits.stream_byte_budget` of
        ``n``; a non-200 answer raises its :class:`RequestFailed` on entry. ``probe`` bounds the
        timeouts that are 0 (none), and the whole probe by its first-token limit plus
        :data:`~llmcompare.limits.PROBE_TAIL_S`."""
        return _StreamContext(self, self.url(path), body, max_tokens, probe)

    def deadlines(self, probe: bool) -> _Deadlines:
        first, total = self.first_token_timeout_s, self.total_timeout_s
        if probe:
            first = first if first > 0 else limits.PROBE_FIRST_TOKEN_S
            tail = first + limits.PROBE_TAIL_S
            total = min(total, tail) if total > 0 else tail
        return _Deadlines(first, total)


class _StreamContext:
    def __init__(self, client: HttpClient, url: str, body: Mapping[str, Any], max_tokens: int | None, probe: bool):
        self.client = client
        self.url = url
        self.body = body
        self.max_tokens = max_tokens
        self.probe = probe
        self.response: Any = None

    async def __aenter__(self) -> EventStream:
        client = self.client
        deadlines = client.deadlines(self.probe)
        data = json.dumps(self.body)
        try:
            async with _timeout_at(deadlines.current()):
                self.response = await client.request("POST", self.url, data=data, stream=True)
                if self.response.status != 200:
                    response, self.response = self.response, None
                    raise await client.error_failure(response)
        except asyncio.TimeoutError as exc:
            raise _connect_timeout(exc, deadlines) from None
        except RequestFailed:
            raise
        except Exception as exc:
            raise _connect_failure(exc, client.redact) from None
        ctype = safe_text(self.response.headers.get("Content-Type", ""), 100)
        if "event-stream" not in ctype:
            self.response.close()
            raise RequestFailed("malformed", f"expected an event stream, got Content-Type {ctype!r}")
        budget = limits.stream_byte_budget(self.max_tokens) if self.max_tokens is not None else None
        return EventStream(self.response, deadlines, budget)

    async def __aexit__(self, et: Any, exc: Any, tb: Any) -> None:
        if self.response is None:
            return
        if exc is None and self.response.content.is_eof():
            self.response.release()  # the connection goes back to the pool
        else:
            self.response.close()


def _connect_timeout(exc: BaseException, deadlines: _Deadlines) -> RequestFailed:
    import aiohttp

    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return RequestFailed("timeout_connect", f"no connection within the connect timeout ({_describe(exc)})")
    return deadlines.failure()


def _connect_failure(exc: BaseException, redact: Any = None) -> RequestFailed:
    """A failure before any response: refused, reset, or an answer that is not HTTP."""
    import aiohttp

    text = safe_text(_describe(exc), limits.MAX_ERROR_TEXT)
    if redact is not None:
        text = redact(text)
    if isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError, OSError)):
        return RequestFailed("connect", text)
    if isinstance(exc, aiohttp.ClientResponseError):
        return RequestFailed("malformed", f"not a valid HTTP answer: {text}")
    return RequestFailed("connect", text)


# ---- what every server client shares -------------------------------------------------------------

class PromptText:
    """Our prompt ids as text, through the tokenizer that made them, and text back to a count."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._wrap: tuple[str, str] | None = None
        template = getattr(tokenizer, "chat_template", None)
        if template:
            marker = "\x00LLMCOMPARE-PROMPT\x00"
            try:
                rendered = tokenizer.apply_chat_template([{"role": "user", "content": marker}],
                                                         add_generation_prompt=True, tokenize=False)
            except Exception:  # a template that cannot render a bare user turn: send text unwrapped
                rendered = ""
            if isinstance(rendered, str) and rendered.count(marker) == 1:
                head, tail = rendered.split(marker)
                self._wrap = (head, tail)

    def text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def chat_content(self, ids: Sequence[int]) -> str:
        """The user turn inside the chat template's wrapping, where the decoded text matches it."""
        text = self.text(ids)
        if self._wrap is not None:
            head, tail = self._wrap
            if text.startswith(head) and text.endswith(tail) and len(text) >= len(head) + len(tail):
                return text[len(head):len(text) - len(tail)]
        return text

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def load_prompt_text(config: BackendConfig) -> tuple[PromptText | None, str | None]:
    """The model's tokenizer as a :class:`PromptText`, or None and why it could not be loaded."""
    try:
        return PromptText(config.model.tokenizer(trust_remote_code=config.trust_remote_code)), None
    except Exception as exc:  # not every run can read a tokenizer; only text prompts and re-counting need one
        return None, _describe(exc)


METRICS_URL_OPTION = OptionSpec(str, None, "the server's Prometheus /metrics URL: the load scenario scrapes it during"
                                             " every level (running, waiting, KV cache, prefix cache, generated tokens)")


def timeout_options() -> dict[str, OptionSpec]:
    return {
        "connect_timeout_s": OptionSpec(float, 10.0, "seconds to open a connection (0 = no limit)"),
        "first_token_timeout_s": OptionSpec(float, 300.0, "seconds from the send to the first token (0 = no limit)"),
        "total_timeout_s": OptionSpec(float, 3600.0, "seconds for the whole request (0 = no limit)"),
        "api_key_env": OptionSpec(str, None, "NAME of the environment variable that holds the API key"),
        "follow_redirects": OptionSpec(bool, False, "follow 3xx answers (never to another host while sending"
                                                    " credentials); off: a redirect is a failure naming its target"),
    }


class ServerClient:
    """What the clients of a remote server share: how another process reaches the same server, and
    closing the HTTP client on the session's event loop."""

    name = ""
    url: str
    """The server's URL as messages show it: credentials replaced by ``***``."""
    config: BackendConfig
    http: HttpClient | None = None
    _text: PromptText | None = None
    _extra_json_option = "extra_body"

    def open_http(self) -> HttpClient:
        """The HTTP client for the ``url`` option, with the timeouts, the API key (by its variable's
        name), the URL's credentials and the redirect policy the options give."""
        opts = self.config.options
        return HttpClient(str(opts.get("url")), connect_timeout_s=float(opts.get("connect_timeout_s", 10.0)),
                          first_token_timeout_s=float(opts.get("first_token_timeout_s", 300.0)),
                          total_timeout_s=float(opts.get("total_timeout_s", 3600.0)),
                          api_key=read_api_key(opts.get("api_key_env")),
                          follow_redirects=bool(opts.get("follow_redirects", False)),
                          secrets=secret_values({k: opts.get(k) for k in ("url", self._extra_json_option)}))

    def redact(self, text: Any) -> str:
        """``text`` without this backend's secrets (the URL's, the API key, ``extra_body``'s)."""
        if self.http is not None:
            return self.http.redact(text)
        opts = self.config.options
        return redact_text(text, secret_values({k: opts.get(k) for k in ("url", self._extra_json_option)}))

    def metrics_urls(self) -> list[str]:
        """The server's Prometheus endpoint when ``-o metrics_url=URL`` gives one (the load scenario
        scrapes it during every level); none otherwise."""
        url = self.config.options.get("metrics_url")
        return [str(url)] if url else []

    def client_config(self) -> tuple[str, dict]:
        """How another client process reaches the same server: this backend, with the same options
        (the API key travels as the name of its environment variable, never as its value; a URL's
        credentials and ``extra_body`` travel as given, since the other process must send them)."""
        return self.name, dict(self.config.options)

    def unload(self) -> None:
        self.http = None
        self._text = None

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
