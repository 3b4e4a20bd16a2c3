"""HF Transformers: CPU and CUDA, fp32/fp16/bf16, per-token timestamps through a streamer.

Output length is forced with ``min_new_tokens = max_new_tokens = N`` and greedy decoding is stated
explicitly in a fresh ``GenerationConfig``, so the model's own ``generation_config.json`` (sampling
defaults) never applies. Transformers has no cross-request prompt cache: each ``generate`` call
starts with an empty KV cache.

For the fidelity pass it also stops naturally (``stop_at_eos=True``: no ``min_new_tokens``, the EOS
id ends it and is dropped from the ids) and scores given tokens with one forward pass (``score``:
``log_softmax`` of the logits in float32), which makes it the default fidelity reference.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

from llmcompare import hookimpl
from llmcompare.backend import (
    BackendConfig,
    BackendSpec,
    Capabilities,
    EnvRecipe,
    Generation,
    OptionSpec,
    ReferenceVariant,
    Scores,
    clock,
    dtype_variants,
)

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "float16", "nf4": "float16",
          "gptq": "float16"}
VARIANTS = {"fp32": "float32 weights", "fp16": "float16 weights", "bf16": "bfloat16 weights",
            "int8": "bitsandbytes LLM.int8() weights, fp16 compute (CUDA)",
            "nf4": "bitsandbytes 4-bit NF4 weights, fp16 compute (CUDA)",
            "gptq": "GPTQ 4-bit checkpoint through optimum and gptqmodel's kernels, fp16 compute"}
BNB_VARIANTS = ("int8", "nf4")
QUANTIZED_VARIANTS = (*BNB_VARIANTS, "gptq")


def bnb_config(variant: str, int8_threshold: float | None = None, nf4_compute: str | None = None):
    """The bitsandbytes quantization a variant loads with (stated in full, not left to defaults): int8
    with LLM.int8()'s outlier threshold 6.0 (``int8_threshold``; 0.0 turns the mixed-precision
    decomposition off, as bitsandbytes' own benchmark's ``int8`` configuration does), nf4 computing in
    fp16 (``nf4_compute=bf16``: bitsandbytes' benchmark on Ampere and later)."""
    import torch
    from transformers import BitsAndBytesConfig

    if variant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0 if int8_threshold is None else int8_threshold)
    compute = torch.bfloat16 if nf4_compute == "bf16" else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                              bnb_4bit_use_double_quant=False)


class _TimestampStreamer:
    """Receives each step's token(s) from ``generate``; the first ``put`` is the prompt.

    ``value.tolist()`` copies the token to the host (a device sync on CUDA) *before* the timestamp is
    taken, so a token's time is when the caller could really have it.
    """

    def __init__(self):
        self.ids: list[int] = []
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        tokens = value.reshape(-1).tolist()
        now = clock()
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.extend(int(t) for t in tokens)
        self.times.extend([now] * len(tokens))

    def end(self) -> None:
        pass


def load_model(config: BackendConfig, **from_pretrained_kwargs):
    """The model (in the variant's dtype, on the config's device) and its tokenizer: random weights for a
    ``synthetic:`` shape, else ``from_pretrained`` on the HF directory. Shared by ``transformers-cb``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    opts = config.options
    if opts.get("threads"):
        torch.set_num_threads(int(opts["threads"]))
    dtype = getattr(torch, DTYPES[config.variant or "fp32"])
    model = config.model
    if model.kind == "synthetic" and config.variant not in QUANTIZED_VARIANTS:
        from llmcompare.models import synthetic

        loaded = synthetic.build_model(model.shape, dtype=dtype, device=config.device)
        if from_pretrained_kwargs.get("attn_implementation"):
            loaded.set_attn_implementation(from_pretrained_kwargs["attn_implementation"])
    else:
        if config.variant in BNB_VARIANTS:
            path = _bnb_checkpoint(config)
            bnb = bnb_config(config.variant, opts.get("int8_threshold"), opts.get("nf4_compute"))
            from_pretrained_kwargs = {**from_pretrained_kwargs, "quantization_config": bnb}
        elif config.variant == "gptq":
            path = _gptq_checkpoint(config)
            if opts.get("gptq_backend"):
                from transformers import GPTQConfig

                # only the loading attributes (the kernel) of a passed config are merged into the checkpoint's
                from_pretrained_kwargs = {**from_pretrained_kwargs,
                                          "quantization_config": GPTQConfig(bits=4, backend=opts["gptq_backend"])}
        else:
            path = model.hf_dir()
        try:
            loaded = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, device_map=config.device, trust_remote_code=config.trust_remote_code,
                **from_pretrained_kwargs,
            ).eval()
        except OSError as exc:  # urllib's URLError is an OSError
            if config.variant == "gptq" and type(exc).__name__ == "URLError":
                from llmcompare.errors import UserError

                raise UserError(f"gptqmodel's kernel tried to download its sources and could not ({exc}); on Hopper its"
                                " automatic choice, Machete, fetches CUTLASS at first use. Offline, name another kernel:"
                                " -o transformers.gptq_backend=gptq_marlin") from None
            raise
    tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_dir(), trust_remote_code=config.trust_remote_code)
    return loaded, tokenizer


def _bnb_checkpoint(config: BackendConfig) -> str:
    """What bitsandbytes quantizes while ``from_pretrained`` loads it: a checkpoint on disk. A
    ``synthetic:`` shape is first saved in fp16 (:func:`llmcompare.models.quantize.fp16_source`, cached), so
    the run's seeded weights are the ones quantized."""
    import importlib.util

    from llmcompare.errors import UserError

    if not config.device.startswith("cuda"):
        raise UserError(f"transformers:{config.variant} (bitsandbytes) runs on CUDA only; pass --device cuda")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"transformers:{config.variant} needs bitsandbytes: pip install bitsandbytes")
    if config.model.kind == "synthetic":
        from llmcompare.models.quantize import fp16_source

        return str(fp16_source(config.model))
    return config.model.hf_dir()


def _gptq_checkpoint(config: BackendConfig) -> str:
    """The GPTQ checkpoint ``from_pretrained`` loads (transformers runs it through optimum and gptqmodel):
    the model directory when it already is one, else its fp16 weights quantized by
    :class:`llmcompare.models.quantize.GPTQRecipe` (4-bit, group 128), cached. A ``synthetic:`` shape is first
    saved in fp16, so the run's seeded weights are the ones quantized."""
    import importlib.util

    from llmcompare.errors import UserError
    from llmcompare.models import quantize

    missing = [m for m in ("gptqmodel", "optimum") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"transformers:gptq needs {' and '.join(missing)}: pip install optimum and"
                        f" {quantize.GPTQRecipe.install}")
    model = config.model
    if model.kind == "hf" and quantize.checkpoint_format(model.path) == "gptq":
        return str(model.path)
    return str(quantize.quantize(quantize.fp16_source(model), quantize.GPTQRecipe(), log_dir=config.logs_dir))


def linear_kernel(model) -> str | None:
    """The class of the first quantized linear layer (which kernel a GPTQ model runs), else ``None``."""
    for module in model.modules():
        name = type(module).__name__
        if name.endswith("QuantLinear") or "qlinear" in type(module).__module__:
            return f"{type(module).__module__}.{name}"
    return None


class TransformersBackend:

    def __init__(self, config: BackendConfig):
        self.config = config
        self.model = None
        self.tokenizer = None
        self.extra = {k: v for k, v in config.options.items()
                      if k not in ("compile", "cache_implementation", "threads", "gptq_backend", "int8_threshold",
                                   "nf4_compute")}

    def load(self) -> None:
        import torch

        self.model, self.tokenizer = load_model(self.config, **self.extra)
        self._device = torch.device(self.config.device)

    def eos_ids(self) -> set[int]:
        """The ids that end a sequence: the model config's and the generation config's EOS."""
        out: set[int] = set()
        for cfg in (self.model.config, getattr(self.model, "generation_config", None)):
            eos = getattr(cfg, "eos_token_id", None)
            out.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
        return {int(e) for e in out}

    def generate(self, prompt: Sequence[int] | str, max_new_tokens: int, *, stop_at_eos: bool = False) -> Generation:
        import torch
        from transformers import GenerationConfig

        ids = torch.tensor([list(prompt)], dtype=torch.long, device=self._device)
        eos = sorted(self.eos_ids()) or None
        pad = eos[0] if eos else None
        opts = self.config.options
        compile_kw = {}
        if opts.get("compile"):
            # transformers' own path: a static cache, and generate() compiles the forward with CUDA graphs
            # and marks each step (wrapping forward in torch.compile ourselves failed on an H200 with
            # "accessing tensor output of CUDAGraphs that has been overwritten", 2026-11-22)
            from transformers import CompileConfig

            compile_kw = {"compile_config": CompileConfig(fullgraph=True, mode="reduce-overhead")}
        gen_config = GenerationConfig(
            do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
            min_new_tokens=None if stop_at_eos else max_new_tokens,
            eos_token_id=eos, pad_token_id=pad if pad is not None else 0,
            cache_implementation=opts.get("cache_implementation") or ("static" if opts.get("compile") else None),
            **compile_kw,
        )
        streamer = _TimestampStreamer()
        with torch.inference_mode():
            self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen_config,
                                streamer=streamer)
        if stop_at_eos and streamer.ids and streamer.ids[-1] in (eos or ()):
            del streamer.ids[-1], streamer.times[-1]
            return Generation(streamer.ids, streamer.times, prompt_tokens=ids.shape[1], finish_reason="stop")
        return Generation(streamer.ids, streamer.times, prompt_tokens=ids.shape[1], finish_reason="length")

    def score(self, token_ids: Sequence[int], start: int, top_k: int = 0) -> Scores:
        import torch

        if not 1 <= start <= len(token_ids):
            raise ValueError(f"score: start must be in 1..{len(token_ids)}, got {start}")
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self._device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, start - 1:-1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            target = ids[0, start:]
            chosen = logp.gather(1, target.unsqueeze(1)).squeeze(1).tolist()
            top: list[list[tuple[int, float]]] = []
            if top_k:
                values, indices = logp.topk(top_k, dim=-1)
                top = [list(zip(map(int, i), map(float, v))) for i, v in zip(indices.tolist(), values.tolist())]
        return Scores([float(x) for x in chosen], top)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def engine_version(self) -> dict[str, str]:
        import torch
        import transformers

        v = {"transformers": transformers.__version__, "torch": torch.__version__}
        if self.config.variant in BNB_VARIANTS:
            import bitsandbytes

            v["bitsandbytes"] = bitsandbytes.__version__
        if self.config.variant == "gptq":
            import importlib.metadata

            from llmcompare.models.quantize import describe_checkpoint

            v.update({d: importlib.metadata.version(d) for d in ("gptqmodel", "optimum")})
            v["gptq_checkpoint"] = describe_checkpoint(self.model.name_or_path)
            v["gptq_kernel"] = linear_kernel(self.model) or "none found"
        if self.config.device.startswith("cuda"):
            v["cuda"] = str(torch.version.cuda)
            v["gpu"] = torch.cuda.get_device_name(self._device)
        return v

    def unload(self) -> None:
        self.model = None
        gc.collect()
        import sys

        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


@hookimpl
def register_backends(register):
    register(
        BackendSpec(
            name="transformers",
            target="llmcompare.backends.hf_transformers:TransformersBackend",
            install="pip install 'llmcompare[transformers]'",
            requires=("transformers", "torch"),
            variants=VARIANTS,
            default_variant="fp32",
            weight_dtypes={**dtype_variants(VARIANTS), "nf4": "int4", "gptq": "int4"},  # GPTQ at the recipe's 4 bits
            reference_variants=(ReferenceVariant("fp32", 4), ReferenceVariant("bf16", 2, devices=("cuda",))),
            options={
                "compile": OptionSpec(bool, False, "static KV cache + transformers' torch.compile of the forward"
                                                   " (mode=reduce-overhead, CUDA graphs)"),
                "cache_implementation": OptionSpec(str, None, "KV cache kind, e.g. 'static'", ("static", "dynamic", "offloaded")),
                "threads": OptionSpec(int, None, "torch CPU threads", minimum=1),
                "gptq_backend": OptionSpec(str, None, "gptq variant: gptqmodel's kernel (default auto; on Hopper auto"
                                                      " picks gptq_machete, which downloads CUTLASS to build)",
                                           ("auto", "gptq_marlin", "gptq_triton", "gptq_torch", "gptq_exllama_v2",
                                            "gptq_machete", "gptq_bitblas")),
                "attn_implementation": OptionSpec(str, None, "eager, sdpa, flash_attention_2 ..."),
                "int8_threshold": OptionSpec(float, None, "int8 variant: LLM.int8()'s outlier threshold (default 6.0;"
                                                          " 0 = no mixed-precision decomposition)"),
                "nf4_compute": OptionSpec(str, None, "nf4 variant: the compute dtype (default fp16)", ("fp16", "bf16")),
            },
            passthrough=True,
            capabilities=Capabilities(devices=("cpu", "cuda"), model_formats=("hf", "synthetic"), prefix_cache="none",
                                      natural_stop=True, scores=True),
            description="HF Transformers generate() with a per-token streamer; CPU and CUDA.",
            distributions=("transformers", "torch", "accelerate", "bitsandbytes", "gptqmodel", "optimum"),
            environments={
                # For hosts whose image already has torch and transformers (llmcompare env pack
                # --target-has ...): bitsandbytes' wheel carries its CUDA library (cu130 included).
                "cuda": EnvRecipe(extra="transformers", check_module="transformers, bitsandbytes",
                                  engine_distribution="bitsandbytes", requirements=("bitsandbytes==0.50.2",),
                                  note="transformers with bitsandbytes (the int8 and nf4 variants) on CUDA",
                                  build_note="wheels only: bitsandbytes' wheel ships its CUDA libraries"),
            },
        )
    )
