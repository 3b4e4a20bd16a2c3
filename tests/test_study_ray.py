"""The Ray executor on a real local Ray instance: the same known answer as the local executor, nothing
listening beyond the loopback, and a Ray worker killed mid-cell (the cell reruns in a fresh directory;
nothing lost, nothing counted twice). A minute or two: the engine tier."""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.engine

from test_study_run import KNOWN, manifest, write

from llmcompare.runner import tempdirs

PY = sys.executable


@pytest.fixture
def private_tmp():
    """The driver's TMPDIR: a short directory of this test's own (Ray's socket paths must fit 107 bytes),
    so what another run left in the system's temporary directory cannot pass or fail the checks here."""
    d = tempfile.mkdtemp(prefix="llmcT-")
    yield d
    tempdirs.remove(d)


@pytest.fixture
def start(private_tmp):
    """Start ``llmcompare.study run ARGS`` with TMPDIR set to ``private_tmp``; a driver a failed test left
    running is stopped (SIGTERM, then SIGKILL) before its directory goes."""
    started: list[subprocess.Popen] = []

    def run(args: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.STDOUT)
        p = subprocess.Popen([PY, "-m", "llmcompare.study", "run", *args], env={**os.environ, "TMPDIR": private_tmp},
                             text=True, **kw)
        started.append(p)
        return p

    yield run
    for p in started:
        if p.poll() is None:
            p.terminate()
            try:
                p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()


def tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def listeners(ss_output: str) -> list[tuple[str, set[int]]]:
    """(local address, owning pids) of every line of ``ss -ltn[p]``."""
    out = []
    for line in ss_output.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        pids = {int(x) for x in re.findall(r"pid=(\d+)", line)}
        out.append((parts[3], pids))
    return out


def is_loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")


def watch_ray_listeners(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Poll ``proc``'s process tree until it exits; once its Ray instance runs tasks, assert that nothing
    of it listens beyond the loopback as the host sees it, and (as root) that Ray's raylet lives in a
    network namespace of its own whose only interface is the loopback. Whether it was seen running."""
    checked = False
    deadline = time.time() + timeout_s
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
        procs = tree(proc.pid)
        raylet = next((p for p in procs if _name(p) == "raylet"), None)
        if raylet is None or checked or not any(_name(p).startswith("ray::") for p in procs):
            continue
        pids = {p.pid for p in procs}
        host = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        for addr, owners in listeners(host):
            assert not (owners & pids) or is_loopback(addr), (addr, owners)  # none is seen from the host
        inside = subprocess.run(["nsenter", "-t", str(raylet.pid), "-n", "ss", "-ltn"], capture_output=True, text=True)
        if inside.returncode == 0:  # root: look inside Ray's network namespace too
            assert listeners(inside.stdout), inside.stdout  # Ray does listen there...
            devices = [ln.split(":")[0].strip() for ln in Path(f"/proc/{raylet.pid}/net/dev").read_text().splitlines()[2:]]
            assert devices == ["lo"], devices              # ...where the loopback is the only interface
            assert os.readlink(f"/proc/{raylet.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        checked = True
    return checked


def test_known_answer_on_local_ray_and_nothing_listens_beyond_the_loopback(tmp_path, private_tmp, start):
    f = write(tmp_path, KNOWN)
    out = tmp_path / "study"
    driver = start([str(f), "-O", str(out), "--executor", "ray", "-q"])
    checked = watch_ray_listeners(driver, timeout_s=600)
    log = driver.communicate(timeout=60)[0]
    assert driver.returncode == 0, log
    assert checked, "never saw the Ray instance running"
    m = manifest(out)
    assert all(c["status"] == "done" and c["executor"] == "ray" for c in m["cells"])
    assert sum(c["kind"] == "confirm" for c in m["cells"]) == 2
    from llmcompare.study import report

    a = report.build(out)["answers"]
    # the answer the local executor gives (tests/test_study_run.py)
    assert a["most_cost_effective"]["winner"]["deployment"] == "cheap · per_token_ms=20"
    assert a["most_cost_effective"]["winner"]["level"] == "c=2"
    for key in ("best_latency", "best_throughput"):
        both = {a[key]["winner"]["deployment"], *(t["deployment"] for t in a[key]["ties"])}
        assert both == {"cheap · per_token_ms=20", "dear · per_token_ms=20"}
    assert glob.glob(os.path.join(private_tmp, "llmcompare-study-attempts"))  # the cells ran under this TMPDIR...
    assert not glob.glob(os.path.join(private_tmp, "llmc-ray-*"))  # ...and Ray's session files are gone


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""


ONE = """\
name: one
model: synthetic:smollm2-135m
scenario: run
workload: {max_new_tokens: 4, repeats: 2, warmup: 1}
hardware:
  cpu: {}
matrix:
  backend: [echo]
  option: ["ttft_ms=250"]
"""


def test_a_ray_worker_killed_mid_cell_reruns_the_cell_and_nothing_is_lost_or_counted_twice(tmp_path, private_tmp,
                                                                                             start):
    f = write(tmp_path, ONE)
    out = tmp_path / "study"
    driver = start([str(f), "-O", str(out), "--executor", "ray", "-q"])
    killed = None
    deadline = time.time() + 300
    while driver.poll() is None and time.time() < deadline and killed is None:
        time.sleep(0.3)
        for p in tree(driver.pid):
            try:
                cell = p.environ().get("LLMCOMPARE_STUDY_CELL")
            except psutil.Error:
                continue
            if not cell or "llmcompare" not in " ".join(p.cmdline()):
                continue
            runs = glob.glob(os.path.join(private_tmp, f"llmcompare-cell-{cell}-*", "run", "requests.jsonl"))
            if runs and Path(runs[0]).read_text().count('"request"') >= 4:  # mid-cell: some requests finished
                worker = p.parent()
                assert _name(worker).startswith("ray::"), _name(worker)
                # the cell runs as under the local executor: the driver's niceness (Ray's workers run at
                # 15), and no thread count Ray set for its task
                assert p.nice() == os.getpriority(os.PRIO_PROCESS, 0)
                assert p.environ().get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS")
                killed = (cell, worker.pid, p.pid, runs[0])
                os.kill(worker.pid, signal.SIGKILL)
                break
    assert killed, "never caught the cell mid-run"
    log = driver.communicate(timeout=300)[0]
    assert driver.returncode == 0, log
    cell, worker_pid, cli_pid, old_records = killed
    assert not psutil.pid_exists(cli_pid) or psutil.Process(cli_pid).status() == psutil.STATUS_ZOMBIE
    (c,) = manifest(out)["cells"]
    assert c["id"] == cell and c["status"] == "done"
    assert c["ray_attempts"] == 2  # the killed attempt, then the rerun
    rows = [r for r in csv.DictReader(open(out / "cells" / cell / "requests.csv")) if r["warmup"] == "False"]
    assert len(rows) == len({r["request_id"] for r in rows}) == 20  # 10 prompts × 2 repeats, once each
    records = [json.loads(x) for x in (out / "cells" / cell / "requests.jsonl").read_text().splitlines()]
    assert len({r["session"] for r in records if r.get("type") == "request"}) == 1
    assert not os.path.exists(old_records)  # the lost attempt's directory was never sent back, and is gone
    assert not glob.glob(os.path.join(private_tmp, f"llmcompare-cell-{cell}-*"))
    assert not glob.glob(os.path.join(private_tmp, "llmc-ray-*"))


def _wait_mid_cell(tmp: str, driver: subprocess.Popen, timeout_s: float = 300, old: tuple = ()) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and driver.poll() is None:
        runs = glob.glob(os.path.join(tmp, "llmcompare-cell-*", "run", "requests.jsonl"))
        if any(os.path.dirname(os.path.dirname(r)) not in old for r in runs):
            return
        time.sleep(0.3)
    raise AssertionError("never caught a cell mid-run")


def test_a_killed_driver_s_files_go_with_the_next_run_and_sigterm_leaves_none(tmp_path, private_tmp, start):
    f = write(tmp_path, KNOWN)
    out = tmp_path / "study"
    killed = start(["-q", "--executor", "ray", str(f), "-O", str(out)], start_new_session=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_mid_cell(private_tmp, killed)
    os.killpg(killed.pid, signal.SIGKILL)  # as when a host goes down: nothing gets to clean up
    killed.wait()
    (ray_files,) = glob.glob(os.path.join(private_tmp, "llmc-ray-*"))
    (cell_files,) = glob.glob(os.path.join(private_tmp, "llmcompare-cell-*"))

    resumed = start(["-q", "--executor", "ray", "--resume", str(out)])
    _wait_mid_cell(private_tmp, resumed, old=(cell_files,))
    resumed.send_signal(signal.SIGTERM)
    log = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 130, log
    assert f"--resume {out}" in log
    # its own files and the killed run's (removed as it started Ray, or at the end where the killed
    # driver was still exiting then: tests/test_tempdirs.py checks each way)
    assert not os.path.exists(ray_files) and not os.path.exists(cell_files), log
    assert not glob.glob(os.path.join(private_tmp, "llmc-ray-*")), log
    assert not glob.glob(os.path.join(private_tmp, "llmcompare-cell-*")), log
