"""Fake of ``mlc_llm.serve.engine``: ``MLCEngine`` and ``AsyncMLCEngine`` with their completions API.

Mirrors mlc-ai/mlc-llm ``python/mlc_llm/serve/engine.py`` and ``engine_base.py`` at commit 79d603f
(2026-07-23), as far as a caller can observe:

* ``MLCEngine(model, device="auto", *, model_lib=None, mode="local", engine_config=None,
  enable_tracing=False)``; ``model`` must hold ``mlc-chat-config.json``; without ``model_lib`` the
  library is JIT-compiled unless ``MLC_JIT_POLICY=OFF``;
* ``completions.create(*, prompt, ..., stream=..., stream_options=..., logprobs=..., extra_body=...)``
  with the real keyword names; ``extra_body["debug_config"]`` carries ``ignore_eos``;
* streamed ``CompletionResponse`` chunks carry *text* and, with ``logprobs``, one logprob entry per
  token; a chunk whose delta text is empty and that does not finish the request is dropped,
  logprobs included (``process_completion_stream_output``); the last chunk has ``choices=[]`` and
  ``usage`` (sent only when ``stream_options={"include_usage": True}``);
* the async ``create`` is a coroutine that returns an async generator when ``stream=True``;
* ``terminate()`` stops the engine; later requests raise.

Generation is deterministic: the prompt's ids, cyclically (text prompts: their UTF-8 bytes).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Optional, Union

from .. import _fake as _fake_state
from ..protocol.openai_api_protocol import (
    COMPLETION_MAX_TOP_LOGPROBS,
    CompletionLogProbs,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionUsage,
)
from .config import EngineConfig

MLC_JIT_POLICY = os.environ.get("MLC_JIT_POLICY", "ON")  # read once, at import, as mlc_llm.support.constants does


class _Tokenizer:
    """``mlc_llm.tokenizers.Tokenizer`` as the engine exposes it: ``encode(text) -> list[int]``."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


class _EngineBase:
    def __init__(self, kind: str, model: str, device: Any = "auto", *, model_lib: Optional[str] = None,
                 mode: str = "local", engine_config: Optional[EngineConfig] = None, enable_tracing: bool = False):
        if mode not in ("local", "interactive", "server"):
            raise ValueError(f'Invalid engine mode "{mode}"')
        config_path = Path(model) / "mlc-chat-config.json"
        if not config_path.is_file():
            raise ValueError(f"Cannot find mlc-chat-config.json in {model}")
        if model_lib is None and MLC_JIT_POLICY == "OFF":
            raise RuntimeError("JIT is disabled by MLC_JIT_POLICY=OFF")
        engine_config = engine_config or EngineConfig()
        _fake_state.record(f"{kind}.__init__", model=model, device=device, model_lib=model_lib, mode=mode,
                           engine_config=engine_config, enable_tracing=enable_tracing)
        self.model_config = json.loads(config_path.read_text())
        self.engine_config = engine_config
        self.tokenizer = _Tokenizer()
        self._terminated = False

    def terminate(self) -> None:
        if self._terminated:
            return
        self._terminated = True
        _fake_state.record(f"{type(self).__name__}.terminate")

    # ---- the shared request path ----
    def _plan(self, request: dict[str, Any]) -> tuple[list[list[int]], str, int]:
        """Validate like the real request path; return the token deltas, finish reason, prompt length."""
        if self._terminated:
            raise ValueError("The AsyncThreadedEngine has terminated.")
        prompt = request["prompt"]
        ids = list(prompt.encode("utf-8")) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise ValueError("The prompt is empty")
        logprobs = request.get("logprobs")
        if logprobs is not None and not 0 <= logprobs <= COMPLETION_MAX_TOP_LOGPROBS:
            raise ValueError(f'"logprobs" must be in range [0, {COMPLETION_MAX_TOP_LOGPROBS}]')
        if request.get("stream_options") is not None and not request.get("stream"):
            raise ValueError("stream_options can only be set when stream is True")
        window = int(self.model_config.get("context_window_size", 2048))
        if len(ids) >= window:
            raise ValueError(f"Request prompt has {len(ids)} tokens in total, larger than the model input length "
                             f"limit {window}.")
        debug = (request.get("extra_body") or {}).get("debug_config") or {}
        ignore_eos = bool(debug.get("ignore_eos", False))
        max_tokens = request.get("max_tokens")
        budget = window - len(ids) if max_tokens is None or max_tokens < 0 else min(max_tokens, window - len(ids))
        eos = self.model_config.get("eos_token_id")
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        out: list[int] = []
        finish = "length"
        for i in range(budget):
            token = ids[i % len(ids)]
            if token in eos_ids and not ignore_eos:
                finish = "stop"
                break
            out.append(token)
        step = max(1, _fake_state.SETTINGS.tokens_per_chunk)
        return [out[i:i + step] for i in range(0, len(out), step)] or [[]], finish, len(ids)

    @staticmethod
    def _chunks(request: dict[str, Any], deltas: list[list[int]], finish: str, prompt_len: int):
        """The streamed responses, built with the real rules (see the module docstring)."""
        rid = request.get("request_id") or f"cmpl-{uuid.uuid4().hex}"
        fail_after = _fake_state.SETTINGS.fail_after
        sent = 0
        for i, delta in enumerate(deltas):
            if fail_after is not None and sent + len(delta) > fail_after:
                raise RuntimeError(f"fake engine failure after {fail_after} tokens")
            sent += len(delta)
            last = i == len(deltas) - 1
            text = "".join(_fake_state.token_text(t) for t in delta)
            if text == "" and not last:
                continue  # empty delta text and no finish reason: the real engine skips the chunk
            logprobs = None
            if request.get("logprobs") is not None:
                logprobs = CompletionLogProbs(text_offset=None, token_logprobs=[0.0] * len(delta),
                                              tokens=[_fake_state.token_text(t) for t in delta],
                                              top_logprobs=[{} for _ in delta])
            yield CompletionResponse(id=rid, choices=[CompletionResponseChoice(
                text=text, finish_reason=finish if last else None, logprobs=logprobs)], model=request.get("model"))
        options = request.get("stream_options") or {}
        if options.get("include_usage"):
            total = sum(len(d) for d in deltas)
            yield CompletionResponse(id=rid, choices=[], model=request.get("model"), usage=CompletionUsage(
                prompt_tokens=prompt_len, completion_tokens=total, total_tokens=prompt_len + total,
                extra={"prefill_tokens": prompt_len, "decode_tokens": total}))


class Completion:
    """``engine.completions`` of the sync engine."""

    def __init__(self, engine: weakref.ReferenceType) -> None:
        self.engine = engine

    def create(self, *, prompt: Union[str, list[int]], model: Optional[str] = None, best_of: int = 1,
               echo: bool = False, frequency_penalty: Optional[float] = None,
               presence_penalty: Optional[float] = None, logprobs: Optional[int] = None,
               logit_bias: Optional[dict[int, float]] = None, max_tokens: Optional[int] = None, n: int = 1,
               seed: Optional[int] = None, stop: Optional[Union[str, list[str]]] = None, stream: bool = False,
               stream_options: Optional[dict[str, Any]] = None, suffix: Optional[str] = None,
               temperature: Optional[float] = None, top_p: Optional[float] = None, user: Optional[str] = None,
               response_format: Optional[dict[str, Any]] = None, request_id: Optional[str] = None,
               extra_body: Optional[dict[str, Any]] = None):
        request = {k: v for k, v in locals().items() if k != "self"}
        _fake_state.record("completions.create", **request)
        engine = self.engine()
        deltas, finish, prompt_len = engine._plan(request)
        chunks = engine._chunks(request, deltas, finish, prompt_len)
        if stream:
            return _paced(chunks)
        return _whole(list(chunks), finish, prompt_len, deltas)


class AsyncCompletion:
    """``engine.completions`` of the async engine: ``await create(...)``."""

    def __init__(self, engine: weakref.ReferenceType) -> None:
        self.engine = engine

    async def create(self, *, prompt: Union[str, list[int]], model: Optional[str] = None, best_of: int = 1,
                     echo: bool = False, frequency_penalty: Optional[float] = None,
                     presence_penalty: Optional[float] = None, logprobs: Optional[int] = None,
                     logit_bias: Optional[dict[int, float]] = None, max_tokens: Optional[int] = None, n: int = 1,
                     seed: Optional[int] = None, stop: Optional[Union[str, list[str]]] = None, stream: bool = False,
                     stream_options: Optional[dict[str, Any]] = None, suffix: Optional[str] = None,
                     temperature: Optional[float] = None, top_p: Optional[float] = None, user: Optional[str] = None,
                     response_format: Optional[dict[str, Any]] = None, request_id: Optional[str] = None,
                     extra_body: Optional[dict[str, Any]] = None):
        request = {k: v for k, v in locals().items() if k != "self"}
        _fake_state.record("completions.create", **request)
        engine = self.engine()
        deltas, finish, prompt_len = engine._plan(request)
        chunks = engine._chunks(request, deltas, finish, prompt_len)
        if stream:
            return _apaced(chunks)
        return _whole(list(chunks), finish, prompt_len, deltas)


def _paced(chunks):
    for chunk in chunks:
        if _fake_state.SETTINGS.delay_s:
            time.sleep(_fake_state.SETTINGS.delay_s)
        yield chunk


async def _apaced(chunks):
    for chunk in chunks:
        await asyncio.sleep(_fake_state.SETTINGS.delay_s)
        yield chunk


def _whole(chunks: list[CompletionResponse], finish: str, prompt_len: int,
           deltas: list[list[int]]) -> CompletionResponse:
    total = sum(len(d) for d in deltas)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    return CompletionResponse(id=chunks[0].id if chunks else "cmpl", choices=[CompletionResponseChoice(
        text=text, finish_reason=finish)], usage=CompletionUsage(prompt_len, total, prompt_len + total))


class MLCEngine(_EngineBase):
    def __init__(self, model: str, device: Any = "auto", *, model_lib: Optional[str] = None, mode: str = "local",
                 engine_config: Optional[EngineConfig] = None, enable_tracing: bool = False) -> None:
        super().__init__("MLCEngine", model, device, model_lib=model_lib, mode=mode, engine_config=engine_config,
                         enable_tracing=enable_tracing)
        self.completions = Completion(weakref.ref(self))


class AsyncMLCEngine(_EngineBase):
    def __init__(self, model: str, device: Any = "auto", *, model_lib: Optional[str] = None, mode: str = "local",
                 engine_config: Optional[EngineConfig] = None, enable_tracing: bool = False) -> None:
        super().__init__("AsyncMLCEngine", model, device, model_lib=model_lib, mode=mode, engine_config=engine_config,
                         enable_tracing=enable_tracing)
        self.completions = AsyncCompletion(weakref.ref(self))
