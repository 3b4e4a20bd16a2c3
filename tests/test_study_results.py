"""A study's cells as the compact result files docs/results.md is written from
(benchmarks/study_results.py), and the batch-1 table of one such folder (``{{overview FOLDER}}`` in
benchmarks/results_md.py): a real study of two echo cells, converted, then rendered."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from llmcompare.study.driver import RunOptions, run_study

ROOT = Path(__file__).resolve().parent.parent


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


STUDY = """\
name: tiny-batch1
model: synthetic:smollm2-135m
scenario: run
workload: {max_new_tokens: 4, repeats: 1, warmup: 0}
hardware:
  box: {price_per_hour: 1.0}
matrix:
  backend: [echo@slow, echo@fast]
options: [slow.per_token_ms=8, fast.per_token_ms=1]
"""


def test_a_study_becomes_result_files_and_its_table(tmp_path):
    f = tmp_path / "study.yaml"
    f.write_text(STUDY)
    assert run_study(str(f), RunOptions(output=str(tmp_path / "study"), quiet=True)) == 0
    convert, results_md = _module("study_results"), _module("results_md")
    out = tmp_path / "results"
    written = convert.convert(tmp_path / "study", out, "abc1234", date="2026-12-10")
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "2026-12-10-box-tiny-batch1/echo-at-fast.json", "2026-12-10-box-tiny-batch1/echo-at-slow.json"]
    doc = json.loads(written[0].read_text())
    for key in ("run", "title", "date", "hardware", "commit", "command", "environment", "figures"):
        assert doc[key], key
    assert doc["command"].startswith("llmcompare run -b echo@") and doc["study"]["name"] == "tiny-batch1"
    (b,) = doc["figures"]["backends"]
    assert b["status"] == "ok" and b["tpot_ms"]["p50"] > 0 and b["n_requests"] == 10 and "tpot_p50_ms" in b["ci95"]
    runs = results_md.load_runs(out)
    table = results_md.overview(runs, "2026-12-10-box-tiny-batch1")
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == 2 and rows[0].startswith("| `fast` |") and rows[1].startswith("| `slow` |")  # by TPOT
    template = "# t\n\n{{overview 2026-12-10-box-tiny-batch1}}\n"
    assert "| `fast` |" in results_md.fill(template, runs)
