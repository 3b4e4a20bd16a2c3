"""llama.cpp through llama-cpp-python, on a GGUF file, token by token.

The file (:func:`gguf_file`, shared with ``llamacpp-server``):

* a GGUF model (``--model x.gguf``, or the default SmolLM2 Q4_1) is loaded as it is, with no variant;
* any other model (``synthetic:<shape>``, an HF Llama directory) needs a variant, ``f32``, ``f16``,
  ``q8_0`` or ``q4_0``: the GGUF of that type made from the model's fp16 source
  (:class:`llmcompare.models.quantize.GGUFRecipe`, on the CPU, cached), so llama.cpp runs the same weights
  as every other engine. The file is chosen (and converted, the first time) when the backend is
  built, before ``load()``, so a conversion is never counted as load time. The environment block
  records the file, its tensor types and its origin. The choice runs in a child process
  (``python -m llmcompare.models.quantize gguf ... --json``), so the llama.cpp worker never imports torch
  (which the fp16 source needs) and the libraries torch brings. On the H200 machine a CUDA build of
  llama.cpp whose ``libggml-cuda.so`` carried a static libstdc++ crashed whenever another library
  had loaded libstdc++ first (torch, or numpy): benchmarks/results/2026-11-23-h200, and the build flag
  that fixes it in :data:`CUDA_CMAKE_ARGS` (``-Wl,--exclude-libs,ALL``).

* Fixed length: ``Llama.generate(tokens, temp=0.0, ...)`` yields token ids one at a time and never
  stops on EOS by itself; the adapter takes exactly N.
* Prefix cache: ``Llama`` reuses the longest matching prefix of the previous prompt, so ``reset()``
  runs before every request and ``generate(..., reset=True)`` is passed as well.
* Sampling: greedy is stated explicitly (temp 0, top-k 1, repeat penalty 1.0); the library's own
  ``create_completion`` defaults (sampling, 16 tokens) are never used.
* Natural stop (fidelity pass): the loop ends at an end-of-generation token
  (``llama_vocab_is_eog``), which is not returned.
* Scores: the tokens are evaluated one at a time on a fresh context state and the last position's
  logits are read after each (``llama_get_logits``), so ``logits_all`` (which would add an lm-head
  pass over every prompt token to the timed requests) stays off.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from llmcompare import hookimpl
from llmcompare.backend import (
    BackendConfig,
    BackendSpec,
    Capabilities,
    EnvRecipe,
    Generation,
    OptionSpec,
    Scores,
    clock,
)
from llmcompare.errors import UserError

GGUF_VARIANT_FORMATS = (("gguf", False), ("hf", True), ("synthetic", True))
"""A GGUF model runs as it is (no variant); any other needs the type to convert it to (both backends)."""

VARIANTS = {
    "f32": "a non-GGUF model converted to a float32 GGUF (llmcompare.models.quantize.GGUFRecipe, cached)",
    "f16": "a non-GGUF model converted to a float16 GGUF, norms float32 (GGUFRecipe, cached)",
    "q8_0": "the f16 GGUF quantized to Q8_0 by llama.cpp's quantizer (GGUFRecipe, cached)",
    "q4_0": "the f16 GGUF quantized to Q4_0 by llama.cpp's quantizer (GGUFRecipe, cached)",
}
"""Variant -> what it loads. A GGUF model takes none: its own file runs."""
GGUF_WEIGHT_DTYPES = {"f32": "fp32", "f16": "fp16", "q8_0": "int8", "q4_0": "int4"}  # Q4_0 is 4.5 bits a weight
"""The weight type each variant is read in at decode, for the bandwidth floor (both llama.cpp backends)."""


@dataclass(frozen=True)
class GGUFChoice:
    """The GGUF file a llama.cpp backend loads and where it came from."""

    path: str
    origin: str

    def facts(self) -> dict[str, str]:
        """What the environment block records: the file, its type and tensor types, its origin."""
        from llmcompare.models.hf_to_gguf import describe

        return {"llamacpp_gguf": self.path, "llamacpp_gguf_type": describe(self.path),
                "llamacpp_gguf_origin": self.origin}


def gguf_file(config: BackendConfig, backend: str) -> GGUFChoice:
    """The file to load: a GGUF model's own file (no variant allowed), or for any other model the
    variant's cached conversion of its fp16 source (made now if absent; its log goes to the run's
    ``logs/``), found by a child process that keeps torch out of this one. A missing or needless variant,
    or a model that cannot be converted, is a one-line :class:`UserError`."""
    model = config.model
    if model.kind == "gguf":
        if config.variant:
            held = f" ({model.quantization})" if model.quantization else ""
            raise UserError(f"the model is already a GGUF file{held}; drop the variant (run {backend}, not"
                            f" {backend}:{config.variant})")
        return GGUFChoice(model.gguf_path(), "the model's own file")
    if not config.variant:
        raise UserError(f"backend {backend!r} runs GGUF files; for the {model.kind} model {model.ref!r} pick the"
                        f" type to convert it to: {', '.join(f'{backend}:{v}' for v in VARIANTS)}")
    argv = [sys.executable, "-m", "llmcompare.models.quantize", "gguf", "-m", model.ref, "--type", config.variant, "--json"]
    if config.logs_dir:
        argv += ["--log-dir", str(config.logs_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    lines = done.stderr.strip().splitlines()
    if done.returncode == 2 and lines and lines[-1].startswith("error: "):  # quantize's one-line UserError
        raise UserError(lines[-1].removeprefix("error: "))
    if done.returncode:
        raise RuntimeError(f"the {config.variant} GGUF of {model.ref!r} failed (exit status {done.returncode}): "
                           + " | ".join(lines[-5:]))
    printed = done.stdout.strip().splitlines()
    if not printed:
        raise RuntimeError(f"the {config.variant} GGUF of {model.ref!r}: the converter printed no checkpoint")
    made = json.loads(printed[-1])
    return GGUFChoice(made["checkpoint"], f"llmcompare.models.quantize GGUFRecipe(type={config.variant!r}) of {made['source']}")


class LlamaCppBackend:

    def __init__(self, config: BackendConfig):
        self.config = config
        self.llm = None
        self.gguf = gguf_file(config, "llamacpp")  # before load(): a first conversion is not load time

    def load(self) -> None:
        from llama_cpp import Llama

        opts = dict(self.config.options)
        n_gpu_layers = opts.pop("n_gpu_layers", -1 if self.config.device.startswith("cuda") else 0)
        self.llm = Llama(
            model_path=self.gguf.path,
            n_ctx=opts.pop("n_ctx", 2048),
            n_gpu_layers=n_gpu_layers,
            verbose=opts.pop("verbose", False),
            seed=opts.pop("seed", 0),
            **opts,
        )

    def generate(self, prompt: Sequence[int] | str, max_new_tokens: int, *, stop_at_eos: bool = False) -> Generation:
        import llama_cpp

        ids: list[int] = []
        times: list[float] = []
        finish = "length"
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model) if stop_at_eos else None
        self.llm.reset()
        stream = self.llm.generate(list(prompt), temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                   repeat_penalty=1.0, reset=True)
        try:
            for token in stream:
                if vocab is not None and llama_cpp.llama_vocab_is_eog(vocab, int(token)):
                    finish = "stop"
                    break
                ids.append(int(token))
                times.append(clock())
                if len(ids) >= max_new_tokens:
                    break
        finally:
            stream.close()
        return Generation(ids, times, prompt_tokens=len(prompt), finish_reason=finish)

    def score(self, token_ids: Sequence[int], start: int, top_k: int = 0) -> Scores:
        import llama_cpp
        import numpy as np

        if not 1 <= start <= len(token_ids):
            raise ValueError(f"score: start must be in 1..{len(token_ids)}, got {start}")
        n_vocab = self.llm.n_vocab()
        self.llm.reset()
        self.llm.eval(list(token_ids[:start]))
        logprobs: list[float] = []
        top: list[list[tuple[int, float]]] = []
        for pos in range(start, len(token_ids)):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.llm.ctx), shape=(n_vocab,)).astype(np.float64)
            logp = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
            logprobs.append(float(logp[token_ids[pos]]))
            if top_k:
                best = np.argsort(-logp)[:top_k]
                top.append([(int(i), float(logp[i])) for i in best])
            if pos + 1 < len(token_ids):
                self.llm.eval([int(token_ids[pos])])
        self.llm.reset()
        return Scores(logprobs, top)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def engine_version(self) -> dict[str, str]:
        import llama_cpp

        return {"llama_cpp_python": llama_cpp.__version__, **self.gguf.facts()}

    def unload(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.llm = None
        gc.collect()


#: llama-cpp-python with CUDA: PyPI has only its source package, built where the environment is made.
#: The flags are the ones the H200 results were measured with (docs/backends/llamacpp.md says why each):
#: CUDA on, no native CPU tuning, only the library (no tests, examples, tools, server or multimodal
#: library), and the static libstdc++ of the CUDA library kept private (-Wl,--exclude-libs,ALL), without
#: which the library crashed once numpy was loaded. CMAKE_CUDA_ARCHITECTURES=native builds for the GPU
#: of the machine that builds it; set CMAKE_ARGS yourself to build for another.
CUDA_CMAKE_ARGS = ("-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF"
                   " -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF"
                   " -DLLAVA_BUILD=OFF -DGGML_CCACHE=OFF -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--exclude-libs,ALL")
CUDA_RECIPE = EnvRecipe(
    extra="llamacpp-server", check_module="llama_cpp, llama_cpp.server", engine_distribution="llama_cpp_python",
    requirements=("llama-cpp-python==0.3.36",), source_packages=("llama-cpp-python",),
    build_env=(("CMAKE_ARGS", CUDA_CMAKE_ARGS), ("CMAKE_BUILD_PARALLEL_LEVEL", "16")),
    build_needs=("nvcc", "cmake", "ninja"), build_wheels=("scikit-build-core>=0.9.2",),
    note="llama-cpp-python with CUDA, and its OpenAI server (the llamacpp-server backend uses this environment too)",
    build_note="llama-cpp-python's source package is built there by pip with CMAKE_ARGS (CUDA on; 257-442 s with"
               " 16 jobs on an H200 host), without build isolation: the host's nvcc, cmake and ninja, and the pack's scikit-build-core")


@hookimpl
def register_backends(register):
    register(
        BackendSpec(
            name="llamacpp",
            target="llmcompare.backends.llamacpp:LlamaCppBackend",
            install="pip install 'llmcompare[llamacpp]'",
            requires=("llama_cpp",),
            options={
                "n_threads": OptionSpec(int, None, "CPU threads for generation", minimum=1),
                "n_ctx": OptionSpec(int, 2048, "context size", minimum=1),
                "n_gpu_layers": OptionSpec(int, None, "layers on the GPU (-1 = all)", minimum=-1),
                "n_batch": OptionSpec(int, None, "prompt batch size", minimum=1),
            },
            variants=VARIANTS,
            weight_dtypes=GGUF_WEIGHT_DTYPES,
            passthrough=True,
            crash_hint="on CUDA, a llama.cpp build whose libggml-cuda exports a static libstdc++ crashes once numpy"
                       " is loaded: docs/backends/llamacpp.md says how to check it and rebuild",
            capabilities=Capabilities(devices=("cpu", "cuda"), model_formats=("gguf", "hf", "synthetic"),
                                      prefix_cache="reset", natural_stop=True, scores=True,
                                      variant_formats=GGUF_VARIANT_FORMATS),
            description="llama-cpp-python on a GGUF file (another model: its cached f32/f16/q8_0/q4_0 conversion);"
                        " prompt cache reset before every request.",
            distributions=("llama_cpp_python",),
            environments={"cuda": CUDA_RECIPE},
        )
    )
