"""llmcompare: compare LLM inference backends fairly, side by side.

>>> import llmcompare
>>> result = llmcompare.compare(["echo"], max_new_tokens=8)   # doctest: +SKIP
>>> result.summaries[0].tpot_ms["p50"]                         # doctest: +SKIP

Importing this package is cheap: engines, torch and plugins load only when a run needs them. The
public surface is :data:`__all__`; everything else can move (docs/architecture.md shows the layers).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

from llmcompare.hookspecs import API_VERSION, hookimpl

__version__ = "0.2.0"

__all__ = ["__version__", "API_VERSION", "hookimpl", "compare", "load", "run", "start", "resume", "load_result",
           "RunResult", "RunSpec", "BackendSpec", "Capabilities", "Generation", "Chunk", "Scores", "BackendConfig",
           "OptionSpec", "EnvRecipe", "ReferenceVariant", "ScenarioSpec", "ReportSpec", "CommandSpec", "UserError",
           "RequestFailed"]

_LAZY = {
    "compare": "api", "load": "api", "run": "api", "start": "api", "resume": "api",
    "RunResult": "analysis.result", "load_result": "analysis.result", "RunSpec": "config.spec",
    "BackendSpec": "backend", "Capabilities": "backend", "Generation": "backend", "Chunk": "backend", "Scores": "backend",
    "BackendConfig": "backend", "OptionSpec": "backend", "EnvRecipe": "backend", "ReferenceVariant": "backend",
    "ScenarioSpec": "plugins.specs", "ReportSpec": "plugins.specs", "CommandSpec": "plugins.specs",
    "UserError": "errors", "RequestFailed": "errors",
}

#: Module paths of llmcompare 0.1 (plugin API 1.0) that moved in 0.2; importing one still works, with a
#: DeprecationWarning, until 0.3.
MOVED = {
    "llmcompare.spec": "llmcompare.config.spec", "llmcompare.synthetic": "llmcompare.models.synthetic",
    "llmcompare.prompting": "llmcompare.models.prompting", "llmcompare.quantize": "llmcompare.models.quantize",
    "llmcompare.hf_to_gguf": "llmcompare.models.hf_to_gguf", "llmcompare.environment": "llmcompare.hardware.environment",
    "llmcompare.gpus": "llmcompare.hardware.gpus", "llmcompare.plan": "llmcompare.hardware.plan",
    "llmcompare.roofline": "llmcompare.hardware.roofline", "llmcompare.cuda_compat": "llmcompare.hardware.cuda_compat",
    "llmcompare.rundir": "llmcompare.records.rundir", "llmcompare.metrics": "llmcompare.analysis.metrics",
    "llmcompare.statistics": "llmcompare.analysis.statistics", "llmcompare.levels": "llmcompare.analysis.levels",
    "llmcompare.fidelity": "llmcompare.analysis.fidelity", "llmcompare.result": "llmcompare.analysis.result",
    "llmcompare.comparison": "llmcompare.analysis.comparison", "llmcompare.session": "llmcompare.runner.session",
    "llmcompare.isolation": "llmcompare.runner.isolation", "llmcompare.worker": "llmcompare.runner.worker",
    "llmcompare.mockserver": "llmcompare.servers.mock", "llmcompare.verify": "llmcompare.cli.verify",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves an old module path with the module that moved, and says where it went."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new} in llmcompare 0.2; the old path works until 0.3",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        pass


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    # Lazy exports keep `import llmcompare` and `llmcompare --help` fast.
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in ("api", "records", "testing"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'llmcompare' has no attribute {name!r}")
