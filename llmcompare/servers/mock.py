"""llmcompare's own streaming server, for tests and for benchmarking the harness itself.

It speaks the two wire formats the HTTP backends read, with deterministic output and knobs for
timing and failures, and no model::

    python -m llmcompare.servers.mock --host 127.0.0.1 --port 0 --ttft-ms 20 --itl-ms 5

prints one first line, ``listening on http://127.0.0.1:PORT``, flushed, then serves until killed.
Tests start it in a thread (:func:`serve_in_thread`) or as a subprocess (:func:`spawn`, needed for
``--die-after``, which ends the process).

Routes
    ``GET /health``, ``GET /v1/models``, ``GET /version``, ``GET /info`` (TGI's shape);
    ``POST /v1/completions`` and ``POST /v1/chat/completions`` (OpenAI schema, streamed or not;
    ``usage`` in a last chunk when ``stream_options.include_usage``; ``token_ids`` in each choice when
    ``return_token_ids``); ``POST /generate_stream`` (TGI: one event per token, the last one adds
    ``generated_text`` and ``details``) and ``POST /generate``.

Output
    The prompt's token ids echoed cyclically; a text prompt (or a chat message, or TGI's ``inputs``)
    counts as its UTF-8 bytes, one id per byte. Token ``i`` has the one-character text
    ``chr(32 + i % 95)``, so re-tokenizing the text byte by byte gives back the count exactly. The
    length is ``max_tokens`` (OpenAI; default 16) or ``max_new_tokens`` (TGI; default 100), unless
    ``--eos-after K`` is set and the client did not ask to ignore EOS (``ignore_eos``; ``min_tokens``
    raises the floor): then it stops after K tokens with ``finish_reason`` ``stop`` (TGI:
    ``eos_token``). TGI's route never ignores EOS, as in the real router.

Timing (scheduled from when a request starts generating, so delays do not accumulate drift)
    ``--ttft-ms``, ``--itl-ms`` (between chunks), ``--tokens-per-chunk`` (tokens sharing one SSE event;
    on TGI's route, events sharing one write), ``--serial`` (one request generates at a time, the
    others queue, like llama.cpp's server with one slot), ``--stall-at S --stall-for D`` (no chunk
    leaves during server time [S, S+D) seconds; ``--stall-after N`` starts that window when the N-th
    request arrives instead), ``--die-after N`` (once N requests have started,
    the process exits hard right after the next first chunk it sends: that stream is cut, later
    connections are refused).

Faults, drawn per request from a seeded RNG (``--faults overload=0.1,stream_cut=0.05 --seed 0``)
    ``overload`` (429, TGI-style ``error_type: overloaded``), ``unavailable`` (503), ``server_error``
    (500), ``stream_cut`` (the connection drops halfway through the tokens), ``early_end`` (the body
    ends properly halfway through, with no final event), ``malformed`` (an event that is not JSON,
    after the first chunk), ``error_event`` (a mid-stream ``{"error": ...}`` event saying the model is
    overloaded); and ``refuse_ids``, drawn separately and only for list prompts: the answer
    llama-cpp-python's server gives (HTTP 500, "2 validation errors ... 'prompt'").
    ``--refuse-fields a,b`` answers 400 ``unknown field `a``` to any body carrying one of them (like a
    strict server); ``--no-token-ids`` ignores ``return_token_ids`` and ``--no-usage`` ignores
    ``include_usage`` (like servers that send neither); ``--api-key-env NAME`` requires
    ``Authorization: Bearer $NAME``.

Telemetry
    ``--metrics`` serves ``GET /metrics`` with vLLM's metric names (Prometheus text): requests
    running, generated and prompt tokens, preemptions (0), KV-cache usage (0) and, with
    ``--prefix-block B``, a prefix cache of ``B``-token blocks that never evicts, as vLLM counts it
    (every prompt token queried; a request hits the whole blocks of its longest prefix seen before,
    never its last token; its full blocks are then cached), with ``vllm:cache_config_info``.
    ``--metrics-lie F`` multiplies the generated-token counter by ``F`` (a server that miscounts).
    ``--log-requests FILE`` appends one JSON line per generation request: its arrival (Unix time),
    prompt (ids, or text) and ``max_tokens``.

Speed: event bytes are assembled from precomputed pieces (no ``json.dumps`` per token), chunks that
are due together leave in one write, and access logging is off. Measured 2026-11-22 on the 2-core
development machine (shared with other jobs, load average 2.5-4), the server in a subprocess of
the client's process: 1000 concurrent streams of 128 tokens driven by the ``openai`` backend's
``astream`` gave 33-37k tokens/s with ``--itl-ms 20`` (TGI route: 29k) and 76k tokens/s with no
delay; the server spent 8-14 µs of CPU per streamed token, the client 9-15.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from llmcompare import __version__

LOOPBACK = "127.0.0.1"
FAULTS = ("overload", "unavailable", "server_error", "stream_cut", "early_end", "malformed", "error_event")
"""Faults drawn once per generation request, in this order, from one uniform draw."""
ALL_FAULTS = FAULTS + ("refuse_ids",)

# One JSON-ready text piece per token id class: id i -> chr(32 + i % 95), escaped for a JSON string.
_TEXT = [json.dumps(chr(32 + i))[1:-1].encode() for i in range(95)]
_CHARS = [chr(32 + i) for i in range(95)]


@dataclass(frozen=True)
class MockConfig:
    """Everything the server does; see the module docstring for each knob."""

    model: str = "llmcompare-mock"
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tokens_per_chunk: int = 1
    serial: bool = False
    eos_after: int | None = None
    stall_at_s: float | None = None
    stall_after: int | None = None
    """Start the stall when the N-th request arrives (instead of at ``stall_at_s``)."""
    stall_for_s: float = 0.0
    die_after: int | None = None
    faults: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    api_key: str | None = field(default=None, repr=False)
    token_ids: bool = True
    usage: bool = True
    refuse_fields: tuple[str, ...] = ()
    metrics: bool = False
    metrics_lie: float = 1.0
    prefix_block: int | None = None
    log_requests: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(ALL_FAULTS)}")
        if any(not 0.0 <= p <= 1.0 for p in self.faults.values()):
            raise ValueError("fault probabilities must lie in [0, 1]")
        if sum(self.faults.get(k, 0.0) for k in FAULTS) > 1.0 + 1e-9:
            raise ValueError(f"the probabilities of {', '.join(FAULTS)} must add up to at most 1")
        if self.tokens_per_chunk < 1:
            raise ValueError("tokens_per_chunk must be at least 1")


@dataclass
class _Plan:
    """One generation request, parsed: what to send and how."""

    ids: list[int]
    n: int
    finish: str
    want_ids: bool
    want_usage: bool
    fault: str | None


class MockServer:
    """The aiohttp application and its per-process state (request counter, RNG, serial lock)."""

    def __init__(self, config: MockConfig):
        self.config = config
        self.started = 0
        self._rng = random.Random(config.seed)
        self._lock: asyncio.Lock | None = None
        self._t0 = 0.0
        self._stall_start: float | None = None
        self.running = 0
        self.generated = 0
        self.prompt_tokens = 0
        self.cache_queries = 0
        self.cache_hits = 0
        self._blocks: set[tuple[int, ...]] = set()
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.on_startup.append(self._on_startup)
        self.app.add_routes([
            web.get("/health", self.health),
            web.get("/v1/models", self.models),
            web.get("/version", self.version),
            web.get("/info", self.info),
            web.post("/v1/completions", self.completions),
            web.post("/v1/chat/completions", self.chat),
            web.post("/generate_stream", self.tgi_stream),
            web.post("/generate", self.tgi_generate),
            *([web.get("/metrics", self.metrics)] if config.metrics else []),
        ])

    async def _on_startup(self, app: web.Application) -> None:
        self._lock = asyncio.Lock()
        self._t0 = asyncio.get_running_loop().time()

    # ---- simple routes ----
    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.config.model, "object": "model", "created": 0, "owned_by": "llmcompare-mock"}]})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": _version()})

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response({"model_id": self.config.model, "model_dtype": "none", "model_device_type": "cpu",
                                  "version": _version(), "router": "llmcompare-mock"})

    async def metrics(self, request: web.Request) -> web.Response:
        """vLLM's names, as prometheus_client renders them (counters as ``_total``)."""
        labels = f'{{engine="0",model_name="{self.config.model}"}}'
        lines = []
        for name, kind, value in (
                ("vllm:num_requests_running", "gauge", self.running), ("vllm:num_requests_waiting", "gauge", 0),
                ("vllm:kv_cache_usage_perc", "gauge", 0.0), ("vllm:num_preemptions", "counter", 0),
                ("vllm:prompt_tokens", "counter", self.prompt_tokens),
                ("vllm:generation_tokens", "counter", self.generated * self.config.metrics_lie),
                *((("vllm:prefix_cache_queries", "counter", self.cache_queries),
                   ("vllm:prefix_cache_hits", "counter", self.cache_hits)) if self.config.prefix_block else ())):
            suffix = "_total" if kind == "counter" else ""
            lines += [f"# HELP {name} {name}.", f"# TYPE {name} {kind}", f"{name}{suffix}{labels} {float(value)!r}"]
        block = self.config.prefix_block
        lines += ["# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
                  "# TYPE vllm:cache_config_info gauge",
                  f'vllm:cache_config_info{{block_size="{block or 16}",enable_prefix_caching="{bool(block)}",engine="0"}}'
                  " 1.0"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    def _account(self, ids: list[int], max_tokens: int, prompt: object) -> None:
        """A generation request arrived: count its prompt (and its prefix-cache lookup), log it."""
        self.prompt_tokens += len(ids)
        block = self.config.prefix_block
        if block:
            self.cache_queries += len(ids)
            full = [tuple(ids[: (k + 1) * block]) for k in range(len(ids) // block)]
            hit = 0
            for prefix in full:
                if prefix not in self._blocks or len(prefix) >= len(ids):  # never the last prompt token
                    break
                hit = len(prefix)
            self.cache_hits += hit
            self._blocks.update(full)
        if self.config.log_requests:
            with open(self.config.log_requests, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"t": time.time(), "prompt": prompt, "max_tokens": max_tokens}) + "\n")

    # ---- OpenAI routes ----
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, chat=True)

    async def _openai(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
                return _openai_error(400, "messages must be a non-empty list")
            prompt: object = messages[-1].get("content")
            if not isinstance(prompt, str):
                return _openai_error(400, "message content must be a string")
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
                if self._draw_refuse_ids():  # what llama-cpp-python 0.3.36's server answers
                    return _openai_error(500, "2 validation errors:\n  {'type': 'string_type', 'loc': ('body',"
                                         " 'prompt', 'str'), 'msg': 'Input should be a valid string'}",
                                         "internal_server_error")
            elif not isinstance(prompt, str) or not prompt:
                return _openai_error(400, "prompt must be a non-empty string or a list of token ids")
        ids = list(prompt) if isinstance(prompt, list) else list(prompt.encode("utf-8"))
        max_tokens = body.get("max_tokens", 16)
        if type(max_tokens) is not int or max_tokens < 1:
            return _openai_error(400, "max_tokens must be a positive integer")
        self._account(ids, max_tokens, prompt)
        ignore_eos = bool(body.get("ignore_eos"))
        min_tokens = body.get("min_tokens") or 0
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        plan = self._plan(ids, max_tokens, ignore_eos, min_tokens if type(min_tokens) is int else 0,
                          want_ids=bool(body.get("return_token_ids")) and self.config.token_ids,
                          want_usage=include_usage and self.config.usage)
        early = self._fault_response(plan.fault, tgi=False)
        if early is not None:
            return early
        if not body.get("stream"):
            return await self._serially(self._openai_whole(plan, chat))
        return await self._serially(self._openai_stream(request, plan, chat))

    async def _openai_whole(self, plan: _Plan, chat: bool) -> web.Response:
        async for _ in self._batches(plan):
            pass
        out = [plan.ids[i % len(plan.ids)] for i in range(plan.n)]
        text = "".join(_CHARS[t % 95] for t in out)
        choice: dict[str, object] = {"index": 0, "finish_reason": plan.finish}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        if plan.want_ids:
            choice["token_ids"] = out
        return web.json_response({
            "id": "cmpl-mock", "object": "chat.completion" if chat else "text_completion", "created": 0,
            "model": self.config.model, "choices": [choice],
            "usage": {"prompt_tokens": len(plan.ids), "completion_tokens": plan.n,
                      "total_tokens": len(plan.ids) + plan.n},
        })

    async def _openai_stream(self, request: web.Request, plan: _Plan, chat: bool) -> web.StreamResponse:
        resp = await _sse_response(request)
        model = json.dumps(self.config.model).encode()
        kind = b"chat.completion.chunk" if chat else b"text_completion"
        head = (b'data: {"id":"cmpl-mock","object":"' + kind + b'","created":0,"model":' + model
                + b',"choices":[{"index":0,')
        if chat:
            head += b'"delta":{"content":"'
            close = b'"}'
            await resp.write(head + b'","role":"assistant"},"finish_reason":null}]}\n\n')
        else:
            head += b'"text":"'
            close = b'"'
        ids, period, want_ids = plan.ids, len(plan.ids), plan.want_ids
        k = self.config.tokens_per_chunk
        single: dict[int, bytes] = {}  # one-token events by position in the prompt's cycle

        def event(start: int, stop: int) -> bytes:
            if stop - start == 1 and start % period in single:
                return single[start % period]
            toks = [ids[i % period] for i in range(start, stop)]
            out = head + b"".join([_TEXT[t % 95] for t in toks]) + close
            if want_ids:
                out += b',"token_ids":[' + ",".join(map(str, toks)).encode() + b"]"
            out += b',"finish_reason":null}]}\n\n'
            if stop - start == 1:
                single[start % period] = out
            return out

        async for sent, stop in self._batches(plan):
            await resp.write(b"".join([event(i, min(i + k, stop)) for i in range(sent, stop, k)]))
            self._maybe_die(sent == 0)
            if plan.fault in ("stream_cut", "early_end") and stop < plan.n:
                return _cut(request, resp) if plan.fault == "stream_cut" else resp
            if plan.fault == "malformed":
                await resp.write(b"data: {this is not json\n\n")
            elif plan.fault == "error_event":
                await resp.write(b'data: {"error":{"message":"the model is overloaded, try again later",'
                                 b'"type":"overloaded","code":503}}\n\n')
                return resp
        tail = head + close + b',"finish_reason":"' + plan.finish.encode() + b'"}]}\n\n'
        if plan.want_usage:
            p = len(ids)
            tail += (b'data: {"id":"cmpl-mock","object":"' + kind + b'","created":0,"model":' + model
                     + b',"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}\n\n'
                     % (p, plan.n, p + plan.n))
        await resp.write(tail + b"data: [DONE]\n\n")
        return resp

    # ---- TGI routes ----
    async def tgi_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._tgi(request, stream=True)

    async def tgi_generate(self, request: web.Request) -> web.StreamResponse:
        return await self._tgi(request, stream=False)

    async def _tgi(self, request: web.Request, stream: bool) -> web.StreamResponse:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        inputs = body.get("inputs")
        params = body.get("parameters") or {}
        if not isinstance(inputs, str) or not inputs or not isinstance(params, dict):
            return web.json_response({"error": "Input validation error: `inputs` must be a non-empty string",
                                      "error_type": "validation"}, status=422)
        max_new = params.get("max_new_tokens", 100)
        if type(max_new) is not int or max_new < 1:
            return web.json_response({"error": "Input validation error: `max_new_tokens` must be > 0",
                                      "error_type": "validation"}, status=422)
        self._account(list(inputs.encode("utf-8")), max_new, inputs)
        plan = self._plan(list(inputs.encode("utf-8")), max_new, False, 0, want_ids=True, want_usage=False)
        if plan.finish == "stop":
            plan.finish = "eos_token"
        early = self._fault_response(plan.fault, tgi=True)
        if early is not None:
            return early
        if not stream:
            return await self._serially(self._tgi_whole(plan, bool(params.get("details"))))
        return await self._serially(self._tgi_stream(request, plan))

    async def _tgi_whole(self, plan: _Plan, details: bool) -> web.Response:
        async for _ in self._batches(plan):
            pass
        out = [plan.ids[i % len(plan.ids)] for i in range(plan.n)]
        answer: dict[str, object] = {"generated_text": "".join(_CHARS[t % 95] for t in out)}
        if details:
            answer["details"] = {"finish_reason": plan.finish, "generated_tokens": plan.n, "seed": None,
                                 "prefill": [], "input_length": len(plan.ids),
                                 "tokens": [{"id": t, "text": _CHARS[t % 95], "logprob": -0.1, "special": False}
                                            for t in out]}
        return web.json_response(answer)

    async def _tgi_stream(self, request: web.Request, plan: _Plan) -> web.StreamResponse:
        resp = await _sse_response(request)
        ids, period, n = plan.ids, len(plan.ids), plan.n

        def event(j: int) -> bytes:
            t = ids[j % period]
            out = b'data:{"index":%d,"token":{"id":%d,"text":"' % (j + 1, t) + _TEXT[t % 95]
            out += b'","logprob":-0.1,"special":false},"generated_text":'
            if j < n - 1:
                return out + b'null,"details":null}\n\n'
            text = "".join(_CHARS[ids[i % period] % 95] for i in range(n))
            return (out + json.dumps(text).encode() + b',"details":{"finish_reason":"' + plan.finish.encode()
                    + b'","generated_tokens":%d,"seed":null,"input_length":%d}}\n\n' % (n, period))

        async for sent, stop in self._batches(plan):
            await resp.write(b"".join([event(j) for j in range(sent, stop)]))
            self._maybe_die(sent == 0)
            if stop < n:
                if plan.fault in ("stream_cut", "early_end"):
                    return _cut(request, resp) if plan.fault == "stream_cut" else resp
                if plan.fault == "malformed":
                    await resp.write(b"data:{this is not json\n\n")
                elif plan.fault == "error_event":
                    await resp.write(b'data:{"error":"Model is overloaded","error_type":"overloaded"}\n\n')
                    return resp
        return resp

    # ---- shared ----
    async def _read(self, request: web.Request) -> tuple[dict, web.Response | None]:
        """The JSON body, or the refusal to answer with (auth, bad JSON, a refused field)."""
        key = self.config.api_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return {}, _openai_error(401, "invalid or missing API key", "authentication_error")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return {}, _openai_error(400, "the body is not valid JSON")
        if not isinstance(body, dict):
            return {}, _openai_error(400, "the body must be a JSON object")
        for name in self.config.refuse_fields:
            if name in body or name in (body.get("parameters") or {}):
                return {}, _openai_error(400, f"unknown field `{name}`")
        return body, None

    def _plan(self, ids: list[int], max_tokens: int, ignore_eos: bool, min_tokens: int, *,
              want_ids: bool, want_usage: bool) -> _Plan:
        n = max_tokens
        eos = self.config.eos_after
        if eos is not None and not ignore_eos:
            n = min(max_tokens, max(eos, min_tokens))
        self.started += 1
        if self.config.stall_after is not None and self.started == self.config.stall_after:
            self._stall_start = asyncio.get_running_loop().time()
        return _Plan(ids or [0], n, "length" if n == max_tokens else "stop", want_ids, want_usage, self._draw_fault())

    def _draw_fault(self) -> str | None:
        if not any(self.config.faults.get(k) for k in FAULTS):
            return None
        u = self._rng.random()
        for kind in FAULTS:
            u -= self.config.faults.get(kind, 0.0)
            if u < 0:
                return kind
        return None

    def _draw_refuse_ids(self) -> bool:
        p = self.config.faults.get("refuse_ids", 0.0)
        return p >= 1.0 or (p > 0.0 and self._rng.random() < p)

    @staticmethod
    def _fault_response(fault: str | None, tgi: bool) -> web.Response | None:
        if fault == "overload":
            if tgi:
                return web.json_response({"error": "Model is overloaded", "error_type": "overloaded"}, status=429)
            return _openai_error(429, "the server is overloaded, retry later", "overloaded")
        if fault == "unavailable":
            return _openai_error(503, "service unavailable", "unavailable")
        if fault == "server_error":
            return _openai_error(500, "internal error while generating", "server_error")
        return None

    async def _serially(self, coro):
        if not self.config.serial:
            return await coro
        assert self._lock is not None
        async with self._lock:
            return await coro

    async def _batches(self, plan: _Plan):
        """``(start, stop)`` token ranges to write, each as soon as it is due.

        Chunk ``c`` (tokens ``c*k`` to ``c*k+k``) is due ``ttft + c*itl`` after the request arrived,
        and never inside the stall window. When several chunks are due at once (no delay set, the
        end of a stall, or a server behind schedule under load) they leave in one write, as a busy
        server's would. A ``stream_cut`` or ``early_end`` stops at half the tokens."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        k = cfg.tokens_per_chunk
        ttft, itl = cfg.ttft_ms / 1000.0, cfg.itl_ms / 1000.0
        t0 = loop.time()
        end = max(1, plan.n // 2) if plan.fault in ("stream_cut", "early_end") else plan.n
        sent = 0
        self.running += 1
        try:
            while sent < end:
                now = await self._wait_due(t0 + ttft + (sent // k) * itl)
                chunks = int((now - t0 - ttft) / itl) + 1 - sent // k if itl > 0 else end
                stop = min(end, sent + max(1, chunks) * k)
                self.generated += stop - sent
                yield sent, stop
                sent = stop
        finally:
            self.running -= 1

    async def _wait_due(self, due: float) -> float:
        """Sleep until ``due`` (or the end of the stall window it falls in); return the loop time then."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = self._stall_start if self._stall_start is not None else (
            self._t0 + cfg.stall_at_s if cfg.stall_at_s is not None else None)
        if start is not None:
            if start <= max(due, now) < start + cfg.stall_for_s:
                due = start + cfg.stall_for_s
        if due > now:
            await asyncio.sleep(due - now)
            now = loop.time()
        return now

    def _maybe_die(self, first_write: bool) -> None:
        if first_write and self.config.die_after is not None and self.started >= self.config.die_after:
            os._exit(70)


def _version() -> str:
    return f"llmcompare-mock {__version__}"


def _openai_error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)


async def _sse_response(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    return resp


def _cut(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """Drop the connection mid-stream (no final event, no end of the chunked body)."""
    if request.transport is not None:
        request.transport.abort()
    return resp


# ---- running it ----
class ServerHandle:
    """A server started in this process (:func:`serve_in_thread`): ``url``, ``server``, ``stop()``."""

    def __init__(self, url: str, server: MockServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 runner: web.AppRunner):
        self.url = url
        self.server = server
        self._loop = loop
        self._thread = thread
        self._runner = runner

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _start(config: MockConfig, host: str, port: int) -> tuple[MockServer, web.AppRunner, str]:
    server = MockServer(config)
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    await site.start()
    bound = runner.addresses[0]
    return server, runner, f"http://{host}:{bound[1]}"


def serve_in_thread(config: MockConfig | None = None, host: str = LOOPBACK, port: int = 0) -> ServerHandle:
    """Start a server on its own event loop in a daemon thread; returns once it listens.

    ``die_after`` would end the calling process too, so it is refused here: use :func:`spawn`."""
    config = config or MockConfig()
    if config.die_after is not None:
        raise ValueError("die_after ends the whole process: start the server with spawn() instead")
    loop = asyncio.new_event_loop()
    started: dict[str, object] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            started["value"] = loop.run_until_complete(_start(config, host, port))
        except BaseException as exc:  # reported to the caller below
            started["error"] = exc
        ready.set()
        if "value" in started:
            loop.run_forever()

    thread = threading.Thread(target=run, name="llmcompare-mockserver", daemon=True)
    thread.start()
    ready.wait()
    if "error" in started:
        raise started["error"]  # type: ignore[misc]
    server, runner, url = started["value"]  # type: ignore[misc]
    return ServerHandle(url, server, loop, thread, runner)


class MockProcess:
    """A server in a subprocess (:func:`spawn`): ``url``, ``proc``, ``stop()``; a context manager."""

    def __init__(self, proc: subprocess.Popen, url: str):
        self.proc = proc
        self.url = url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> MockProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn(args: Sequence[str] = (), env: Mapping[str, str] | None = None, timeout_s: float = 30.0) -> MockProcess:
    """Start ``python -m llmcompare.servers.mock --port 0 ARGS`` and wait for its ``listening on`` line."""
    argv = [sys.executable, "-m", "llmcompare.servers.mock", "--host", LOOPBACK, "--port", "0", *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=None, text=True,
                            env=dict(env) if env is not None else None)
    result: dict[str, str] = {}

    def read_first_line() -> None:
        assert proc.stdout is not None
        result["line"] = proc.stdout.readline()

    reader = threading.Thread(target=read_first_line, daemon=True)
    reader.start()
    reader.join(timeout_s)
    line = result.get("line", "")
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"mock server did not start (exit {proc.returncode}): {line.strip()!r}")
    return MockProcess(proc, line.split("listening on ", 1)[1].strip())


def parse_faults(raw: str) -> dict[str, float]:
    """``"overload=0.1,stream_cut=0.05"`` -> ``{"overload": 0.1, "stream_cut": 0.05}``."""
    out: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in raw.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"fault {item!r} needs a probability, e.g. {item}=0.1")
        out[name.strip()] = float(value)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llmcompare.servers.mock", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=LOOPBACK)
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--model", default=MockConfig.model)
    p.add_argument("--ttft-ms", type=float, default=0.0)
    p.add_argument("--itl-ms", type=float, default=0.0, help="delay between chunks, ms")
    p.add_argument("--tokens-per-chunk", type=int, default=1)
    p.add_argument("--serial", action="store_true", help="one request generates at a time; the others queue")
    p.add_argument("--eos-after", type=int, default=None)
    p.add_argument("--stall-at", type=float, default=None, help="server time (s since start) a stall begins")
    p.add_argument("--stall-after", type=int, default=None, help="start the stall when the N-th request arrives")
    p.add_argument("--stall-for", type=float, default=0.0, help="stall length, s")
    p.add_argument("--die-after", type=int, default=None, help="exit hard once the N-th request sent a chunk")
    p.add_argument("--faults", default="", help=f"comma list of NAME=P with NAME in {', '.join(ALL_FAULTS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key-env", default=None, help="require the key held in this environment variable")
    p.add_argument("--no-token-ids", action="store_true", help="ignore return_token_ids")
    p.add_argument("--no-usage", action="store_true", help="ignore stream_options.include_usage")
    p.add_argument("--refuse-fields", default="", help="answer 400 to bodies carrying any of these fields")
    p.add_argument("--metrics", action="store_true", help="serve GET /metrics with vLLM's names")
    p.add_argument("--metrics-lie", type=float, default=1.0, help="multiply the generated-token counter by this")
    p.add_argument("--prefix-block", type=int, default=None, help="count a prefix cache of blocks of N tokens")
    p.add_argument("--log-requests", default=None, help="append one JSON line per generation request to this file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"environment variable {args.api_key_env} is not set", file=sys.stderr)
            return 2
    config = MockConfig(
        model=args.model, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, tokens_per_chunk=args.tokens_per_chunk,
        serial=args.serial, eos_after=args.eos_after, stall_at_s=args.stall_at, stall_after=args.stall_after, stall_for_s=args.stall_for,
        die_after=args.die_after, faults=parse_faults(args.faults), seed=args.seed, api_key=api_key,
        token_ids=not args.no_token_ids, usage=not args.no_usage,
        refuse_fields=tuple(filter(None, (s.strip() for s in args.refuse_fields.split(",")))),
        metrics=args.metrics, metrics_lie=args.metrics_lie, prefix_block=args.prefix_block,
        log_requests=args.log_requests,
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # thousands of concurrent streams need thousands of sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def serve() -> None:
        _, runner, url = await _start(config, args.host, args.port)
        print(f"listening on {url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
