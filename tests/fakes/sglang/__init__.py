"""Fake of the ``sglang`` package: the offline ``Engine``, for testing llmcompare's SGLang adapter.

Mirrors sgl-project/sglang ``python/sglang/srt/entrypoints/engine.py`` and the streaming output of
``managers/tokenizer_manager.py`` at commit 001067f (2026): ``sglang.Engine(**server_args)``,
``async_generate(prompt=None, sampling_params=None, input_ids=None, ..., stream=False, rid=None)``,
``shutdown()``. It "generates" the prompt's ids cyclically. ``_fake`` holds the controls and the
call log.
"""

from .srt.entrypoints.engine import Engine
from .version import __version__

__all__ = ["Engine", "__version__"]
