"""Any OpenAI-compatible server over HTTP (vLLM, SGLang, TGI's Messages API, llama.cpp's server,
llama-cpp-python's server, ``transformers serve``, Ollama), streamed over SSE with aiohttp.

What it sends
    ``POST {url}/completions`` (``mode=completions``, the default: a raw prompt, so no chat template
    changes its length) or ``{url}/chat/completions`` (``mode=chat``, for servers without the
    completions route: one user turn; the server applies its own template, so its prompt count will
    differ from ours, and is reported as it is). Every body is greedy and streamed, stated
    explicitly: ``temperature 0``, ``top_p 1``, zero presence/frequency penalties, ``max_tokens N``,
    ``stream``, ``stream_options.include_usage``; and the fields that force the length, turn caches
    off or return ids where a server knows them: ``ignore_eos``, ``min_tokens N`` (vLLM, SGLang,
    llama-cpp-python), ``n_predict N``, ``cache_prompt false``, ``repeat_penalty 1`` (llama.cpp),
    ``repetition_penalty 1`` (vLLM: overrides a model's ``generation_config``), ``return_token_ids``
    (vLLM: ``token_ids`` in every chunk), ``return_tokens`` (llama.cpp's native route; its
    ``/v1`` route does not put ids in chunks), ``add_special_tokens false`` with a text prompt (vLLM).
    ``extra_body`` (a JSON object) is merged last.

The probe in ``load()``
    Servers differ in what they accept: vLLM ignores unknown fields (and logs them), ``transformers
    serve`` answers 422 "Unexpected fields in the request: {...}" and 400 to a list prompt,
    llama-cpp-python answers a list prompt with a 500 that says "validation error". So one tiny
    request (4 tokens) is sent with every optional field; a refused body (400, 422, or that 500)
    drops the fields the answer names as unknown, or switches ``prompt_format=auto`` to text when
    it names the prompt, or else drops the optional fields one at a time, and tries again. What was
    learnt holds for the backend's life and is recorded by ``engine_version()``: the server
    (``owned_by`` of ``/models``) and its version (``/version``, where served), the prompt format,
    the fields sent and refused, the probe's ``finish_reason``, and the count source.

The prompt
    The adapter receives our prompt token ids (``accepts_token_ids``). ``prompt_format=ids`` sends them
    as a list; ``text`` sends the text they decode to with the model's own tokenizer
    (``config.model.tokenizer()``, loaded in ``load()``: the tokenizer that made the ids, so the text is
    the same templated prompt); ``auto`` (default) sends ids unless the probe found the server
    refusing them. Chat mode sends ``messages`` (recorded as the prompt format): the decoded text
    with the chat template's own wrapping cut off where it matches, so the server does not wrap the
    prompt twice. Whatever is sent, the server's prompt count (``usage.prompt_tokens``) is reported
    as ``prompt_tokens`` and checked against ours by the core.

Counting and timing
    Each network read is timestamped with :func:`~llmcompare.backend.clock` when it arrives, and all
    the tokens it carried share that time (one :class:`Chunk` per read). Counts, in order of trust:
    the ids in the chunks (``choices[0].token_ids``, vLLM; ``tokens``, llama.cpp) → exact; else the
    server's ``usage.completion_tokens`` → ``count_source="usage"`` (each text event counts one token
    as it arrives; tokens the server counted beyond that arrive with the final chunk, which keeps
    TTFT, e2e and TPOT right); else the text re-tokenized with our tokenizer →
    ``"retokenized"``, approximate and flagged. The server's counts go to ``engine_output_tokens``
    and ``prompt_tokens``; its ``finish_reason`` is reported as sent.

Failures (:class:`~llmcompare.errors.RequestFailed` kinds)
    connection refused or reset before a response → ``connect``; no connection within
    ``connect_timeout_s`` → ``timeout_connect``; no first token within ``first_token_timeout_s`` of the
    send → ``timeout_first_token``; not finished within ``total_timeout_s`` → ``timeout_total``;
    HTTP 429 or 503, or an error body or event saying "overloaded" → ``overload``; other 5xx →
    ``server_error``; other 4xx → ``client_error``; the stream ends (or drops) before ``[DONE]`` or a
    ``finish_reason`` → ``stream_cut``; an event that is not JSON of the expected shape → ``malformed``.
    A timeout of 0 means none.

Secrets
    ``api_key_env`` is the *name* of an environment variable; its value is read in ``load()``, held
    in a :class:`Secret` whose repr is ``<secret>``, and only ever sent as an ``Authorization``
    header: never in options, records, logs, ``engine_version()`` or an error message.

Devices and caches
    The server holds the model and chooses its device; ``--device`` only labels the run, so the spec
    lists ``cpu`` and ``cuda``. Prefix caching is the server's setting (start vLLM with
    ``--no-enable-prefix-caching``, TGI with ``PREFIX_CACHING=0``); per request only llama.cpp's
    ``cache_prompt`` can be turned off, and is.

The HTTP plumbing (:class:`HttpClient`, :class:`SSEParser`, the status and error mapping) is shared
with the TGI backend (``llmcompare/backends/tgi.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Any

from llmcompare import hookimpl
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, Chunk, OptionSpec, clock
from llmcompare.errors import OptionError, RequestFailed, UserError

try:  # Python 3.11+
    from asyncio import timeout_at as _timeout_at
except ImportError:  # Python 3.10: aiohttp depends on async-timeout there
    from async_timeout import timeout_at as _timeout_at  # type: ignore[no-redef]

PROBE_TOKENS = 4
MAX_ERROR_BODY = 2000


# ---------------------------------------------------------------------------------------------
# Shared HTTP plumbing (also used by backends/tgi.py)
# ---------------------------------------------------------------------------------------------

class Secret:
    """A value that never shows itself in a repr, str or format (an API key)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
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
    """Parse a JSON-object option (``extra_body``) without I/O; raise :class:`OptionError` if it is not one."""
    if raw in (None, ""):
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise OptionError(f"option {key} for backend {backend!r} is not valid JSON: {exc}") from None
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


def status_failure(status: int, body: str) -> RequestFailed:
    """Map a non-200 answer to a failure kind (the status is kept as ``.status``). 424 is TGI's
    "the model shard failed": a server error."""
    text = body.strip()[:MAX_ERROR_BODY]
    message = f"HTTP {status}: {text}" if text else f"HTTP {status}"
    if status in (429, 503) or "overload" in text.lower():
        failure = RequestFailed("overload", message)
    elif status >= 500 or status == 424:
        failure = RequestFailed("server_error", message)
    elif 400 <= status < 500:
        failure = RequestFailed("client_error", message)
    else:
        failure = RequestFailed("malformed", f"unexpected answer {message}")
    failure.status = status  # type: ignore[attr-defined]
    return failure


def error_event_failure(obj: Mapping[str, Any]) -> RequestFailed:
    """Map a mid-stream ``{"error": ...}`` event (OpenAI servers: an object; TGI: a string plus
    ``error_type``) to a failure kind."""
    err = obj.get("error")
    code = err.get("code") if isinstance(err, dict) else None
    text = json.dumps(obj)[:MAX_ERROR_BODY]
    if "overload" in text.lower() or code in (429, 503, "429", "503"):
        return RequestFailed("overload", f"error event: {text}")
    if isinstance(code, int) and 400 <= code < 500:
        return RequestFailed("client_error", f"error event: {text}")
    return RequestFailed("server_error", f"error event: {text}")


class SSEParser:
    """Splits a server-sent-events byte stream into the data payloads of its events.

    Feed it bytes as they arrive; it returns the payloads of the events completed so far (several
    ``data:`` lines of one event are joined with newlines; comments, ``event:``, ``id:`` and
    ``retry:`` lines are dropped). Both ``data: x`` and ``data:x`` are read (TGI writes the latter),
    and ``\\r\\n`` line ends are accepted.
    """

    MAX_PENDING = 8 * 1024 * 1024

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        keep = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # maybe the first half of a \r\n split across two reads
                buf, keep = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop() + keep
        if len(self._buf) > self.MAX_PENDING:
            raise RequestFailed("malformed", f"an event longer than {self.MAX_PENDING} bytes")
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
    generated token arrived: from then on only the total deadline applies.
    """

    def __init__(self, response: Any, deadlines: _Deadlines):
        self.response = response
        self._deadlines = deadlines
        self._parser = SSEParser()
        self._eof = False

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
                raise RequestFailed("stream_cut", f"the stream broke off: {_describe(exc)}") from None
            arrived = clock()
            if not data:
                self._eof = True
                payloads = self._parser.flush()
            else:
                payloads = self._parser.feed(data)
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


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class HttpClient:
    """One aiohttp session on the event loop that uses it (opened lazily, closed by :meth:`aclose`),
    with the timeouts and the failure mapping every HTTP backend shares.

    No connection limit (load tests hold thousands of streams); ``connect_timeout_s`` bounds each
    new connection; the API key is added per request from its :class:`Secret`, never kept in the
    session's default headers.
    """

    def __init__(self, base_url: str, *, connect_timeout_s: float, first_token_timeout_s: float,
                 total_timeout_s: float, api_key: Secret | None = None):
        self.base_url = base_url.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.total_timeout_s = total_timeout_s
        self._api_key = api_key
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url!r})"

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

    async def get_json(self, path: str) -> Any:
        """GET a JSON document (the server's model list, version, info) under the connect timeout,
        bounded by the first-token timeout as a whole."""
        url = path if path.startswith("http") else self.base_url + path
        deadlines = _Deadlines(self.first_token_timeout_s or self.connect_timeout_s, 0)
        try:
            async with _timeout_at(deadlines.current()):
                async with self.session().get(url, headers=self._headers()) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        raise status_failure(resp.status, text)
        except asyncio.TimeoutError as exc:
            raise _connect_timeout(exc, deadlines) from None
        except RequestFailed:
            raise
        except Exception as exc:
            raise _connect_failure(exc) from None
        try:
            return json.loads(text)
        except ValueError:
            raise RequestFailed("malformed", f"GET {url} did not answer JSON: {text[:200]!r}") from None

    def stream(self, path: str, body: Mapping[str, Any]) -> _StreamContext:
        """``async with client.stream(path, body) as events:`` POSTs ``body`` and yields an
        :class:`EventStream`; a non-200 answer raises its :class:`RequestFailed` on entry."""
        return _StreamContext(self, self.base_url + path, body)


class _StreamContext:
    def __init__(self, client: HttpClient, url: str, body: Mapping[str, Any]):
        self.client = client
        self.url = url
        self.body = body
        self.response: Any = None

    async def __aenter__(self) -> EventStream:
        client = self.client
        deadlines = _Deadlines(client.first_token_timeout_s, client.total_timeout_s)
        data = json.dumps(self.body)
        try:
            async with _timeout_at(deadlines.current()):
                self.response = await client.session().post(self.url, data=data, headers=client._headers(stream=True))
                if self.response.status != 200:
                    text = await self.response.text(errors="replace")
                    self.response.release()
                    raise status_failure(self.response.status, text)
        except asyncio.TimeoutError as exc:
            raise _connect_timeout(exc, deadlines) from None
        except RequestFailed:
            raise
        except Exception as exc:
            raise _connect_failure(exc) from None
        ctype = self.response.headers.get("Content-Type", "")
        if "event-stream" not in ctype:
            self.response.close()
            raise RequestFailed("malformed", f"expected an event stream, got Content-Type {ctype!r}")
        return EventStream(self.response, deadlines)

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


def _connect_failure(exc: BaseException) -> RequestFailed:
    """A failure before any response: refused, reset, or an answer that is not HTTP."""
    import aiohttp

    if isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError, OSError)):
        return RequestFailed("connect", _describe(exc))
    if isinstance(exc, aiohttp.ClientResponseError):
        return RequestFailed("malformed", f"not a valid HTTP answer: {_describe(exc)}")
    return RequestFailed("connect", _describe(exc))


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


def timeout_options() -> dict[str, OptionSpec]:
    return {
        "connect_timeout_s": OptionSpec(float, 10.0, "seconds to open a connection (0 = no limit)"),
        "first_token_timeout_s": OptionSpec(float, 300.0, "seconds from the send to the first token (0 = no limit)"),
        "total_timeout_s": OptionSpec(float, 3600.0, "seconds for the whole request (0 = no limit)"),
        "api_key_env": OptionSpec(str, None, "NAME of the environment variable that holds the API key"),
    }


# ---------------------------------------------------------------------------------------------
# The OpenAI-compatible backend
# ---------------------------------------------------------------------------------------------

#: Optional body fields, in the order a refusal that names no field drops them (least needed first).
OPTIONAL_FIELDS = ("return_tokens", "n_predict", "repeat_penalty", "repetition_penalty", "add_special_tokens",
                   "return_token_ids", "cache_prompt", "min_tokens", "ignore_eos")
_REFUSAL = r"(?:unknown|unrecognized|unexpected|extra|unsupported|not permitted)"
_NAMED_REFUSAL = re.compile(_REFUSAL + r"[^`'\"\n{\[]{0,40}[`'\"]([A-Za-z_][A-Za-z0-9_]*)[`'\"]", re.IGNORECASE)
_LISTED_REFUSAL = re.compile(_REFUSAL + r"[^`'\"\n{\[]{0,40}[{\[]([^}\]\n]*)[}\]]", re.IGNORECASE)


def next_fix(message: str, fields: Sequence[str], prompt_as: str, prompt_format: str
             ) -> tuple[str, tuple[str, ...]] | None:
    """After a refused probe: ``("drop", fields)``, ``("text", ())`` or None (nothing left to try).

    Fields the message names as unknown go first: a set after the word (``transformers serve``:
    "Unexpected fields in the request: {'ignore_eos', ...}"), else the one quoted name after it
    (serde: "unknown field `ignore_eos`, expected one of ..."); then a refused list prompt (``auto``
    only); then any of our fields the message mentions; then, blind, our optional fields one by one."""
    def mentioned(text: str) -> tuple[str, ...]:
        return tuple(f for f in fields if re.search(rf"\b{f}\b", text))

    for listed in _LISTED_REFUSAL.findall(message):
        if mentioned(listed):
            return ("drop", mentioned(listed))
    named = tuple(f for f in _NAMED_REFUSAL.findall(message) if f in fields)
    if named:
        return ("drop", named)
    can_switch = prompt_as == "ids" and prompt_format == "auto"
    if can_switch and "prompt" in message.lower():
        return ("text", ())
    if mentioned(message):
        return ("drop", mentioned(message))
    if fields:
        return ("drop", (fields[0],))
    if can_switch:
        return ("text", ())
    return None


def refused_body(status: int | None, message: str) -> bool:
    """Whether an error answer refuses the request body (so a changed body may pass): 400 and 422,
    and llama-cpp-python's 500 that wraps a pydantic "validation error"."""
    return status in (400, 422) or (status == 500 and "validation error" in message.lower())


class ServerClient:
    """What the clients of a remote server share: how another process reaches the same server, and
    closing the HTTP client on the session's event loop."""

    name = ""
    url: str
    config: BackendConfig
    http: HttpClient | None = None
    _text: PromptText | None = None

    def open_http(self) -> HttpClient:
        """The HTTP client for ``self.url``, with the timeouts and the API key (by its variable's name)
        the options give."""
        opts = self.config.options
        return HttpClient(self.url, connect_timeout_s=float(opts.get("connect_timeout_s", 10.0)),
                          first_token_timeout_s=float(opts.get("first_token_timeout_s", 300.0)),
                          total_timeout_s=float(opts.get("total_timeout_s", 3600.0)),
                          api_key=read_api_key(opts.get("api_key_env")))

    def client_config(self) -> tuple[str, dict]:
        """How another client process reaches the same server: this backend, with the same options
        (the API key travels as the name of its environment variable, never as its value)."""
        return self.name, dict(self.config.options)

    def unload(self) -> None:
        self.http = None
        self._text = None

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()


class OpenAIBackend(ServerClient):
    """See the module docstring: the contract, the probe, counting, timing and failures."""

    name = "openai"

    def __init__(self, config: BackendConfig):
        self.config = config
        opts = config.options
        url = opts.get("url")
        if not url:
            raise OptionError("backend 'openai' needs --option url=http://HOST:PORT/v1 (the base URL, ending in /v1)")
        self.url = str(url).rstrip("/")
        self.mode = opts.get("mode", "completions")
        self.prompt_format = opts.get("prompt_format", "auto")
        self.extra_body = parse_json_object("openai", "extra_body", opts.get("extra_body"))
        self.model: str | None = opts.get("model")
        self.http: HttpClient | None = None
        self.prompt_as = "messages" if self.mode == "chat" else "text" if self.prompt_format == "text" else "ids"
        self.fields: tuple[str, ...] = ()
        self.refused: list[str] = []
        self.count_source = "ids"
        self.usage_seen = False
        self.server = "unknown"
        self.server_version: str | None = None
        self.probe_finish: str | None = None
        self._text: PromptText | None = None
        self._text_error: str | None = None

    def __repr__(self) -> str:
        return f"OpenAIBackend(url={self.url!r}, model={self.model!r}, mode={self.mode!r})"

    # ---- life ----
    def load(self) -> None:
        self.http = self.open_http()
        self._text, self._text_error = load_prompt_text(self.config)
        run_sync(closing_after(self._probe(), self.http))
        if self.prompt_as != "ids":
            self._need_text(f"send {self.prompt_as}")
        if self.count_source == "retokenized":
            self._need_text("count tokens from the text the server sends")

    def count_tokens(self, text: str) -> int:
        return self._need_text("count tokens").count(text)

    def engine_version(self) -> dict[str, str]:
        out = {"server": self.server, "api": f"openai/{self.mode}", "prompt_format": self.prompt_as,
               "count_source": self.count_source, "fields": ",".join(self.fields) or "none"}
        if self.server_version:
            out["server_version"] = self.server_version
        if self.refused:
            out["fields_refused"] = ",".join(self.refused)
        if self.probe_finish:
            out["probe_finish_reason"] = self.probe_finish
        try:
            import aiohttp

            out["aiohttp"] = aiohttp.__version__
        except ImportError:
            pass
        return out

    # ---- the probe ----
    async def _probe(self) -> None:
        assert self.http is not None
        try:
            models = await self.http.get_json("/models")
        except RequestFailed as exc:
            if self.model is None:
                raise UserError(f"cannot list the models at {self.url}/models ({exc.kind}: {exc});"
                                " is the server up, and does the url end in /v1?") from None
            models = {}
        data = [m for m in (models.get("data") or []) if isinstance(m, dict)] if isinstance(models, dict) else []
        if self.model is None:
            if not data:
                raise UserError(f"{self.url}/models lists no model; pass --option model=NAME")
            self.model = str(data[0].get("id"))
        owner = next((m.get("owned_by") for m in data if m.get("id") == self.model), None)
        self.server = str(owner or (data[0].get("owned_by") if data else None) or "unknown")
        root = self.url.removesuffix("/v1")
        try:
            version = await self.http.get_json(root + "/version")
            if isinstance(version, dict) and version.get("version"):
                self.server_version = str(version["version"])
        except RequestFailed:
            pass  # not every server has /version

        candidates = list(OPTIONAL_FIELDS)
        ids = self._probe_ids()
        for _ in range(len(OPTIONAL_FIELDS) + 3):
            self.fields = tuple(f for f in candidates if self._sends(f))
            try:
                gen = [c async for c in self._stream(ids, PROBE_TOKENS, probe=True)]
                break
            except RequestFailed as exc:
                status = getattr(exc, "status", None)
                if status in (404, 405):
                    raise UserError(f"the server at {self.url} has no {self._path()} route ({exc});"
                                    + (" try --option mode=chat" if self.mode == "completions" else "")) from None
                if not refused_body(status, str(exc)):  # only a refused body can be fixed by changing it
                    raise UserError(f"the server at {self.url} failed the probe request: {exc.kind}: {exc}") from None
                fix = next_fix(str(exc), self.fields, self.prompt_as, self.prompt_format)
                if fix is None:
                    raise UserError(f"the server at {self.url} refused the probe request: {exc}") from None
                if fix[0] == "drop":
                    for name in fix[1]:
                        candidates.remove(name)
                        self.refused.append(name)
                else:
                    self.prompt_as = "text"
        else:
            raise UserError(f"the server at {self.url} kept refusing the probe request")
        self.probe_finish = next((c.finish_reason for c in gen if c.finish_reason), None)
        if any(c.token_ids for c in gen):
            self.count_source = "ids"
        elif self.usage_seen:
            self.count_source = "usage"
        elif any(c.count_source == "logprobs" for c in gen):
            self.count_source = "logprobs"
        elif self.probe_finish == "length":
            self.count_source = "length"
        else:
            self.count_source = "retokenized"

    def _path(self) -> str:
        return "/chat/completions" if self.mode == "chat" else "/completions"

    def _sends(self, field: str) -> bool:
        """``add_special_tokens`` only goes with a text prompt on the completions route."""
        return field != "add_special_tokens" or (self.prompt_as == "text" and self.mode == "completions")

    def _probe_ids(self) -> list[int]:
        if self._text is not None:
            try:
                ids = self._text.tokenizer("Hello", add_special_tokens=False)["input_ids"]
                if ids:
                    return [int(i) for i in ids]
            except Exception:
                pass
        return [1, 2, 3]

    def _need_text(self, why: str) -> PromptText:
        if self._text is None:
            raise UserError(f"backend 'openai' needs the model's tokenizer to {why}, and it could not be loaded:"
                            f" {self._text_error}")
        return self._text

    # ---- requests ----
    def _body(self, prompt: Sequence[int], n: int, stop_at_eos: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model}
        if self.mode == "chat":
            content = self._need_text("send chat messages").chat_content(prompt)
            body["messages"] = [{"role": "user", "content": content}]
        elif self.prompt_as == "text":
            body["prompt"] = self._need_text("send text prompts").text(prompt)
        else:
            body["prompt"] = [int(t) for t in prompt]
        body.update(max_tokens=n, temperature=0.0, top_p=1.0, presence_penalty=0.0, frequency_penalty=0.0,
                    stream=True, stream_options={"include_usage": True})
        values = {"ignore_eos": True, "min_tokens": n, "n_predict": n, "cache_prompt": False, "repeat_penalty": 1.0,
                  "repetition_penalty": 1.0, "return_token_ids": True, "return_tokens": True,
                  "add_special_tokens": False}
        for name in self.fields:
            if stop_at_eos and name in ("ignore_eos", "min_tokens"):
                continue  # the fidelity pass: the server stops at EOS by itself
            body[name] = values[name]
        body.update(self.extra_body)
        return body

    async def astream(self, prompt: Sequence[int] | str, max_new_tokens: int, *,
                      stop_at_eos: bool = False) -> AsyncIterator[Chunk]:
        if self.http is None:
            raise RuntimeError("the openai backend is not loaded")
        if isinstance(prompt, str):
            raise TypeError("the openai backend takes prompt token ids (it declares accepts_token_ids)")
        async for chunk in self._stream(prompt, max_new_tokens, stop_at_eos=stop_at_eos):
            yield chunk

    async def _stream(self, prompt: Sequence[int], n: int, probe: bool = False,
                      stop_at_eos: bool = False) -> AsyncIterator[Chunk]:
        """One request: a :class:`Chunk` per network read that carried tokens, then a closing chunk."""
        assert self.http is not None
        tally = _Tally(chat=self.mode == "chat")
        retokenize = self.count_source == "retokenized" and not probe and self._text is not None
        arrived, ids, n_tokens = clock(), [], None
        async with self.http.stream(self._path(), self._body(prompt, n, stop_at_eos)) as events:
            async for arrived, payloads in events:
                ids, n_text = tally.take(payloads)
                n_tokens = None
                if n_text:  # text without ids: one token per event, or the re-tokenized growth of the text
                    grown = self._text.count("".join(tally.texts)) - tally.counted if retokenize else n_text
                    n_tokens = len(ids) + max(0, grown)
                count = len(ids) if n_tokens is None else n_tokens
                if count:
                    events.first_token()
                    tally.counted += count
                if tally.done:
                    break
                if count:
                    yield Chunk(ids, arrived, n_tokens=n_tokens)
            else:
                if tally.finish is None:
                    raise RequestFailed("stream_cut", "the stream ended before [DONE] or a finish_reason")
                ids, n_tokens = [], 0  # the last read's tokens were yielded already
        if tally.usage is not None:
            self.usage_seen = True
        yield self._closing(ids, arrived, n_tokens, tally, probe, n)

    def _closing(self, ids: list[int], arrived: float, n_tokens: int | None, tally: _Tally, probe: bool,
                 asked: int) -> Chunk:
        """The last chunk: the last read's tokens, the server's counts, and where the count comes from.

        Without ids, the total is the server's ``usage.completion_tokens`` (else the re-tokenized
        text); tokens it counts beyond those already given arrive with this chunk."""
        usage = tally.usage or {}
        prompt_tokens = _int_or_none(usage.get("prompt_tokens"))
        completion = _int_or_none(usage.get("completion_tokens"))
        source = None
        if not tally.saw_ids and tally.texts:
            if completion is not None:
                source, total = "usage", completion
            elif tally.logprob_tokens == tally.counted and tally.counted:
                source, total = "logprobs", tally.counted  # every text event said how many tokens it held
            elif tally.finish == "length" and not probe:
                # the server says it stopped because it reached max_tokens: exactly the tokens asked for
                source, total = "length", asked
            elif self._text is not None:
                source, total = "retokenized", self._text.count("".join(tally.texts))
            elif probe:  # load() decides what to do without a tokenizer
                total = tally.counted
            else:
                raise RequestFailed("malformed", "the stream carried neither token ids nor usage, and no tokenizer"
                                                 " is loaded to count its text")
            if total > tally.counted:
                n_tokens = (len(ids) if n_tokens is None else n_tokens) + total - tally.counted
        return Chunk(ids, arrived, n_tokens=n_tokens, finish_reason=tally.finish, prompt_tokens=prompt_tokens,
                     engine_output_tokens=completion, count_source=source)


class _Tally:
    """What one streamed completion has said so far: ids seen, texts without ids, usage, finish."""

    __slots__ = ("chat", "counted", "done", "finish", "logprob_tokens", "saw_ids", "texts", "usage")

    def __init__(self, chat: bool):
        self.chat = chat
        self.counted = 0
        self.done = False
        self.finish: str | None = None
        self.saw_ids = False
        self.logprob_tokens = 0
        """Tokens counted from the events' log-probabilities (one entry per token), where they came."""
        self.texts: list[str] = []
        self.usage: dict[str, Any] | None = None

    def take(self, payloads: list[bytes]) -> tuple[list[int], int]:
        """Read one network read's events: the token ids they carried, and how many carried text only."""
        ids: list[int] = []
        n_text = 0
        for payload in payloads:
            if payload == b"[DONE]":
                self.done = True
                continue
            obj = _loads(payload)
            if "error" in obj and not obj.get("choices"):
                raise error_event_failure(obj)
            if obj.get("usage"):
                self.usage = obj["usage"]
            choices = obj.get("choices")
            if not choices:
                continue
            choice = choices[0]
            if not isinstance(choice, dict):
                raise RequestFailed("malformed", f"a choice that is not an object: {payload[:200]!r}")
            delta = (choice.get("delta") or {}) if self.chat else {}
            got = choice.get("token_ids")
            if got is None:  # vLLM puts ids on the choice; llama.cpp's native answers call them tokens
                got = choice.get("tokens") or obj.get("tokens") or delta.get("token_ids")
            if got:
                if type(got) is not list or any(type(t) is not int for t in got):
                    raise RequestFailed("malformed", f"token ids that are not a list of ints: {str(got)[:200]}")
                ids.extend(got)
                self.saw_ids = True
            else:
                text = delta.get("content") if self.chat else choice.get("text")
                held = _logprob_count(choice.get("logprobs"), self.chat)
                if held:  # the server's own tokens, one log-probability each: an exact count without ids
                    n_text += held
                    self.logprob_tokens += held
                    self.texts.append(text or "")
                elif text:
                    n_text += 1
                    self.texts.append(text)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return ids, n_text


def _logprob_count(logprobs: Any, chat: bool) -> int:
    """How many tokens an event's ``logprobs`` lists (completions: ``tokens``; chat: ``content``)."""
    if not isinstance(logprobs, dict):
        return 0
    entries = logprobs.get("content") if chat else logprobs.get("tokens")
    return len(entries) if isinstance(entries, list) else 0


def _loads(payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except ValueError:
        raise RequestFailed("malformed", f"an event that is not JSON: {payload[:200]!r}") from None
    if not isinstance(obj, dict):
        raise RequestFailed("malformed", f"an event that is not a JSON object: {payload[:200]!r}")
    return obj


def _int_or_none(value: Any) -> int | None:
    return value if type(value) is int else None


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    options = {
        "url": OptionSpec(str, None, "base URL of the server's OpenAI API, ending in /v1 (required)"),
        "model": OptionSpec(str, None, "model name to ask for (default: the first id of GET {url}/models)"),
        "mode": OptionSpec(str, "completions", "completions (raw prompt) or chat (one user turn)",
                           choices=("completions", "chat")),
        "prompt_format": OptionSpec(str, "auto", "ids, text, or auto (ids unless the server refuses them)",
                                    choices=("auto", "ids", "text")),
        "extra_body": OptionSpec(str, None, "JSON object merged into every request body"),
        **timeout_options(),
    }
    register(
        BackendSpec(
            name="openai",
            target="llmcompare.backends.openai_http:OpenAIBackend",
            install="pip install llmcompare",
            requires=("aiohttp",),
            options=options,
            capabilities=Capabilities(accepts_token_ids=True, concurrent=True, devices=("cpu", "cuda"),
                                      in_process=False, model_formats=("gguf", "hf", "synthetic"),
                                      prefix_cache="server", natural_stop=True),
            description="Any OpenAI-compatible server (vLLM, SGLang, llama.cpp, TGI, Ollama...) over HTTP, streamed.",
            distributions=("aiohttp",),
        )
    )
