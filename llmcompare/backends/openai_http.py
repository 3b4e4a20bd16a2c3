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
    and ``prompt_tokens``; its ``finish_reason`` is reported as sent (valid UTF-8, bounded). Every
    count seen (ids, usage, log-probabilities, text events) is cross-checked into the closing
    chunk's ``count_check``; a count claimed beyond the tokens asked for plus a small slack is never
    spread over timestamps (``overrun``), so a server's number never sizes a list.

Failures (:class:`~llmcompare.errors.RequestFailed` kinds)
    connection refused or reset before a response → ``connect``; no connection within
    ``connect_timeout_s`` → ``timeout_connect``; no first token within ``first_token_timeout_s`` of the
    send → ``timeout_first_token``; not finished within ``total_timeout_s`` → ``timeout_total``;
    HTTP 429 or 503, or an error body or event saying "overloaded" → ``overload``; other 5xx →
    ``server_error``; other 4xx → ``client_error``; a 3xx (not followed unless
    ``follow_redirects=true``) → ``redirect``, naming its target; the stream ends (or drops) before
    ``[DONE]`` or a ``finish_reason`` → ``stream_cut``; an event that is not JSON of the expected
    shape, or a number that is not a count → ``malformed``; more tokens than the forced length and
    its slack, or more bytes than they can take → ``overrun`` (the stream is cut). A timeout of 0
    means none, except in the probe, which always ends (``llmcompare.limits``).

Servers are not trusted
    Everything a server sends is bounded and checked (``llmcompare/backends/http_transport.py`` for bodies,
    events and redirects, ``llmcompare/backends/openai_stream.py`` for the chunks and the count cross-check;
    the bounds are :mod:`llmcompare.limits`). Counts from ids, ``usage`` and the stream are
    cross-checked into the record's ``count_check``; strings from the server (``owned_by``, the
    version, errors, ``finish_reason``) are made valid UTF-8 and bounded before they are kept.

Secrets
    ``api_key_env`` is the *name* of an environment variable; its value is read in ``load()``, held
    in a :class:`Secret` whose repr is ``<secret>``, and only ever sent as an ``Authorization``
    header: never in options, records, logs, ``engine_version()`` or an error message. A URL's
    credentials (``http://user:KEY@host/v1``) are sent as HTTP Basic auth and shown as ``***``
    (``self.url`` is the redacted URL); the secret-looking values of ``extra_body`` are sent as
    given and redacted from every message (:mod:`llmcompare.redact`).

Devices and caches
    The server holds the model and chooses its device; ``--device`` only labels the run, so the spec
    lists ``cpu`` and ``cuda``. Prefix caching is the server's setting (start vLLM with
    ``--no-enable-prefix-caching``, TGI with ``PREFIX_CACHING=0``); per request only llama.cpp's
    ``cache_prompt`` can be turned off, and is.

The HTTP plumbing (:class:`HttpClient`, :class:`SSEParser`, the status and error mapping, bounded
reads) lives in ``llmcompare/backends/http_transport.py``, shared with the TGI backend (``llmcompare/backends/tgi.py``); the
chunk handling and counting in ``llmcompare/backends/openai_stream.py``. Their names stay importable from here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from llmcompare import hookimpl, limits
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, Chunk, OptionSpec, clock
from llmcompare.backends.http_transport import (  # noqa: F401  (the shared plumbing, importable from here as before)
    MAX_ERROR_BODY,
    METRICS_URL_OPTION,
    CheckedChunk,
    EventStream,
    HttpClient,
    PromptText,
    Secret,
    ServerClient,
    SSEParser,
    closing_after,
    error_event_failure,
    load_prompt_text,
    parse_json_object,
    read_api_key,
    redacted,
    run_sync,
    status_failure,
    timeout_options,
)
from llmcompare.backends.openai_stream import Tally
from llmcompare.errors import OptionError, RequestFailed, UserError
from llmcompare.limits import safe_text
from llmcompare.redact import redact_url

PROBE_TOKENS = 4

_Tally = Tally  # the name this module used before the split


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


class OpenAIBackend(ServerClient):
    """See the module docstring: the contract, the probe, counting, timing and failures."""

    name = "openai"

    def __init__(self, config: BackendConfig):
        self.config = config
        opts = config.options
        url = opts.get("url")
        if not url:
            raise OptionError("backend 'openai' needs --option url=http://HOST:PORT/v1 (the base URL, ending in /v1)")
        self.url = redact_url(str(url).rstrip("/"))
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
        model = None if self.model is None else safe_text(self.model, limits.MAX_SERVER_TEXT)
        return f"OpenAIBackend(url={self.url!r}, model={model!r}, mode={self.mode!r})"

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
        return {k: self.redact(v) for k, v in out.items()}

    # ---- the probe ----
    def _probe_error(self, what: str, exc: RequestFailed) -> UserError:
        """The one-line error for a probe request that failed; a redirect says what to do about it."""
        if exc.kind == "redirect":
            if self.http is not None and self.http.follow_redirects:
                return UserError(f"the server at {self.url} answered {what} with a redirect that was not followed"
                                 f" ({exc})")
            return UserError(f"the server at {self.url} answered {what} with a redirect ({exc}): point -o url at the"
                             " target, or pass -o follow_redirects=true")
        return UserError(f"the server at {self.url} failed the probe request: {exc.kind}: {exc}")

    async def _probe(self) -> None:
        assert self.http is not None
        try:
            models = await self.http.get_json("/models")
        except RequestFailed as exc:
            if exc.kind == "redirect":
                raise self._probe_error("GET /models", exc) from None
            if self.model is None:
                raise UserError(f"cannot list the models at {self.url}/models ({exc.kind}: {self.redact(exc)});"
                                " is the server up, and does the url end in /v1?") from None
            models = {}
        listed = models.get("data") if isinstance(models, dict) else None
        data = [m for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
        if self.model is None:
            first = data[0].get("id") if data else None
            if not isinstance(first, str) or not first:
                raise UserError(f"{self.url}/models lists no model (by a string id); pass --option model=NAME")
            self.model = first
        owner = next((m.get("owned_by") for m in data if m.get("id") == self.model), None)
        owner = owner or (data[0].get("owned_by") if data else None) or "unknown"
        self.server = self.redact(safe_text(owner, limits.MAX_SERVER_TEXT))
        root = self.http.base_url.removesuffix("/v1")
        try:
            version = await self.http.get_json(root + "/version")
            if isinstance(version, dict) and version.get("version"):
                self.server_version = self.redact(safe_text(version["version"], limits.MAX_SERVER_TEXT))
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
                    raise self._probe_error(f"POST {self._path()}", exc) from None
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
        """One request: a :class:`Chunk` per network read that carried tokens, then a closing chunk.
        Every failure's message is redacted on its way out (a server may echo what it was sent)."""
        try:
            async for chunk in self._read(prompt, n, probe, stop_at_eos):
                yield chunk
        except RequestFailed as exc:
            raise redacted(exc, self.redact) from None

    async def _read(self, prompt: Sequence[int], n: int, probe: bool, stop_at_eos: bool) -> AsyncIterator[Chunk]:
        assert self.http is not None
        tally = Tally(chat=self.mode == "chat", cap=limits.token_cap(n), redact=self.redact)
        retokenize = self.count_source == "retokenized" and not probe and self._text is not None
        arrived, ids, n_tokens = clock(), [], None
        async with self.http.stream(self._path(), self._body(prompt, n, stop_at_eos), max_tokens=n,
                                    probe=probe) as events:
            async for arrived, payloads in events:
                ids, n_text = tally.take(payloads)
                n_tokens = None
                if n_text:  # text without ids: one token per event, or the re-tokenized growth of the text
                    grown = self._text.count("".join(tally.texts)) - tally.counted if retokenize else n_text
                    n_tokens = len(ids) + max(0, grown)
                count = len(ids) if n_tokens is None else n_tokens
                if count:
                    events.first_token()
                    tally.add(count)
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
        count_text = self._text.count if self._text is not None else None
        yield tally.closing(ids, arrived, n_tokens, n, probe, count_text)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    options = {
        "url": OptionSpec(str, None, "base URL of the server's OpenAI API, ending in /v1 (required)"),
        "model": OptionSpec(str, None, "model name to ask for (default: the first id of GET {url}/models)"),
        "mode": OptionSpec(str, "completions", "completions (raw prompt) or chat (one user turn)",
                           choices=("completions", "chat")),
        "prompt_format": OptionSpec(str, "auto", "ids, text, or auto (ids unless the server refuses them)",
                                    choices=("auto", "ids", "text")),
        "extra_body": OptionSpec(str, None, "JSON object merged into every request body", format="json-object"),
        "metrics_url": METRICS_URL_OPTION,
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
            metrics_dialect="auto",
            description="Any OpenAI-compatible server (vLLM, SGLang, llama.cpp, TGI, Ollama...) over HTTP, streamed.",
            distributions=("aiohttp",),
        )
    )
