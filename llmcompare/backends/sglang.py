"""SGLang's offline ``Engine`` in process, streamed through ``async_generate``.

* Load: ``sglang.Engine(model_path=DIR, disable_radix_cache=True, skip_tokenizer_init=True, ...)``;
  undeclared ``--option`` keys are passed on as ``ServerArgs`` fields.
* Prefix cache: the radix cache is disabled; the option cannot turn it back on.
* Ids in, ids out: the prompt goes in as ``input_ids``; with ``skip_tokenizer_init`` (the default) no
  detokenizer runs and each streamed dict carries ``output_ids`` only.
* Fixed length and greedy: ``sampling_params={"temperature": 0.0, "max_new_tokens": N,
  "ignore_eos": True}``.
* Streaming: ``await engine.async_generate(input_ids=ids, sampling_params=..., stream=True)`` is an
  async generator of dicts. By default ``output_ids`` is cumulative, and intermediate dicts hand out
  the engine's own list, which keeps growing after the dict is yielded, so the new ids are sliced off
  at once; with ``incremental_streaming_output=True`` each dict holds only new ids. One dict can hold
  several tokens: they share its time. The last dict's ``meta_info`` has ``finish_reason``
  (``{"type": "length", ...}``), ``prompt_tokens`` and ``completion_tokens``.
* Only ``astream``: the engine binds its tokenizer manager to the event loop of its first request,
  and ``Engine.generate`` drives a loop of its own, so one engine cannot serve both. The session runs
  ``astream`` on its one loop and offers the synchronous path through it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Sequence
from typing import Any

from llmcompare import hookimpl
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, Chunk, OptionSpec, clock
from llmcompare.errors import RequestFailed, UserError


class SGLangBackend:

    def __init__(self, config: BackendConfig):
        self.config = config
        opts = dict(config.options)
        if "disable_radix_cache" in opts:
            raise UserError("backend 'sglang' keeps the radix cache off; the disable_radix_cache option is not allowed")
        self.skip_tokenizer_init: bool = opts.pop("skip_tokenizer_init", True)
        self.engine_args: dict[str, Any] = opts
        self.engine = None
        self.incremental = False
        self._tokenizer = None

    def load(self) -> None:
        import sglang

        kwargs: dict[str, Any] = dict(
            model_path=self.config.model.hf_dir(), disable_radix_cache=True,
            skip_tokenizer_init=self.skip_tokenizer_init, device=self.config.device,
            trust_remote_code=self.config.trust_remote_code, random_seed=0, log_level="error",
        )
        kwargs.update(self.engine_args)
        self.engine = sglang.Engine(**kwargs)
        self.incremental = bool(getattr(self.engine.server_args, "incremental_streaming_output", False))

    @staticmethod
    def sampling_params(max_new_tokens: int) -> dict[str, Any]:
        return {"temperature": 0.0, "max_new_tokens": int(max_new_tokens), "ignore_eos": True}

    async def astream(self, prompt: Sequence[int], max_new_tokens: int) -> AsyncIterator[Chunk]:
        seen = 0
        finished = False
        try:
            stream = await self.engine.async_generate(input_ids=[int(t) for t in prompt], stream=True,
                                                      sampling_params=self.sampling_params(max_new_tokens))
            async with contextlib.aclosing(stream):  # a caller that stops early ends the engine's stream
                async for out in stream:
                    t = clock()
                    ids = out.get("output_ids") or []
                    new = [int(x) for x in (ids if self.incremental else ids[seen:])]  # a copy, taken now
                    seen += len(new)
                    meta = out.get("meta_info") or {}
                    finish = meta.get("finish_reason")
                    if finish and finish.get("type") == "abort":
                        raise RequestFailed("engine", f"SGLang aborted the request: {finish.get('message', '')}")
                    if finish is None:
                        if new:
                            yield Chunk(new, t)
                        continue
                    finished = True
                    yield Chunk(new, t, finish_reason=finish.get("type"), prompt_tokens=meta.get("prompt_tokens"),
                                engine_output_tokens=meta.get("completion_tokens"))
        except RequestFailed:
            raise
        except Exception as exc:
            raise RequestFailed("engine", f"SGLang: {type(exc).__name__}: {exc}") from exc
        if not finished:
            raise RequestFailed("stream_cut", "SGLang's stream ended without a finish reason")

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.config.model.hf_dir(),
                                                            trust_remote_code=self.config.trust_remote_code)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def engine_version(self) -> dict[str, str]:
        import sglang

        return {"sglang": str(sglang.__version__)}

    def unload(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
        self.engine = None
        gc.collect()


@hookimpl
def register_backends(register):
    register(
        BackendSpec(
            name="sglang",
            target="llmcompare.backends.sglang:SGLangBackend",
            install="pip install 'llmcompare[sglang]'",
            requires=("sglang",),
            options={
                "tp_size": OptionSpec(int, None, "tensor parallel degree", minimum=1),
                "dtype": OptionSpec(str, None, "weights dtype",
                                    ("auto", "half", "float16", "bfloat16", "float", "float32")),
                "mem_fraction_static": OptionSpec(float, None, "fraction of GPU memory for weights and KV cache"),
                "context_length": OptionSpec(int, None, "longest sequence (prompt + output)", minimum=1),
                "max_running_requests": OptionSpec(int, None, "most requests in one batch", minimum=1),
                "quantization": OptionSpec(str, None, "SGLang quantization method (awq, gptq, fp8...)"),
                "skip_tokenizer_init": OptionSpec(bool, True, "ids only, no detokenizer process"),
                "incremental_streaming_output": OptionSpec(bool, None, "stream new ids only (default: cumulative)"),
            },
            passthrough=True,
            capabilities=Capabilities(accepts_token_ids=True, concurrent=True, devices=("cuda", "cpu"), in_process=True,
                                      model_formats=("hf",), prefix_cache="disabled"),
            description="SGLang offline Engine, async_generate streams; radix cache off.",
            distributions=("sglang",),
        )
    )
