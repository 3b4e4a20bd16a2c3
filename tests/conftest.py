from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from llmcompare import plugins

PLUGIN_DIR = Path(__file__).parent / "plugins"

# OpenMP's worker threads spin while they wait for work. On two cores shared with other work that spinning
# fights the other work for the cores: CTranslate2 float32 took 130 s instead of 39 s for the same 10
# requests beside a CPU-bound process and a test run (docs/metrics.md). The suite runs engines for their answers and timing shapes, not
# their absolute speed (benchmarks/ does that), so its engines wait passively. Set it in your shell to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def has_default_model() -> bool:
    from llmcompare.models import default_model_path

    return default_model_path() is not None and all(
        importlib.util.find_spec(m) for m in ("transformers", "gguf")
    )


needs_model = pytest.mark.skipif(not has_default_model(), reason="default model (llmcompare[default-model]) not installed")


def plugin_env(*modules: str) -> dict[str, str]:
    """The variables that make a process (and its workers) load ``modules`` from tests/plugins."""
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")])),
        "LLMCOMPARE_PLUGINS": ",".join(modules),
    }


@pytest.fixture
def use_plugins(monkeypatch):
    """Register plugin modules from tests/plugins for this process and every worker it starts."""

    def use(*modules: str) -> plugins.Registry:
        for key, value in plugin_env(*modules).items():
            monkeypatch.setenv(key, value)
        monkeypatch.syspath_prepend(str(PLUGIN_DIR))
        return plugins.get_registry(reload=True)

    yield use
    monkeypatch.undo()
    for name in [m for m in sys.modules if m.startswith(("llmcompare_testplugins", "broken_"))]:
        del sys.modules[name]
    plugins.get_registry(reload=True)


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "run"
