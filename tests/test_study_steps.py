"""A study's ``steps:`` (llmcompare/study/steps.py): checked when the file is loaded, run before the
cells, skipped when their output exists (a quantize step: when its checkpoint is cached), and a failed
step holds back only the cells that need it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmcompare.study import steps as stepsmod
from llmcompare.study.driver import RunOptions, run_study
from llmcompare.study.spec import StudyFileError, load_study_text

BASE = """\
name: stepped
model: synthetic:smollm2-135m
scenario: run
workload: {max_new_tokens: 4, repeats: 1, warmup: 0, prompts: default}
matrix:
  backend: [echo@a, echo@b]
options: [per_token_ms=1]
"""


def study(steps: str):
    return load_study_text(BASE + steps, "s.yaml")


def error(steps: str) -> str:
    with pytest.raises(StudyFileError) as e:
        study(steps)
    return str(e.value)


def test_steps_are_read_and_checked_when_the_file_is_loaded():
    s = study("""\
steps:
  - name: exl3-7b
    argv: [python, -m, llmcompare.models.quantize, exl3, -m, synthetic:llama-2-7b, --bits, 4.0]
    backend: exllamav3
    needed_by: [exllamav3:exl3]
    timeout: 540
""")
    (step,) = s.steps
    assert step.is_quantize and step.argv[-1] == "4.0" and step.timeout == 540.0
    assert step.needs("exllamav3:exl3") and step.needs("exllamav3:exl3@x") and not step.needs("exllamav3:fp16")
    assert s.resolved["steps"][0]["name"] == "exl3-7b"
    assert not study("").steps and "steps" not in study("").resolved  # no steps: the manifest is as before
    assert "s.yaml:10: steps[0].argv: python -m llmcompare.models.quantize: unrecognized arguments: --bitz 4" in error(
        "steps:\n  - name: x\n    argv: [python, -m, llmcompare.models.quantize, exl3, --bitz, 4]\n")
    assert "steps[0].argv: the study adds --cached itself" in error(
        "steps:\n  - name: x\n    argv: [python, -m, llmcompare.models.quantize, exl3, --cached]\n")
    assert "steps[0].backend: unknown backend 'exllamav'; did you mean 'exllamav3'?" in error(
        "steps:\n  - {name: x, argv: [python, x.py], backend: exllamav}\n")
    assert "steps[1].name: another step is named 'x'" in error(
        "steps:\n  - {name: x, argv: [a]}\n  - {name: x, argv: [b]}\n")
    assert "steps[0].argv: a non-empty list of strings" in error("steps:\n  - {name: x, argv: []}\n")
    assert "steps[0].tmeout: unknown key" in error("steps:\n  - {name: x, argv: [a], tmeout: 3}\n")
    assert "steps[0].timeout: seconds" in error("steps:\n  - {name: x, argv: [a], timeout: -1}\n")


def test_a_quantize_step_asks_the_cache_first(monkeypatch, tmp_path):
    asked = []

    def fake_run(argv, **kw):
        asked.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout="/cache/exl3/abc/model\n", stderr="")

    monkeypatch.setattr(stepsmod.subprocess, "run", fake_run)
    step = stepsmod.Step("q", ["python", "-m", "llmcompare.models.quantize", "exl3", "-m", "synthetic:llama-2-7b"])
    out = stepsmod.run_step(step, tmp_path / "q.log")
    assert out.status == "cached" and out.detail == "cached: /cache/exl3/abc/model"
    assert asked == [[sys.executable, "-m", "llmcompare.models.quantize", "exl3", "-m", "synthetic:llama-2-7b",
                      "--cached"]]
    assert not (tmp_path / "q.log").exists()  # nothing ran


def test_a_step_past_its_timeout_is_stopped(tmp_path):
    step = stepsmod.Step("slow", ["python", "-c", "import time; time.sleep(60)"], timeout=1)
    out = stepsmod.run_step(step, tmp_path / "slow.log")
    assert out.status == "failed" and "timeout of 1 s" in out.detail and out.wall_s < 30


def test_steps_run_before_the_cells_and_a_failed_one_holds_back_only_its_cells(tmp_path):
    made = tmp_path / "made.txt"
    counter = tmp_path / "runs.txt"
    text = BASE + f"""\
steps:
  - name: make
    argv: [python, -c, "open({str(counter)!r}, 'a').write('x'); open({str(made)!r}, 'w').write('ok')"]
    creates: {made}
  - name: broken
    argv: [python, -c, "import sys; print('no GPU here'); sys.exit(3)"]
    needed_by: [b]
"""
    f = tmp_path / "study.yaml"
    f.write_text(text)
    out = tmp_path / "study"
    assert run_study(str(f), RunOptions(output=str(out), quiet=True)) == 1  # a step failed
    m = json.loads((out / "study.json").read_text())
    cells = {c["name"]: c for c in m["cells"]}
    assert cells["echo@a"]["status"] == "done"
    assert cells["echo@b"]["status"] == "pending" and "waiting for step 'broken'" in cells["echo@b"]["error"]
    assert m["steps"]["make"]["status"] == "done" and m["steps"]["broken"]["status"] == "failed"
    assert "exit status 3: no GPU here" in m["steps"]["broken"]["detail"]
    assert made.read_text() == "ok" and counter.read_text() == "x"
    assert "no GPU here" in (out / "logs" / "step-broken.log").read_text()
    # fixed, and run again: 'make' is skipped (its file exists), 'broken' runs, then the held-back cell
    f.write_text(text.replace("sys.exit(3)", "sys.exit(0)"))
    assert run_study(str(f), RunOptions(output=str(out), quiet=True)) == 0
    m = json.loads((out / "study.json").read_text())
    assert m["steps"]["make"]["status"] == "cached" and counter.read_text() == "x"
    assert m["steps"]["broken"]["status"] == "done"
    assert {c["status"] for c in m["cells"]} == {"done"}
    # a third run has no cell left to run: no step runs at all
    assert run_study(str(f), RunOptions(output=str(out), quiet=True)) == 0
    assert "steps" not in json.loads((out / "study.json").read_text())
