"""Fake of the ``mlc_llm`` package, for testing llmcompare's MLC adapter without MLC or a GPU.

Mirrors mlc-ai/mlc-llm ``python/mlc_llm`` at commit 79d603f (2026-07-23): ``MLCEngine`` and
``AsyncMLCEngine`` (``serve/engine.py``), ``EngineConfig`` (``serve/config.py``), the completion
objects (``protocol/openai_api_protocol.py``) and the ``convert_weight``/``gen_config`` CLI
(``python -m mlc_llm``). The engine "generates" the prompt's token ids, cyclically, so its output is
deterministic. ``_fake`` holds the controls and the call log. Like the real package, ``__version__``
is a hard-coded string that says nothing about the installed wheel (the wheel's metadata does: see
the ``mlc_llm_nightly_cu128-*.dist-info`` beside this package).
"""

from . import protocol, serve
from .serve import AsyncMLCEngine, MLCEngine

__version__ = "0.1.dev0"

__all__ = ["AsyncMLCEngine", "MLCEngine", "__version__", "protocol", "serve"]
