"""llmcompare: compare LLM inference backends fairly, side by side.

>>> import llmcompare
>>> result = llmcompare.compare(["echo"], max_new_tokens=8)   # doctest: +SKIP
>>> result.summaries[0].tpot_ms["p50"]                         # doctest: +SKIP

Importing this package is cheap: engines, torch and plugins load only when a run needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402

__all__ = ["__version__", "hookimpl", "compare", "BackendSpec", "Capabilities", "Generation", "BackendConfig",
           "OptionSpec", "RunResult", "UserError"]


def __getattr__(name: str):
    # Lazy exports keep `import llmcompare` and `llmcompare --help` fast.
    if name in ("compare", "RunResult"):
        from . import api

        return getattr(api, name)
    if name in ("BackendSpec", "Capabilities", "Generation", "BackendConfig", "OptionSpec"):
        from . import backend

        return getattr(backend, name)
    if name == "UserError":
        from .errors import UserError

        return UserError
    raise AttributeError(f"module 'llmcompare' has no attribute {name!r}")
