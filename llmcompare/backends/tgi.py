"""Hugging Face text-generation-inference (TGI) through its native ``POST /generate_stream``.

Read from TGI's router (``router/src/lib.rs``, ``validation.rs``; TGI 1.x to 3.3, in maintenance mode
since 2025-12) rather than through the ``text-generation`` client package, which pins
``huggingface-hub<1``:

* Request: ``{"inputs": TEXT, "parameters": {"max_new_tokens": N, "do_sample": false,
  "details": true, "decoder_input_details": false, "return_full_text": false, "stop": [],
  "watermark": false, "repetition_penalty": 1.0}}``; ``extra_parameters`` (a JSON object) is merged
  into ``parameters`` last. Greedy is stated explicitly (``do_sample false``, no temperature, which
  TGI would have to be > 0).
* Stream: one SSE event per token, ``data:{"index", "token": {"id", "text", "logprob", "special"},
  "generated_text": null, "details": null}``; the last event carries ``generated_text`` and
  ``details`` ``{finish_reason: length|eos_token|stop_sequence, generated_tokens, seed}`` (newer
  routers add ``input_length``, reported as ``prompt_tokens``). No ``[DONE]``: the details event
  ends the stream; a stream that ends without it is ``stream_cut``.
* Ids are exact (``token.id``, special tokens included, as in ``generated_tokens``); several events
  that arrive in one network read share its :func:`~llmcompare.backend.clock` time.
* Length cannot be forced over HTTP: the router's validation sets ``ignore_eos_token: false`` for
  every request. ``max_new_tokens=N`` is sent and ``finish_reason`` reported, so the core flags a
  request that stopped at EOS.
* TGI takes text only: our prompt ids are decoded with the model's tokenizer (loaded in ``load()``),
  so the server gets the same templated prompt; it tokenizes it again (adding its special tokens)
  and its ``input_length``, where sent, is checked against our count by the core.
* Errors: 429 ``{"error", "error_type": "overloaded"}`` → ``overload``; 422 (validation) →
  ``client_error``; 424 (generation failed in a shard) and 5xx → ``server_error``; a mid-stream
  ``{"error", "error_type"}`` event → by its type. Connection, timeout, cut and malformed failures
  map as in the OpenAI backend (``llmcompare/backends/openai_http.py``), whose HTTP plumbing this reuses.
* Prefix caching is the server's setting (``PREFIX_CACHING=0`` at launch); the device is the server's.
* ``load()`` reads ``GET /info`` (version, model id, device type) and sends one 2-token probe.
* The server is not trusted (as in the OpenAI backend): ids are checked token ids, ``generated_tokens``
  and ``input_length`` checked counts (``malformed`` otherwise), more tokens than the forced length
  and its slack are ``overrun`` (the stream is cut), and the ids' count is cross-checked against
  ``generated_tokens`` into the record's ``count_check``. Strings from ``/info`` and the stream are
  made valid UTF-8 and bounded; messages are redacted (a URL's credentials are sent as Basic auth).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from llmcompare import hookimpl, limits
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, Chunk, OptionSpec, clock
from llmcompare.backends.http_transport import (
    METRICS_URL_OPTION,
    CheckedChunk,
    HttpClient,
    PromptText,
    ServerClient,
    closing_after,
    error_event_failure,
    load_prompt_text,
    parse_json_object,
    redacted,
    run_sync,
    timeout_options,
)
from llmcompare.errors import OptionError, RequestFailed, UserError
from llmcompare.limits import count_value, safe_text, token_id
from llmcompare.records import count_check
from llmcompare.redact import redact_url

PROBE_TOKENS = 2


class TGIBackend(ServerClient):
    """See the module docstring."""

    name = "tgi"
    _extra_json_option = "extra_parameters"

    def __init__(self, config: BackendConfig):
        self.config = config
        url = config.options.get("url")
        if not url:
            raise OptionError("backend 'tgi' needs --option url=http://HOST:PORT (the server's root URL)")
        self.url = redact_url(str(url).rstrip("/"))
        self.extra_parameters = parse_json_object("tgi", "extra_parameters", config.options.get("extra_parameters"))
        self.http: HttpClient | None = None
        self.info: dict[str, Any] = {}
        self.probe_finish: str | None = None
        self._text: PromptText | None = None

    def __repr__(self) -> str:
        return f"TGIBackend(url={self.url!r})"

    def load(self) -> None:
        self.http = self.open_http()
        self._text, error = load_prompt_text(self.config)
        if self._text is None:
            raise UserError(f"backend 'tgi' sends text, decoded from our prompt ids with the model's tokenizer,"
                            f" which could not be loaded: {error}")
        run_sync(closing_after(self._probe(), self.http))

    async def _probe(self) -> None:
        assert self.http is not None and self._text is not None
        try:
            info = await self.http.get_json("/info")
            self.info = info if isinstance(info, dict) else {}
        except RequestFailed:
            self.info = {}  # an old or proxied server without /info: the probe below still checks the route
        ids = self._text.tokenizer("Hello", add_special_tokens=False)["input_ids"] or [0]
        try:
            chunks = [c async for c in self._stream(ids, PROBE_TOKENS, probe=True)]
        except RequestFailed as exc:
            if exc.kind == "redirect" and not self.http.follow_redirects:
                raise UserError(f"the TGI server at {self.url} answered the probe with a redirect ({exc}): point"
                                " -o url at the target, or pass -o follow_redirects=true") from None
            raise UserError(f"the TGI server at {self.url} failed the probe request: {exc.kind}: {exc}") from None
        self.probe_finish = next((c.finish_reason for c in chunks if c.finish_reason), None)

    def count_tokens(self, text: str) -> int:
        if self._text is None:
            raise RuntimeError("the tgi backend is not loaded")
        return self._text.count(text)

    def engine_version(self) -> dict[str, str]:
        out = {"server": "text-generation-inference", "api": "tgi/generate_stream", "count_source": "ids",
               "length": "not forced (TGI sets ignore_eos_token=false)"}
        for key, name in (("version", "tgi"), ("model_id", "server_model"), ("model_device_type", "server_device"),
                          ("model_dtype", "server_dtype")):
            if self.info.get(key):
                out[name] = safe_text(self.info[key], limits.MAX_SERVER_TEXT)
        if self.probe_finish:
            out["probe_finish_reason"] = self.probe_finish
        try:
            import aiohttp

            out["aiohttp"] = aiohttp.__version__
        except ImportError:
            pass
        return {k: self.redact(v) for k, v in out.items()}

    def _body(self, prompt: Sequence[int], n: int) -> dict[str, Any]:
        assert self._text is not None
        parameters: dict[str, Any] = {"max_new_tokens": n, "do_sample": False, "details": True,
                                      "decoder_input_details": False, "return_full_text": False, "stop": [],
                                      "watermark": False, "repetition_penalty": 1.0}
        parameters.update(self.extra_parameters)
        return {"inputs": self._text.text(prompt), "parameters": parameters}

    async def astream(self, prompt: Sequence[int] | str, max_new_tokens: int, *,
                      stop_at_eos: bool = False) -> AsyncIterator[Chunk]:
        """TGI always stops at EOS (its router forces ``ignore_eos_token: false``), so ``stop_at_eos`` changes
        nothing here; the fidelity pass drops the EOS token TGI streams as the last one."""
        if self.http is None or self._text is None:
            raise RuntimeError("the tgi backend is not loaded")
        if isinstance(prompt, str):
            raise TypeError("the tgi backend takes prompt token ids (it declares accepts_token_ids)")
        async for chunk in self._stream(prompt, max_new_tokens):
            yield chunk

    async def _stream(self, prompt: Sequence[int], n: int, probe: bool = False) -> AsyncIterator[Chunk]:
        try:
            async for chunk in self._read(prompt, n, probe):
                yield chunk
        except RequestFailed as exc:
            raise redacted(exc, self.redact) from None

    async def _read(self, prompt: Sequence[int], n: int, probe: bool) -> AsyncIterator[Chunk]:
        assert self.http is not None
        tally = TGITally(limits.token_cap(n), self.redact)
        arrived = clock()
        ids: list[int] = []
        async with self.http.stream("/generate_stream", self._body(prompt, n), max_tokens=n, probe=probe) as events:
            async for arrived, payloads in events:
                ids = tally.take(payloads)
                if ids:
                    events.first_token()
                if tally.details is not None:
                    break
                yield Chunk(ids, arrived)
        yield tally.closing(ids, arrived)


class TGITally:
    """What one ``/generate_stream`` answer has said so far: every event is one token (a checked
    token id), the last one carries ``details``. More than ``cap`` tokens is ``overrun``."""

    __slots__ = ("cap", "details", "redact", "total")

    def __init__(self, cap: int, redact: Callable[[str], str] | None = None):
        self.cap = cap
        self.redact = redact
        self.total = 0
        self.details: dict[str, Any] | None = None

    def take(self, payloads: list[bytes]) -> list[int]:
        """The token ids of one network read's events (up to the details event, which ends the answer)."""
        ids: list[int] = []
        for payload in payloads:
            obj = _event(payload, self.redact)
            token = obj.get("token")
            if not isinstance(token, dict):
                raise RequestFailed("malformed", f"an event without a token: {_show(payload)}")
            if self.total + len(ids) + 1 > self.cap:
                raise RequestFailed("overrun", f"the server sent more than {self.cap} tokens (the forced length"
                                    f" and {limits.TOKEN_SLACK} of slack); the stream was cut")
            ids.append(token_id(token.get("id"), "an event with"))
            if obj.get("details") is not None:
                if not isinstance(obj["details"], dict):
                    raise RequestFailed("malformed", f"details that are not an object: {_show(payload)}")
                self.details = obj["details"]
                break
        self.total += len(ids)
        return ids

    def closing(self, ids: list[int], arrived: float) -> CheckedChunk:
        """The last chunk: the details event's token, the server's checked counts, the cross-check."""
        details = self.details
        if details is None:
            raise RequestFailed("stream_cut", "the stream ended before its final details event")
        generated = count_value(details.get("generated_tokens"), "details.generated_tokens", self.cap)
        prompt_tokens = count_value(details.get("input_length", details.get("prompt_tokens")), "details.input_length")
        finish = details.get("finish_reason")
        if finish is not None and not isinstance(finish, str):
            raise RequestFailed("malformed", f"a finish_reason that is not a string: {safe_text(finish, 40)}")
        return CheckedChunk(ids, arrived, finish_reason=safe_text(finish, limits.MAX_FINISH_REASON) if finish else None,
                            prompt_tokens=prompt_tokens, engine_output_tokens=generated,
                            count_check=count_check(ids=self.total, generated_tokens=generated))


def _event(payload: bytes, redact: Callable[[str], str] | None = None) -> dict[str, Any]:
    obj = limits.parse_json(payload, "an event")
    if not isinstance(obj, dict):
        raise RequestFailed("malformed", f"an event that is not a JSON object: {_show(payload)}")
    if "error" in obj and "token" not in obj:
        raise error_event_failure(obj, payload, redact)
    return obj


def _show(payload: bytes) -> str:
    return safe_text(bytes(payload[:200]), 240)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="tgi",
            target="llmcompare.backends.tgi:TGIBackend",
            install="pip install llmcompare",
            requires=("aiohttp",),
            options={
                "url": OptionSpec(str, None, "root URL of the TGI server, e.g. http://127.0.0.1:8080 (required)"),
                "extra_parameters": OptionSpec(str, None, "JSON object merged into the request's parameters",
                                               format="json-object"),
                "metrics_url": METRICS_URL_OPTION,
                **timeout_options(),
            },
            capabilities=Capabilities(accepts_token_ids=True, concurrent=True, devices=("cpu", "cuda"),
                                      in_process=False, model_formats=("gguf", "hf", "synthetic"),
                                      prefix_cache="server", natural_stop=True),
            metrics_dialect="tgi",
            description="Hugging Face TGI's native /generate_stream over HTTP; exact ids, length not forceable.",
            distributions=("aiohttp",),
        )
    )
