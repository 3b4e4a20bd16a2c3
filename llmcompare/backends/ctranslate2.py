"""CTranslate2: converts the HF checkpoint to CT2 on first use (cached), streams with generate_tokens.

* Conversion: ``TransformersConverter(dir).convert(out, quantization=...)``, cached under the user
  cache dir and keyed by the source's fingerprint and the quantization.
* Fixed length: ``generate_tokens(tokens, max_length=N, min_length=N, sampling_topk=1)``; with
  ``generate_tokens`` ``max_length`` counts new tokens only (checked against 4.8.5), and
  ``min_length`` keeps EOS from ending it early.
* Input: token *strings* (``convert_ids_to_tokens`` of our ids); CT2 adds no special tokens.
* No prefix cache unless ``static_prompt`` is passed, which this adapter never does.
* Natural stop (fidelity pass): no ``min_length``; the stream ends with the EOS step
  (``is_last``), whose token is dropped.
* Scores: ``score_batch`` gives the log-probability of every token after the first; it gives no
  alternatives, so ``top`` stays empty.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

from llmcompare import hookimpl
from llmcompare.backend import (
    BackendConfig,
    BackendSpec,
    Capabilities,
    Generation,
    OptionSpec,
    Scores,
    clock,
    dtype_variants,
)

VARIANTS = {
    "int8": "int8 weights (CPU and CUDA)",
    "float32": "float32 weights",
    "int8_float32": "int8 weights, float32 activations",
    "float16": "float16 (CUDA)",
    "bfloat16": "bfloat16 (CUDA)",
    "int8_float16": "int8 weights, float16 activations (CUDA)",
}


class CTranslate2Backend:

    def __init__(self, config: BackendConfig):
        self.config = config
        self.generator = None
        self.tokenizer = None

    def converted_dir(self) -> str:
        import ctranslate2

        from llmcompare.models import cached_build, fingerprint

        src = self.config.model.hf_dir()
        quant = self.config.variant or "int8"
        key = {"ct2_from_hf": fingerprint(src), "quantization": quant, "ctranslate2": ctranslate2.__version__}

        def convert(out) -> None:
            converter = ctranslate2.converters.TransformersConverter(
                src, trust_remote_code=self.config.trust_remote_code
            )
            converter.convert(str(out), quantization=quant, force=True)

        return str(cached_build("ct2", key, convert))

    def load(self) -> None:
        import ctranslate2
        from transformers import AutoTokenizer

        opts = dict(self.config.options)
        path = self.converted_dir()
        compute_type = opts.pop("compute_type", None) or self.config.variant or "int8"
        self.generator = ctranslate2.Generator(path, device=self.config.device, compute_type=compute_type, **opts)
        self.tokenizer = AutoTokenizer.from_pretrained(self.config.model.tokenizer_dir(),
                                                       trust_remote_code=self.config.trust_remote_code)

    def generate(self, prompt: Sequence[int] | str, max_new_tokens: int, *, stop_at_eos: bool = False) -> Generation:
        tokens = self.tokenizer.convert_ids_to_tokens(list(prompt))
        ids: list[int] = []
        times: list[float] = []
        finish = "length"
        stream = self.generator.generate_tokens(
            tokens, max_length=max_new_tokens, min_length=0 if stop_at_eos else max_new_tokens, sampling_topk=1,
        )
        try:
            for step in stream:
                if stop_at_eos and step.is_last and int(step.token_id) in self.eos_ids:
                    finish = "stop"
                    break
                ids.append(int(step.token_id))
                times.append(clock())
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # breaking out of the stream does not stop generation by itself
        return Generation(ids, times, prompt_tokens=len(tokens), finish_reason=finish)

    @property
    def eos_ids(self) -> set[int]:
        return {int(i) for i in (self.tokenizer.eos_token_id,) if i is not None}

    def score(self, token_ids: Sequence[int], start: int, top_k: int = 0) -> Scores:
        if not 1 <= start <= len(token_ids):
            raise ValueError(f"score: start must be in 1..{len(token_ids)}, got {start}")
        tokens = self.tokenizer.convert_ids_to_tokens(list(token_ids))
        result = self.generator.score_batch([tokens], max_input_length=0)[0]
        return Scores([float(x) for x in result.log_probs[start - 1:]])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def engine_version(self) -> dict[str, str]:
        import ctranslate2

        return {"ctranslate2": ctranslate2.__version__, "compute_type": self.generator.compute_type}

    def unload(self) -> None:
        if self.generator is not None:
            self.generator.unload_model()
        self.generator = None
        gc.collect()


@hookimpl
def register_backends(register):
    register(
        BackendSpec(
            name="ctranslate2",
            target="llmcompare.backends.ctranslate2:CTranslate2Backend",
            install="pip install 'llmcompare[ctranslate2]'",
            requires=("ctranslate2", "transformers", "torch"),
            variants=VARIANTS,
            default_variant="int8",
            weight_dtypes={**dtype_variants(VARIANTS), "int8_float16": "int8", "int8_bfloat16": "int8",
                           "int8_float32": "int8"},
            options={
                "inter_threads": OptionSpec(int, None, "parallel translators (batches)", minimum=1),
                "intra_threads": OptionSpec(int, None, "threads per translator (0 = default)"),
                "compute_type": OptionSpec(str, None, "override the compute type at load", tuple(VARIANTS) + ("auto", "default")),
            },
            passthrough=True,
            capabilities=Capabilities(devices=("cpu", "cuda"), model_formats=("hf", "synthetic"), prefix_cache="none",
                                      natural_stop=True, scores=True),
            description="CTranslate2 Generator, HF model converted on first use and cached.",
            distributions=("ctranslate2", "transformers"),
        )
    )
