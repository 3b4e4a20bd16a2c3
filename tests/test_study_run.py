"""Studies run for real on the echo backend, whose latencies are known, so the right answer is known:
the local executor, resume after kill -9 of the driver, a crashing cell, a pruned cell, GPU cells side by
side on disjoint (faked) GPU sets. Each cell is a real `python -m llmcompare` subprocess (~6 s here):
minutes in all, so the engine tier."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from llmcompare.study.driver import RunOptions, run_study

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

KNOWN = """\
name: known
model: synthetic:smollm2-135m
scenario: load
workload: {input_tokens: 16, max_new_tokens: 8, requests: 6}
slo: {tpot_ms: 30}
hardware:
  cheap: {price_per_hour: 1.0}
  dear: {price_per_hour: 3.0}
  cheapest: {price_per_hour: 0.2}
matrix:
  backend: [echo]
  hardware: [cheap, dear, cheapest]
  concurrency: [[1, 2]]
include:                                              # GitHub Actions semantics: extends the matching cells
  - {hardware: cheap, option: "per_token_ms=20"}      # meets the SLO, $1/h
  - {hardware: dear, option: "per_token_ms=20"}       # meets it too, same speed, $3/h
  - {hardware: cheapest, option: "per_token_ms=40"}   # the cheapest per hour and per token, misses the SLO
confirm: {rounds: 1, requests: 6}
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def manifest(d: Path) -> dict:
    return json.loads((d / "study.json").read_text())


def levels(cell_dir: Path) -> list[dict]:
    with open(cell_dir / "levels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def hand_answer(d: Path, slo_tpot: float) -> dict:
    """The answer computed by hand from the cells' levels.csv: per deployment pool its measurements of a
    level, keep the levels where every measurement met the SLO, then pick."""
    m = manifest(d)
    pooled: dict[tuple, list[dict]] = {}
    for c in m["cells"]:
        if c["status"] != "done":
            continue
        for row in levels(d / "cells" / c["id"]):
            pooled.setdefault((c["deployment"], row["concurrency"], c["price_per_hour"]), []).append(row)
    ok = {k: rows for k, rows in pooled.items()
          if all(r["meets_slo"] == "True" and float(r["tpot_p90_ms"]) <= slo_tpot for r in rows)}
    tok = {k: sum(float(r["output_tok_s"]) for r in rows) / len(rows) for k, rows in ok.items()}
    cost = {k: k[2] / (tok[k] * 3600) * 1e6 for k in ok}
    return {"most_cost_effective": min(cost, key=cost.get), "best_throughput": max(tok, key=tok.get)}


def test_the_known_answer_local(tmp_path):
    f = write(tmp_path, KNOWN)
    out = tmp_path / "study"
    rc = run_study(str(f), RunOptions(output=str(out), quiet=True))
    assert rc == 0
    m = manifest(out)
    base = [c for c in m["cells"] if c["kind"] == "cell"]
    assert len(base) == 3 and all(c["status"] == "done" for c in base)
    confirms = [c for c in m["cells"] if c["kind"] == "confirm"]
    # the two deployments that meet the SLO get their highest level re-measured, the other none
    assert sorted(c["deployment"] for c in confirms) == ["cheap · per_token_ms=20", "dear · per_token_ms=20"]
    assert all(c["levels"] == [2.0] and "--concurrency" in c["argv"] for c in confirms)

    from llmcompare.study import report

    r = report.build(out)
    a = r["answers"]
    assert a["most_cost_effective"]["winner"]["deployment"] == "cheap · per_token_ms=20"
    assert a["most_cost_effective"]["winner"]["level"] == "c=2"
    named = {f["deployment"] for x in a.values() for f in ([x["winner"], *x["ties"]] if x["winner"] else [])}
    assert "cheapest · per_token_ms=40" not in named  # cheapest, but it misses the SLO
    # cheap and dear run at the same speed: a tie on latency and throughput, both named
    for key in ("best_latency", "best_throughput"):
        both = {a[key]["winner"]["deployment"], *(t["deployment"] for t in a[key]["ties"])}
        assert both == {"cheap · per_token_ms=20", "dear · per_token_ms=20"}, a[key]
    # the same answer by hand from levels.csv
    hand = hand_answer(out, 30)
    assert hand["most_cost_effective"][0] == a["most_cost_effective"]["winner"]["deployment"]
    assert hand["most_cost_effective"][1] == "2"
    # the report: every format, with the answer, the max load and the misses
    md = (out / "study.md").read_text()
    assert "### Most cost-effective" in md and "cheap · per\\_token\\_ms=20" in md
    assert "misses the SLO" in md
    html = (out / "study.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html and "http://" not in html
    rows = list(csv.DictReader(open(out / "cells.csv")))
    assert len(rows) == 3 * 2 + 2 and {r["status"] for r in rows} == {"done"}
    # a second run of the same study measures nothing again
    before = {c["id"]: c["attempts"] for c in m["cells"]}
    assert run_study(str(f), RunOptions(output=str(out), quiet=True)) == 0
    assert {c["id"]: c["attempts"] for c in manifest(out)["cells"]} == before
    # the report is rebuilt from the directory alone
    (out / "study.md").unlink()
    assert subprocess.run([PY, "-m", "llmcompare.study", "report", str(out)], capture_output=True).returncode == 0
    assert (out / "study.md").read_text() == md


SLOW = """\
name: slow
model: synthetic:smollm2-135m
scenario: run
workload: {max_new_tokens: 4, repeats: 2, warmup: 1}
hardware:
  cpu: {price_per_hour: 1.0}
matrix:
  backend: [echo]
  option: ["ttft_ms=150", "ttft_ms=151", "ttft_ms=152"]
"""


def _children_of(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_kill_9_of_the_driver_loses_no_finished_cell_and_measures_none_twice(tmp_path):
    f = write(tmp_path, SLOW)
    out = tmp_path / "study"
    cmd = [PY, "-m", "llmcompare.study", "run", str(f), "-O", str(out), "-q"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = None
    deadline = time.time() + 240
    while time.time() < deadline:  # wait: first cell done, second cell with some requests written
        time.sleep(0.3)
        if not (out / "study.json").exists():
            continue
        cells = manifest(out)["cells"]
        if cells[0]["status"] == "done" and cells[1]["status"] == "running":
            req = out / "cells" / cells[1]["id"] / "requests.jsonl"
            if req.exists() and req.read_text().count('"request"') >= 5:
                second = cells[1]["id"]
                break
    assert second, "the study did not reach its second cell"
    cli = [p for p in _children_of(driver.pid)]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # the cell's CLI dies with its driver (PR_SET_PDEATHSIG), releasing the run directory's lock
    gone, alive = psutil.wait_procs(cli, timeout=60)
    assert not alive, alive
    measured_before = [json.loads(x) for x in (out / "cells" / second / "requests.jsonl").read_text().splitlines()
                       if '"request"' in x]
    assert run_study(str(f), RunOptions(output=str(out), quiet=True)) == 0
    m = manifest(out)
    assert [c["status"] for c in m["cells"]] == ["done", "done", "done"]
    logs = {c["id"]: (out / "logs" / f"{c['id']}.log").read_text() for c in m["cells"]}
    first = m["cells"][0]["id"]
    assert logs[first].count("\n== ") + logs[first].startswith("== ") == 1  # never run again
    assert "resume: llmcompare run --resume" in logs[second]                 # resumed, not restarted
    rows = [r for r in csv.DictReader(open(out / "cells" / second / "requests.csv")) if r["warmup"] == "False"]
    ids = [r["request_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 20  # 10 prompts × 2 repeats, each exactly once
    kept = {r.get("request_id") for r in measured_before if not r.get("warmup") and r.get("error") is None}
    assert kept and kept <= set(ids)


CRASH = """\
name: crash
model: synthetic:smollm2-135m
scenario: run
workload: {max_new_tokens: 4, repeats: 1}
hardware:
  cpu: {}
matrix:
  backend: [crashy, echo]
  option: ["crashy.crash_after=2", "crashy.marker={marker}"]
"""


def test_a_crashing_cell_is_a_row_with_its_error_and_reruns_on_resume(tmp_path, use_plugins):
    use_plugins("llmcompare_testplugins")
    marker = tmp_path / "crashed-once"
    f = write(tmp_path, CRASH.replace("{marker}", str(marker)).replace(
        '  option: ["crashy.crash_after=2", "crashy.marker={marker}"]'.replace("{marker}", str(marker)),
        f'options: ["crashy.crash_after=2", "crashy.marker={marker}"]'))
    out = tmp_path / "study"
    assert run_study(str(f), RunOptions(output=str(out), quiet=True)) == 1
    cells = {c["backend"]: c for c in manifest(out)["cells"]}
    assert cells["echo"]["status"] == "done"
    assert cells["crashy"]["status"] == "failed" and "SIGKILL" in cells["crashy"]["error"]
    assert "crashy" in (out / "study.md").read_text() and "## Failed cells" in (out / "study.md").read_text()
    # a plain rerun keeps the recorded failure; --resume reruns it (the marker lets it finish now)
    assert run_study(str(f), RunOptions(output=str(out), quiet=True)) == 1
    assert manifest(out)["cells"][0]["attempts"] == 1
    assert run_study(None, RunOptions(resume=str(out), quiet=True)) == 0
    crashy = next(c for c in manifest(out)["cells"] if c["backend"] == "crashy")
    assert crashy["status"] == "done" and crashy["attempts"] == 2
    rows = [r for r in csv.DictReader(open(out / "cells" / crashy["id"] / "requests.csv")) if r["warmup"] == "False"]
    assert len(rows) == len({r["request_id"] for r in rows}) == 10


PRUNE = """\
name: prune
scenario: load
workload: {input_tokens: 16, max_new_tokens: 8, requests: 4}
hardware:
  l4: {gpu: l4, count: 1, device: cpu}
matrix:
  backend: [echo]
  model: [synthetic:smollm2-135m, synthetic:llama-2-13b]
  concurrency: [[1]]
"""


def test_a_cell_that_cannot_fit_is_pruned_with_its_arithmetic(tmp_path):
    f = write(tmp_path, PRUNE)
    out = tmp_path / "study"
    assert run_study(str(f), RunOptions(output=str(out), quiet=True, gpus="l4=0")) == 0
    cells = {c["model"]: c for c in manifest(out)["cells"]}
    assert cells["synthetic:smollm2-135m"]["status"] == "done"
    big = cells["synthetic:llama-2-13b"]
    assert big["status"] == "pruned" and not (out / "cells" / big["id"]).exists()
    assert "does not fit: weights 26.03 GB/GPU" in big["reasons"][0]
    md = (out / "study.md").read_text()
    assert "## Pruned before measuring" in md and "26.03 GB/GPU" in md
    # the plan says the same without running anything; --no-prune would run it
    out2 = subprocess.run([PY, "-m", "llmcompare.study", "plan", str(f), "--gpus", "l4=0"], capture_output=True,
                          text=True)
    assert out2.returncode == 0 and "pruned: synthetic:llama-2-13b: c=1 does not fit" in out2.stdout
    out3 = subprocess.run([PY, "-m", "llmcompare.study", "plan", str(f), "--gpus", "l4=0", "--no-prune", "--json"],
                          capture_output=True, text=True)
    assert {c["status"] for c in json.loads(out3.stdout)} == {"pending"}
    # without the GPU, both are planned only
    out4 = subprocess.run([PY, "-m", "llmcompare.study", "plan", str(f), "--gpus", "", "--json"], capture_output=True,
                          text=True)
    assert [c["not_run"] for c in json.loads(out4.stdout)] == ["needs 1× L4", "needs 1× L4"]


PROBE = '''
import json, os, time
from llmcompare import hookimpl
from llmcompare.backend import BackendSpec, Capabilities, OptionSpec
from llmcompare.backends.echo import EchoBackend

class Probe(EchoBackend):
    def load(self):
        super().load()
        self._log({"event": "load"})
    def unload(self):
        self._log({"event": "unload"})
        super().unload()
    def _log(self, rec):
        rec.update(cell=os.environ.get("LLMCOMPARE_STUDY_CELL"), cuda=os.environ.get("CUDA_VISIBLE_DEVICES"),
                   t=time.time(), pid=os.getpid())
        with open(os.environ["STUDY_PROBE_LOG"], "a") as fh:
            fh.write(json.dumps(rec) + "\\n")

@hookimpl
def register_backends(register):
    register(BackendSpec(name="probe", target="study_probe_plugin:Probe", install="(test plugin)",
                         capabilities=Capabilities(devices=("cpu",), model_formats=("synthetic",), concurrent=True),
                         options={"ttft_ms": OptionSpec(float, 0.0), "per_token_ms": OptionSpec(float, 0.0)}))
'''

PACK = """\
name: pack
model: synthetic:smollm2-135m
scenario: load
workload: {input_tokens: 8, max_new_tokens: 4, requests: 6}
hardware:
  two: {gpu: a10g, count: 2, device: cpu}
  one: {gpu: a10g, count: 1, device: cpu}
matrix:
  backend: [probe]
  hardware: [two, one]
  option: ["ttft_ms=600", "ttft_ms=601", "ttft_ms=602"]
  concurrency: [[1]]
"""


@pytest.fixture
def probe_plugin(tmp_path, monkeypatch):
    d = tmp_path / "plugin"
    d.mkdir()
    (d / "study_probe_plugin.py").write_text(PROBE)
    log = tmp_path / "probe.jsonl"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(d), os.environ.get("PYTHONPATH", "")])))
    monkeypatch.setenv("LLMCOMPARE_PLUGINS", "study_probe_plugin")
    monkeypatch.setenv("STUDY_PROBE_LOG", str(log))
    monkeypatch.syspath_prepend(str(d))
    from llmcompare import plugins

    plugins.get_registry(reload=True)
    yield log
    monkeypatch.undo()
    sys.modules.pop("study_probe_plugin", None)
    plugins.get_registry(reload=True)


def test_gpu_cells_run_side_by_side_on_disjoint_device_sets(tmp_path, probe_plugin):
    f = write(tmp_path, PACK)
    out = tmp_path / "study"
    assert run_study(str(f), RunOptions(output=str(out), quiet=True, gpus="0,1,2,3")) == 0
    m = manifest(out)
    assert len(m["cells"]) == 6 and all(c["status"] == "done" for c in m["cells"])
    # what each cell saw, from inside its worker
    recs = [json.loads(x) for x in probe_plugin.read_text().splitlines()]
    spans = {}
    for r in recs:
        s = spans.setdefault(r["cell"], {"cuda": r["cuda"]})
        s[r["event"]] = r["t"]
    assert set(spans) == {c["id"] for c in m["cells"]}
    need = {c["id"]: c["gpus"] for c in m["cells"]}
    for cid, s in spans.items():
        devs = s["cuda"].split(",")
        assert len(devs) == need[cid] and set(devs) <= {"0", "1", "2", "3"}
        assert s["cuda"] == next(c["devices"] for c in m["cells"] if c["id"] == cid)
    overlapped = 0
    items = list(spans.items())
    for i, (a, sa) in enumerate(items):
        for b, sb in items[i + 1:]:
            if sa["load"] < sb["unload"] and sb["load"] < sa["unload"]:  # ran at the same time
                overlapped += 1
                assert not set(sa["cuda"].split(",")) & set(sb["cuda"].split(",")), (sa, sb)
    assert overlapped >= 2  # 4 GPUs: they did run side by side


def test_sigterm_of_the_driver_stops_the_running_cell_keeps_its_requests_and_resume_finishes(tmp_path):
    f = write(tmp_path, SLOW.replace("ttft_ms=15", "ttft_ms=50"))  # 0.5 s a request: time to stop mid-cell
    out = tmp_path / "study"
    driver = subprocess.Popen([PY, "-m", "llmcompare.study", "run", str(f), "-O", str(out), "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    second = None
    deadline = time.time() + 240
    while time.time() < deadline and second is None:
        time.sleep(0.3)
        if (out / "study.json").exists():
            cells = manifest(out)["cells"]
            req = out / "cells" / cells[1]["id"] / "requests.jsonl"
            if cells[1]["status"] == "running" and req.exists() and req.read_text().count('"request"') >= 5:
                second = cells[1]["id"]
    assert second
    cli = _children_of(driver.pid)
    driver.send_signal(signal.SIGTERM)
    err = driver.communicate(timeout=180)[1]
    assert driver.returncode == 130, err
    assert "continue with llmcompare study run --resume" in err
    assert not psutil.wait_procs(cli, timeout=30)[1]
    cells = manifest(out)["cells"]
    assert [c["status"] for c in cells] == ["done", "pending", "pending"]
    assert "interrupted" in cells[1]["error"]
    assert (out / "study.md").exists()  # the report of what finished
    assert run_study(None, RunOptions(resume=str(out), quiet=True)) == 0
    log = (out / "logs" / f"{second}.log").read_text()
    assert "resume: llmcompare run --resume" in log
    rows = [r for r in csv.DictReader(open(out / "cells" / second / "requests.csv")) if r["warmup"] == "False"]
    assert len(rows) == len({r["request_id"] for r in rows}) == 20
