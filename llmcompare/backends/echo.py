"""The echo backend: deterministic, configurable latency, no engine. The template for new backends.

It "generates" by echoing the prompt's token ids cyclically, and paces tokens on a schedule:
token ``i`` is released at ``t0 + ttft_ms + i * per_token_ms``. Because it schedules against the
hand-over time instead of sleeping a fixed amount per token, the configured latency is what the
harness should measure back: ``tests/test_timing.py`` checks that it does, within 5%.

With ``stop_at_eos=True`` (the fidelity pass) it stops after echoing the prompt once, as if the
model's EOS came right after it, with ``finish_reason="stop"``.

It has both paths: ``generate`` (sync, one request at a time) and ``astream`` (async chunks), and
declares ``concurrent=True``: under the load driver it behaves like an ideal server whose requests
never slow each other down, which is what the load driver's own tests need.

Copy this file to write a backend for a new engine: declare capabilities, import the engine inside
``load`` (never at module top), and register one :class:`~llmcompare.BackendSpec`.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Sequence

from llmcompare import __version__, hookimpl
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, Chunk, Generation, OptionSpec, clock


class EchoBackend:

    def __init__(self, config: BackendConfig):
        self.config = config
        self.ttft_s = float(config.options.get("ttft_ms", 0.0)) / 1000.0
        self.per_token_s = float(config.options.get("per_token_ms", 0.0)) / 1000.0
        self.chunk = int(config.options.get("chunk", 1))
        self.loaded = False
        self._ballast: bytearray | None = None

    def load(self) -> None:
        # Hold some memory so the conformance kit can see unload() give it back.
        self._ballast = bytearray(int(self.config.options.get("ballast_mb", 0)) * 1024 * 1024)
        if self._ballast:
            self._ballast[:: 4096] = b"\x01" * len(self._ballast[:: 4096])
        self.loaded = True

    def generate(self, prompt: Sequence[int] | str, max_new_tokens: int, *, stop_at_eos: bool = False) -> Generation:
        if not self.loaded:
            raise RuntimeError("echo backend is not loaded")
        t0 = clock()
        ids = list(prompt) if not isinstance(prompt, str) else list(prompt.encode("utf-8"))
        ids = ids or [0]
        out, times = [], []
        n = min(max_new_tokens, len(ids)) if stop_at_eos else max_new_tokens
        for i in range(n):
            if i % self.chunk == 0:  # a new chunk: wait for its release time
                _sleep_until(t0 + self.ttft_s + i * self.per_token_s)
                now = clock()
            out.append(int(ids[i % len(ids)]))
            times.append(now)
        finish = "stop" if n < max_new_tokens else "length"
        return Generation(out, times, prompt_tokens=len(ids), finish_reason=finish)

    async def astream(self, prompt: Sequence[int] | str, max_new_tokens: int, *,
                      stop_at_eos: bool = False) -> AsyncIterator[Chunk]:
        if not self.loaded:
            raise RuntimeError("echo backend is not loaded")
        t0 = clock()
        ids = (list(prompt) if not isinstance(prompt, str) else list(prompt.encode("utf-8"))) or [0]
        total = min(max_new_tokens, len(ids)) if stop_at_eos else max_new_tokens
        finish = "stop" if total < max_new_tokens else "length"
        for start in range(0, total, self.chunk):
            delay = t0 + self.ttft_s + start * self.per_token_s - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            n = min(self.chunk, total - start)
            last = start + n == total
            yield Chunk([int(ids[i % len(ids)]) for i in range(start, start + n)], clock(),
                        finish_reason=finish if last else None, prompt_tokens=len(ids) if last else None)

    def count_tokens(self, text: str) -> int:
        return len(text.encode("utf-8"))

    def engine_version(self) -> dict[str, str]:
        return {"echo": __version__}

    def unload(self) -> None:
        self._ballast = None
        self.loaded = False
        gc.collect()


def _sleep_until(deadline: float) -> None:
    """Sleep to within ~0.2 ms of ``deadline``, then spin: sleep alone overshoots by up to 1 ms."""
    while True:
        left = deadline - clock()
        if left <= 0:
            return
        if left > 0.0015:
            time.sleep(left - 0.001)


@hookimpl
def register_backends(register):
    register(
        BackendSpec(
            name="echo",
            target="llmcompare.backends.echo:EchoBackend",
            install="pip install llmcompare",
            capabilities=Capabilities(devices=("cpu",), model_formats=("gguf", "hf", "synthetic"), prefix_cache="none",
                                      concurrent=True, natural_stop=True),
            description="Deterministic fake engine with configurable latency (test double and plugin template).",
            options={
                "ttft_ms": OptionSpec(float, 0.0, "time to first token, ms"),
                "per_token_ms": OptionSpec(float, 0.0, "delay between tokens, ms"),
                "chunk": OptionSpec(int, 1, "tokens per stream chunk (tests chunked streams)", minimum=1),
                "ballast_mb": OptionSpec(int, 0, "MiB of memory to hold while loaded"),
            },
        )
    )
