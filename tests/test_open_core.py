"""The open core: a scenario plugin installed from an entry point runs end to end and appears in every
report with no core edit; a plugin written against 0.1's docs still loads (with a warning); a plugin
built for another plugin API is refused by name; the layers hold (import-linter), and a planted cycle
fails the check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import llmcompare
from llmcompare import plugins

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = Path(__file__).parent / "plugins"


def install_entry_point(site: Path, dist: str, version: str, group_lines: str) -> None:
    """What ``pip install DIST`` leaves behind for entry points: a dist-info folder."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[llmcompare]\n{group_lines}\n")


@pytest.fixture
def prefill_site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(PLUGIN_DIR / "prefill_scenario.py", site / "prefill_scenario.py")
    install_entry_point(site, "llmcompare-prefill", "1.0", "prefill = prefill_scenario")
    return site


def test_a_scenario_plugin_from_an_entry_point_runs_end_to_end_in_every_report(prefill_site, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(prefill_site), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "run"
    cli = subprocess.run([sys.executable, "-m", "llmcompare", "prefill", "-b", "echo", "--lengths", "16,48",
                          "--repeats", "2", "-O", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
    # console, Markdown, HTML, JSON and CSV, all from the plugin's own sections and analysis
    assert "Prefill: TTFT against input length" in cli.stdout
    md = (out / "summary.md").read_text()
    assert "## Prefill: TTFT against input length" in md and "| echo | 16 |" in md and "| echo | 48 |" in md
    html = (out / "report.html").read_text()
    assert '<table id="prefill">' in html and "prefill sweep · 16, 48 input tokens" in html
    results = json.loads((out / "results.json").read_text())
    assert results["scenarios"] == ["prefill"]
    assert [(p["backend"], p["input_tokens"]) for p in results["prefill_points"]] == [("echo", 16), ("echo", 48)]
    assert {s["stage"] for s in results["summaries"]} == {"prefill:in=16", "prefill:in=48"}
    assert all(s["n_requests"] == 4 and s["n_errors"] == s["n_length_mismatch"] == 0  # 2 prompts x 2 repeats
               for s in results["summaries"])
    assert (out / "prefill.csv").read_text().splitlines()[0] == "backend,input tokens,TTFT p50 ms"
    # the plugin is listed with its distribution; `report` rebuilds everything from requests.jsonl alone
    listing = subprocess.run([sys.executable, "-m", "llmcompare", "backends"], capture_output=True, text=True, env=env)
    assert "prefill (llmcompare-prefill==1.0)" in listing.stdout
    (out / "results.json").unlink()
    again = subprocess.run([sys.executable, "-m", "llmcompare", "report", str(out)], capture_output=True, text=True,
                           env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "results.json").read_text())["prefill_points"] == results["prefill_points"]


# ---- a plugin written against llmcompare 0.1's docs -----------------------------------------------------------

OLD_PLUGIN = '''
from llmcompare import hookimpl
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, Generation, clock
from llmcompare.models import cached_build  # noqa: F401  (0.1's docs point plugin authors at it)
from llmcompare.metrics import tpot  # noqa: F401  (a module path of 0.1)


class MyBackend:
    capabilities = Capabilities(streams=True, accepts_token_ids=True, devices=("cpu",),
                                model_formats=("gguf", "hf"), prefix_cache="reset")

    def __init__(self, config: BackendConfig):
        self.config = config

    def load(self) -> None:
        self.engine = object()

    def generate(self, prompt, max_new_tokens) -> Generation:
        ids, times = [], []
        for i in range(max_new_tokens):
            ids.append(100 + i)
            times.append(clock())
        return Generation(ids, times, prompt_tokens=len(prompt))

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def engine_version(self) -> dict[str, str]:
        return {"myengine": "0.1"}

    def unload(self) -> None:
        self.engine = None


@hookimpl
def register_backends(register):
    register(BackendSpec(name="myengine", target="old_docs_plugin:MyBackend",
                         install="pip install llmcompare-myengine", requires=()))
'''


@pytest.mark.engine
def test_a_plugin_written_against_0_1_docs_still_loads_and_runs_with_a_warning(use_plugins, tmp_path, monkeypatch):
    (tmp_path / "old_docs_plugin.py").write_text(OLD_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = use_plugins("old_docs_plugin")
    assert not [e for e in reg.errors if e.plugin == "old_docs_plugin"], reg.errors
    spec = reg.get("myengine")
    assert spec.capabilities.prefix_cache == "reset" and spec.capabilities.model_formats == ("gguf", "hf")
    said = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any("streams" in m for m in said)
    assert any("capabilities on the backend class" in m and "old_docs_plugin" in m for m in said)
    assert any("llmcompare.metrics moved to llmcompare.analysis.metrics" in m for m in said)
    result = llmcompare.compare(["myengine"], max_new_tokens=4, repeats=1, warmup=0, fidelity=False,
                                output=tmp_path / "run")
    assert result.summary("myengine").status == "ok" and result.summary("myengine").n_length_ok == 10


def test_a_plugin_for_another_plugin_api_is_refused_by_name(use_plugins, tmp_path, monkeypatch):
    (tmp_path / "future_plugin.py").write_text(
        "from llmcompare import hookimpl\nLLMCOMPARE_API = '2.0'\n"
        "@hookimpl\ndef register_backends(register):\n    raise AssertionError('never called')\n")
    (tmp_path / "newer_minor_plugin.py").write_text("LLMCOMPARE_API = '1.9'\n")
    (tmp_path / "older_minor_plugin.py").write_text("LLMCOMPARE_API = '1.0'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = use_plugins("future_plugin", "newer_minor_plugin", "older_minor_plugin")
    errors = {e.plugin: e.error for e in reg.errors}
    assert "future_plugin needs llmcompare plugin API 2.0; this llmcompare provides 1.1" in errors["future_plugin"]
    assert "newer_minor_plugin needs llmcompare plugin API 1.9" in errors["newer_minor_plugin"]
    assert "older_minor_plugin" not in errors and "older_minor_plugin" in reg.plugins  # 1.0 plugins load
    assert "echo" in reg.backends  # the others still load


def test_every_kind_of_extension_registers_through_the_hooks():
    reg = plugins.get_registry(reload=True)
    assert {"latency", "load", "fidelity"} <= set(reg.scenarios)
    assert {"json", "csv", "markdown", "html", "console"} <= set(reg.reports)
    assert {"backends", "report", "compare", "plan", "env", "verify-backend", "bandwidth"} <= set(reg.commands)
    assert all(s.source == "built-in" for s in reg.scenarios.values())
    assert reg.scenarios["latency"].command == "run" and reg.scenarios["fidelity"].joins == ("latency",)


# ---- the layers ------------------------------------------------------------------------------------------------

def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([shutil.which("lint-imports") or "lint-imports", "--no-cache"], cwd=root, capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter not installed (the test extra has it)")
def test_the_layers_hold_and_a_planted_cycle_fails_the_check(tmp_path):
    ok = lint_imports(ROOT)
    assert ok.returncode == 0, ok.stdout[-3000:]
    assert "BROKEN" not in ok.stdout and "Contracts: 4 kept, 0 broken." in ok.stdout
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "llmcompare", copy / "llmcompare", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    records = copy / "llmcompare" / "records" / "__init__.py"  # a low layer importing a higher one: a cycle
    records.write_text(records.read_text() + "\nfrom llmcompare.analysis import result  # noqa: E402,F401\n")
    broken = lint_imports(copy)
    assert broken.returncode != 0
    assert "llmcompare.records is not allowed to import llmcompare.analysis" in broken.stdout
