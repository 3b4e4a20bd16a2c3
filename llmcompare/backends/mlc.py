"""MLC LLM in process: ``AsyncMLCEngine`` (``mlc``) or ``MLCEngine`` (``mlc-sync``), on MLC weights.

* Weights: an MLC model directory (``mlc-chat-config.json`` and weight shards). Given ``-o model_dir``
  it is used as is (a local directory or an ``HF://`` reference MLC resolves itself); otherwise the
  HF checkpoint is converted once with ``python -m mlc_llm convert_weight`` and ``gen_config`` (the
  variant names the quantization, ``q4f16_1`` by default, as in the seed study) and cached by
  :func:`llmcompare.models.cached_build`. Without ``-o model_lib`` MLC compiles the model library
  just in time on first load and caches it itself (``MLC_JIT_POLICY``: ON, OFF, REDO, READONLY; the
  ``jit_policy`` option sets it before ``mlc_llm`` is imported, which is when MLC reads it).
* Prefix cache: ``EngineConfig(prefix_cache_mode="disable")``; the option cannot turn it back on.
* Fixed length and greedy: ``completions.create(prompt=ids, max_tokens=N, temperature=0, top_p=1,
  frequency_penalty=0, presence_penalty=0, extra_body={"debug_config": {"ignore_eos": True}})``;
  ``ignore_eos`` also disables the conversation template's stop tokens and strings.
* Counting: MLC's Python API streams *text*, never token ids. The adapter asks for ``logprobs=0``,
  which adds one logprob entry per generated token to each chunk, so a chunk's token count is the
  length of its ``logprobs.tokens``. MLC drops a chunk whose text is empty (a token that ends inside
  a UTF-8 character), logprobs included; the final chunk's ``usage.completion_tokens`` is the
  engine's exact count, and any tokens it has beyond those counted are put on that final chunk (their
  time is an upper bound). ``count_source`` is ``usage``. Asking for logprobs costs one log-softmax
  per token on the device.
* Versions come from the installed wheels' metadata (``mlc-llm-nightly-*``, ``mlc-ai-nightly-*``):
  ``mlc_llm.__version__`` is a hard-coded string.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from llmcompare import hookimpl
from llmcompare.backend import (
    BackendConfig,
    BackendSpec,
    Capabilities,
    Chunk,
    Generation,
    OptionSpec,
    clock,
    collect,
)
from llmcompare.errors import RequestFailed, UserError

QUANTIZATIONS = {
    "q4f16_1": "4-bit grouped weights, fp16 activations (the seed study's MLC run)",
    "q4f32_1": "4-bit grouped weights, fp32 activations",
    "q3f16_1": "3-bit grouped weights, fp16 activations",
    "q0f16": "no quantization, fp16",
    "q0bf16": "no quantization, bf16",
    "q0f32": "no quantization, fp32",
}
INSTALL = ("pip install --pre -U -f https://mlc.ai/wheels mlc-llm-nightly-cu128 mlc-ai-nightly-cu128"
           "  (MLC is not on PyPI; other builds in docs/backends/mlc.md)")
CONVERTER_VERSION = "1"


class _MLCBase:
    """What both engines share: the weights, the request, counting, versions and unloading."""

    def __init__(self, config: BackendConfig):
        self.config = config
        opts = dict(config.options)
        self.model_dir_option: str | None = opts.pop("model_dir", None)
        self.model_lib: str | None = opts.pop("model_lib", None)
        self.mode: str = opts.pop("mode", "server")
        self.conv_template: str = opts.pop("conv_template", "LM")
        self.context_window_size: int | None = opts.pop("context_window_size", None)
        self.jit_policy: str | None = opts.pop("jit_policy", None)
        if "prefix_cache_mode" in opts:
            raise UserError("backend 'mlc' keeps MLC's prefix cache off; the prefix_cache_mode option is not allowed")
        self.engine_args: dict[str, Any] = opts
        """Passed through to ``EngineConfig`` (``max_num_sequence``, ``prefill_chunk_size``...)."""
        self.quantization = config.variant or "q4f16_1"
        self.engine = None
        self.model_dir: str | None = None

    # ---- weights ----
    def prepare_model_dir(self) -> str:
        """The MLC model directory to load: ``-o model_dir``, or the cached conversion of the model."""
        if self.model_dir_option:
            if self.model_dir_option.startswith("HF://"):
                return self.model_dir_option
            path = Path(self.model_dir_option).expanduser()
            if not (path / "mlc-chat-config.json").is_file():
                raise UserError(f"model_dir {self.model_dir_option!r} has no mlc-chat-config.json; pass the output"
                                " directory of 'mlc_llm gen_config' (see docs/backends/mlc.md)")
            held = json.loads((path / "mlc-chat-config.json").read_text()).get("quantization")
            if held and held != self.quantization:
                raise UserError(f"model_dir holds {held} weights but the variant is {self.quantization}; "
                                f"run it as mlc:{held} so the results are labelled with what ran")
            return str(path)
        from llmcompare.models import cached_build, fingerprint

        src = self.config.model.hf_dir()
        if not Path(src, "config.json").is_file():
            raise UserError(f"MLC converts a local HF model directory, not {src!r}; download it first or pass"
                            " -o mlc.model_dir=<an MLC model directory>")
        key = {"mlc_from_hf": fingerprint(src), "quantization": self.quantization, "conv_template": self.conv_template,
               "context_window_size": self.context_window_size, "mlc": _versions(), "v": CONVERTER_VERSION}
        return str(cached_build("mlc", key, lambda out: self._convert(src, out)))

    def _convert(self, src: str, out: Path) -> None:
        """``convert_weight`` then ``gen_config``, as documented by MLC, from argv lists."""
        device = self.config.device or "auto"
        self._mlc_cli(["convert_weight", src, "--quantization", self.quantization, "--device", device, "-o", str(out)])
        gen = ["gen_config", src, "--quantization", self.quantization, "--conv-template", self.conv_template]
        if self.context_window_size:
            gen += ["--context-window-size", str(self.context_window_size)]
        self._mlc_cli(gen + ["-o", str(out)])

    def _mlc_cli(self, args: list[str]) -> None:
        argv = [sys.executable, "-m", "mlc_llm", *args]
        log_path = Path(self.config.logs_dir) / "mlc-convert.log" if self.config.logs_dir else None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"$ {' '.join(argv)}\n")
                log.flush()
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            tail = f"see {log_path}"
        else:
            done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        if done.returncode != 0:
            raise RuntimeError(f"mlc_llm {args[0]} failed with status {done.returncode}: {tail}")

    def import_engine(self):
        """Import ``mlc_llm``, after setting ``MLC_JIT_POLICY``: MLC reads it once, at import."""
        if self.jit_policy:
            os.environ["MLC_JIT_POLICY"] = self.jit_policy
        import mlc_llm

        return mlc_llm

    def engine_config(self):
        from mlc_llm.serve import EngineConfig

        return EngineConfig(prefix_cache_mode="disable", **self.engine_args)

    def engine_kwargs(self) -> dict[str, Any]:
        return dict(device=self.config.device, model_lib=self.model_lib, mode=self.mode,
                    engine_config=self.engine_config())

    # ---- requests ----
    @staticmethod
    def request(prompt: Sequence[int], max_new_tokens: int) -> dict[str, Any]:
        """Greedy, exactly ``max_new_tokens`` (EOS and stop strings ignored), usage and logprobs on."""
        return dict(
            prompt=[int(t) for t in prompt],
            max_tokens=max_new_tokens, temperature=0.0, top_p=1.0, frequency_penalty=0.0, presence_penalty=0.0,
            logprobs=0, stream=True, stream_options={"include_usage": True},
            extra_body={"debug_config": {"ignore_eos": True}},
        )

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenizer.encode(text))

    def engine_version(self) -> dict[str, str]:
        versions = _versions()
        if not any(name.startswith("mlc-llm") for name in versions):
            import mlc_llm

            versions["mlc_llm"] = f"{mlc_llm.__version__} (hard-coded in mlc_llm; no mlc-llm wheel metadata found)"
        versions["mlc_quantization"] = self.quantization
        versions["mlc_model_lib"] = Path(self.model_lib).name if self.model_lib else "jit"
        return versions

    def unload(self) -> None:
        if self.engine is not None:
            self.engine.terminate()
        self.engine = None
        gc.collect()


class MLCBackend(_MLCBase):
    """``AsyncMLCEngine``: many requests in flight, each an async stream of chunks."""

    def load(self) -> None:
        mlc_llm = self.import_engine()
        self.model_dir = self.prepare_model_dir()
        self.engine = mlc_llm.AsyncMLCEngine(self.model_dir, **self.engine_kwargs())

    async def astream(self, prompt: Sequence[int], max_new_tokens: int) -> AsyncIterator[Chunk]:
        counter = ChunkCounter()
        try:
            stream = await self.engine.completions.create(**self.request(prompt, max_new_tokens))
            async with contextlib.aclosing(stream):  # a caller that stops early aborts the request
                async for response in stream:
                    chunk = counter.feed(response, clock())
                    if chunk is not None:
                        yield chunk
        except RequestFailed:
            raise
        except Exception as exc:
            raise RequestFailed("engine", f"MLC: {type(exc).__name__}: {exc}") from exc
        counter.check()


class MLCSyncBackend(_MLCBase):
    """``MLCEngine``: one request at a time through the synchronous API."""

    def load(self) -> None:
        mlc_llm = self.import_engine()
        self.model_dir = self.prepare_model_dir()
        self.engine = mlc_llm.MLCEngine(self.model_dir, **self.engine_kwargs())

    def generate(self, prompt: Sequence[int], max_new_tokens: int) -> Generation:
        counter = ChunkCounter()
        chunks: list[Chunk] = []
        try:
            for response in self.engine.completions.create(**self.request(prompt, max_new_tokens)):
                chunk = counter.feed(response, clock())
                if chunk is not None:
                    chunks.append(chunk)
        except Exception as exc:
            raise RequestFailed("engine", f"MLC: {type(exc).__name__}: {exc}") from exc
        counter.check()
        return collect(chunks)


class ChunkCounter:
    """Folds MLC's streamed ``CompletionResponse`` objects into :class:`Chunk` values (see module doc)."""

    def __init__(self) -> None:
        self.counted = 0
        self.finish_reason: str | None = None
        self.finished = False

    def feed(self, response: Any, t: float) -> Chunk | None:
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.finished = True
            rest = max(0, int(usage.completion_tokens) - self.counted)
            return Chunk([], t, n_tokens=rest, finish_reason=self.finish_reason, prompt_tokens=int(usage.prompt_tokens),
                         engine_output_tokens=int(usage.completion_tokens), count_source="usage")
        n = 0
        for choice in response.choices:
            if choice.logprobs is not None:
                n += len(choice.logprobs.tokens)
            self.finish_reason = choice.finish_reason or self.finish_reason
        self.counted += n
        return Chunk([], t, n_tokens=n, count_source="usage") if n else None

    def check(self) -> None:
        if not self.finished:
            raise RequestFailed("stream_cut", "MLC's stream ended without its final usage chunk")


def _versions() -> dict[str, str]:
    """Versions of the installed MLC wheels (``mlc-llm-*`` and the TVM runtime ``mlc-ai-*``)."""
    out: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith(("mlc-llm", "mlc-ai")):
            out[name] = dist.version
    return dict(sorted(out.items()))


_OPTIONS = {
    "model_dir": OptionSpec(str, None, "an MLC model directory (convert_weight + gen_config output) or HF://org/repo;"
                                       " default: convert the model once and cache it"),
    "model_lib": OptionSpec(str, None, "compiled model library (.so); default: MLC's just-in-time compilation"),
    "jit_policy": OptionSpec(str, None, "MLC_JIT_POLICY for this run (set before mlc_llm is imported)",
                             ("ON", "OFF", "REDO", "READONLY")),
    "mode": OptionSpec(str, "server", "MLC engine preset: batch size and KV cache sizing",
                       ("local", "interactive", "server")),
    "conv_template": OptionSpec(str, "LM", "gen_config --conv-template (raw completions ignore it; LM = plain model)"),
    "context_window_size": OptionSpec(int, None, "gen_config --context-window-size", minimum=1),
    "max_num_sequence": OptionSpec(int, None, "EngineConfig: most requests in one batch", minimum=1),
    "max_total_sequence_length": OptionSpec(int, None, "EngineConfig: KV cache capacity in tokens", minimum=1),
    "prefill_chunk_size": OptionSpec(int, None, "EngineConfig: prefill chunk", minimum=1),
    "gpu_memory_utilization": OptionSpec(float, None, "EngineConfig: fraction of GPU memory to use"),
    "tensor_parallel_shards": OptionSpec(int, None, "EngineConfig: tensor parallel degree", minimum=1),
}


def _spec(name: str, target: str, concurrent: bool, description: str) -> BackendSpec:
    return BackendSpec(
        name=name,
        target=target,
        install=INSTALL,
        requires=("mlc_llm",),
        variants=QUANTIZATIONS,
        default_variant="q4f16_1",
        options=_OPTIONS,
        passthrough=True,
        capabilities=Capabilities(accepts_token_ids=True, concurrent=concurrent,
                                  devices=("cuda", "rocm", "metal", "vulkan"), in_process=True,
                                  model_formats=("hf",), prefix_cache="disabled"),
        description=description,
        distributions=(),  # the wheel name depends on the build (cu128, rocm62...): engine_version() reads it
    )


@hookimpl
def register_backends(register):
    register(_spec("mlc", "llmcompare.backends.mlc:MLCBackend", True,
                   "MLC LLM AsyncMLCEngine (many requests in flight); HF model converted once, library JIT-compiled."))
    register(_spec("mlc-sync", "llmcompare.backends.mlc:MLCSyncBackend", False,
                   "MLC LLM MLCEngine, the synchronous API, one request at a time."))
