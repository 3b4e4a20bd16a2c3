"""llama.cpp through llama-cpp-python, on a GGUF file, token by token.

* Fixed length: ``Llama.generate(tokens, temp=0.0, ...)`` yields token ids one at a time and never
  stops on EOS by itself; the adapter takes exactly N.
* Prefix cache: ``Llama`` reuses the longest matching prefix of the previous prompt, so ``reset()``
  runs before every request and ``generate(..., reset=True)`` is passed as well.
* Sampling: greedy is stated explicitly (temp 0, top-k 1, repeat penalty 1.0); the library's own
  ``create_completion`` defaults (sampling, 16 tokens) are never used.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

from llmcompare import hookimpl
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, Generation, OptionSpec, clock


class LlamaCppBackend:

    def __init__(self, config: BackendConfig):
        self.config = config
        self.llm = None

    def load(self) -> None:
        from llama_cpp import Llama

        opts = dict(self.config.options)
        n_gpu_layers = opts.pop("n_gpu_layers", -1 if self.config.device.startswith("cuda") else 0)
        self.llm = Llama(
            model_path=self.config.model.gguf_path(),
            n_ctx=opts.pop("n_ctx", 2048),
            n_gpu_layers=n_gpu_layers,
            verbose=opts.pop("verbose", False),
            seed=opts.pop("seed", 0),
            **opts,
        )

    def generate(self, prompt: Sequence[int] | str, max_new_tokens: int) -> Generation:
        ids: list[int] = []
        times: list[float] = []
        self.llm.reset()
        stream = self.llm.generate(list(prompt), temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                   repeat_penalty=1.0, reset=True)
        try:
            for token in stream:
                ids.append(int(token))
                times.append(clock())
                if len(ids) >= max_new_tokens:
                    break
        finally:
            stream.close()
        return Generation(ids, times, prompt_tokens=len(prompt), finish_reason="length")

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def engine_version(self) -> dict[str, str]:
        import llama_cpp

        return {"llama_cpp_python": llama_cpp.__version__}

    def unload(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.llm = None
        gc.collect()


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
            passthrough=True,
            capabilities=Capabilities(devices=("cpu", "cuda"), model_formats=("gguf",), prefix_cache="reset"),
            description="llama-cpp-python on a GGUF file; prompt cache reset before every request.",
            distributions=("llama_cpp_python",),
        )
    )
