"""HF Transformers continuous batching, in process: many requests in flight through one model.

* Load: ``AutoModelForCausalLM.from_pretrained(dir, dtype, attn_implementation="paged|eager")``
  (``sdpa_paged`` is refused on the CPU; pass ``attn_implementation`` for a GPU), then
  ``model.init_continuous_batching(generation_config)`` and ``manager.start()``: a background thread
  runs the batches.
* Greedy and forced length: ``GenerationConfig(do_sample=False, eos_token_id=-1)`` (no EOS can stop a
  request), and each request asks for ``max_new_tokens=N`` with ``eos_token_id=-1``; the fidelity
  pass (``stop_at_eos``) passes the model's EOS id instead.
* Streaming: ``add_request(ids, max_new_tokens=N, streaming=True)`` and ``register_result_handler``,
  which calls back on the session's event loop with the request's tokens so far; the new ones are
  timestamped when the callback runs (they are host ints by then).
* Prefix cache: off (``allow_block_sharing=False``), so no request reuses another's KV blocks.
* Memory: on the CPU the KV cache is ``num_blocks`` pages of 256 tokens (default 64: 16k tokens);
  on a GPU the manager sizes it from free memory unless ``num_blocks`` is given.

Used by the load driver through ``astream`` (``concurrent=True``); the latency driver gets the same
path through the session, one request at a time.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import AsyncIterator, Sequence

from llmcompare import hookimpl
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, Chunk, OptionSpec, clock, dtype_variants
from llmcompare.backends.hf_transformers import VARIANTS
from llmcompare.errors import RequestFailed

#: KV-cache pages (of 256 tokens) on the CPU: 16k tokens.
CPU_BLOCKS = 64


class TransformersCBBackend:
    def __init__(self, config: BackendConfig):
        self.config = config
        self.model = None
        self.manager = None
        self.tokenizer = None
        self._ids = itertools.count()

    def load(self) -> None:
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        from llmcompare.backends.hf_transformers import load_model

        opts = self.config.options
        self.model, self.tokenizer = load_model(self.config, attn_implementation=opts.get("attn_implementation")
                                                or "paged|eager")
        gen = GenerationConfig(do_sample=False, num_beams=1, eos_token_id=-1, pad_token_id=0,
                               max_new_tokens=int(opts.get("max_new_tokens_default", 256)))
        # Left alone, the manager sizes its KV cache from free memory (13.6 GiB of RSS seen on a 24 GiB
        # CPU machine): on the CPU the cache is CPU_BLOCKS pages unless num_blocks says otherwise.
        blocks = opts.get("num_blocks") or (CPU_BLOCKS if self.config.device == "cpu" else None)
        cb = ContinuousBatchingConfig(num_blocks=blocks, allow_block_sharing=False)
        self.manager = self.model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
        self.manager.start()

    async def astream(self, prompt: Sequence[int], max_new_tokens: int, *,
                      stop_at_eos: bool = False) -> AsyncIterator[Chunk]:
        if self.manager is None:
            raise RuntimeError("transformers-cb is not loaded")
        queue: asyncio.Queue = asyncio.Queue()
        request_id = f"llmcompare-{next(self._ids)}"
        self.manager.register_result_handler(request_id, lambda out: queue.put_nowait((clock(), out)))
        eos = self.model.config.eos_token_id
        eos = (eos[0] if isinstance(eos, list) else eos) if stop_at_eos and eos is not None else -1
        added = self.manager.add_request(list(prompt), request_id=request_id, max_new_tokens=max_new_tokens,
                                         streaming=True, eos_token_id=eos)
        if added is None:
            raise RequestFailed("overload", "the continuous batching manager refused the request")
        seen = 0
        while True:
            t, out = await queue.get()
            if out.error is not None:
                raise RequestFailed("engine", f"continuous batching failed the request: {out.error}")
            tokens = list(out.generated_tokens)
            new = [int(x) for x in tokens[seen:]]
            seen = len(tokens)
            if out.is_finished():
                yield Chunk(new, t, finish_reason="length" if seen >= max_new_tokens else "stop",
                            prompt_tokens=len(out.prompt_ids) or len(prompt))
                return
            if new:
                yield Chunk(new, t)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def engine_version(self) -> dict[str, str]:
        import torch
        import transformers

        return {"transformers": transformers.__version__, "torch": torch.__version__,
                "attn_implementation": str(self.model.config._attn_implementation)}

    def unload(self) -> None:
        if self.manager is not None:
            self.manager.stop(block=True)
        self.manager = None
        if self.model is not None and hasattr(self.model, "destroy_cached_continuous_batching_manager"):
            self.model.destroy_cached_continuous_batching_manager()
        self.model = None
        gc.collect()


@hookimpl
def register_backends(register):
    register(
        BackendSpec(
            name="transformers-cb",
            target="llmcompare.backends.transformers_cb:TransformersCBBackend",
            install="pip install 'llmcompare[transformers]'",
            requires=("transformers", "torch"),
            variants=VARIANTS,
            default_variant="fp32",
            weight_dtypes=dtype_variants(VARIANTS),
            options={
                "threads": OptionSpec(int, None, "torch CPU threads", minimum=1),
                "attn_implementation": OptionSpec(str, None, "paged attention kind (default paged|eager)"),
                "max_new_tokens_default": OptionSpec(int, 256, "the manager's default output length", minimum=1),
                "num_blocks": OptionSpec(int, None, "KV-cache pages of 256 tokens (default: 64 on the CPU)", minimum=1),
            },
            capabilities=Capabilities(devices=("cpu", "cuda"), model_formats=("hf", "synthetic"), prefix_cache="disabled",
                                      concurrent=True, natural_stop=True),
            description="HF Transformers continuous batching (ContinuousBatchingManager) in process.",
            distributions=("transformers", "torch"),
        )
    )
