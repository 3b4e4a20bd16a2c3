"""llmcompare: compare LLM inference backends fairly, side by side.

>>> import llmcompare
>>> result = llmcompare.compare(["echo"], max_new_tokens=8)   # doctest: +SKIP
>>> result.summaries[0].tpot_ms["p50"]                         # doctest: +SKIP

Importing this package is cheap: engines, torch and plugins load only when a run needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from llmcompare.hookspecs import hookimpl  # noqa: E402

__all__ = ["__version__", "hookimpl", "compare", "load", "resume", "load_result", "BackendSpec", "Capabilities", "Generation", "Chunk",
           "Scores", "BackendConfig", "OptionSpec", "RunResult", "UserError", "RequestFailed"]

_LAZY = {
    "compare": "api", "load": "api", "resume": "api", "RunResult": "analysis.result", "load_result": "analysis.result",
    "BackendSpec": "backend", "Capabilities": "backend", "Generation": "backend", "Chunk": "backend", "Scores": "backend",
    "BackendConfig": "backend", "OptionSpec": "backend", "UserError": "errors", "RequestFailed": "errors",
}


def __getattr__(name: str):
    # Lazy exports keep `import llmcompare` and `llmcompare --help` fast.
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in ("api", "records", "testing"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'llmcompare' has no attribute {name!r}")
