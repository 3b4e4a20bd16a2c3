"""Process isolation and durability: crashes and hangs become failed rows; nothing finished is lost."""

import json

import pytest
from conftest import needs_model

import llmcompare
from llmcompare.records import read_records

pytestmark = needs_model


@pytest.mark.engine
def test_crash_leaves_failed_row_and_others_finish(use_plugins, run_dir):
    use_plugins("llmcompare_testplugins")
    result = llmcompare.compare(
        ["echo", "crashy"],
        options=["crashy.crash_after=3"], max_new_tokens=4, repeats=1, warmup=0, output=run_dir, fidelity=False,
    )
    crashy, echo = result.summary("crashy"), result.summary("echo")
    assert echo.status == "ok" and echo.n_requests == 10
    assert crashy.status == "failed"
    assert "SIGKILL" in crashy.error and "out of memory" in crashy.error
    # the three requests finished before the crash are on disk, and counted
    recs = read_records(run_dir / "requests.jsonl")
    reqs, backs = recs.requests, recs.backends
    assert len([r for r in reqs if r.backend == "crashy"]) == 3
    assert crashy.n_requests == 3
    assert [b.status for b in backs if b.backend == "crashy"] == ["failed"]


@pytest.mark.engine
def test_a_crash_by_another_signal_carries_the_backends_crash_hint(use_plugins, run_dir):
    use_plugins("llmcompare_testplugins")
    result = llmcompare.compare(["crashy"], options=["crashy.crash_after=1", "crashy.signal=SIGSEGV"],
                                max_new_tokens=4, repeats=1, warmup=0, output=run_dir, fidelity=False)
    error = result.summary("crashy").error
    assert error.startswith("worker process died from SIGSEGV (a test crash: read the plugin's docs)")
    assert "out of memory" not in error and "\n" not in error


@pytest.mark.engine
def test_a_crashed_workers_failed_row_and_every_file_hold_no_secret(use_plugins, run_dir):
    use_plugins("llmcompare_testplugins")
    secret = "sk-crash-secret-14142"
    result = llmcompare.compare(["crashy"], options=["crashy.crash_after=1", f"crashy.api_key={secret}"],
                                max_new_tokens=4, repeats=1, warmup=0, output=run_dir, fidelity=False)
    error = result.summary("crashy").error
    # the failed row is the parent's (runner/isolation.py); the worker was handed the key (its last line)
    assert error.startswith("worker process died from SIGKILL") and "an api_key ending in 4142" in error
    backend = [b for b in read_records(run_dir / "requests.jsonl").backends if b.backend == "crashy"]
    assert [b.options["api_key"] for b in backend] == ["***"]
    from llmcompare.report.base import write_all

    write_all(result)  # and every report of it
    written = {str(p.relative_to(run_dir)): p.read_text("utf-8", "replace") for p in run_dir.rglob("*") if p.is_file()}
    assert {"run.json", "jobs/crashy.json", "logs/crashy.log", "results.json", "summary.md"} <= set(written)
    assert [name for name, text in written.items() if secret in text] == []
    assert json.loads(written["run.json"])["spec"]["backends"][0]["withheld"] == ["api_key"]


@pytest.mark.engine
def test_crash_does_not_stop_later_backends(use_plugins, run_dir):
    use_plugins("llmcompare_testplugins")
    result = llmcompare.compare(["crashy", "echo"], options=["crashy.crash_after=0"], max_new_tokens=4,
                                repeats=1, warmup=0, output=run_dir, fidelity=False)
    assert [s.status for s in result.summaries] == ["failed", "ok"]


@pytest.mark.engine
def test_hang_times_out(use_plugins, run_dir):
    use_plugins("llmcompare_testplugins")
    result = llmcompare.compare(["hangs", "echo"], options=["hangs.hang_after=2"], max_new_tokens=4, repeats=1,
                                warmup=0, timeout_s=6, output=run_dir, fidelity=False)
    hangs = result.summary("hangs")
    assert hangs.status == "failed" and "timed out after 6 s" in hangs.error
    assert hangs.n_requests == 2
    assert result.summary("echo").status == "ok"


@pytest.mark.engine
def test_resume_continues_without_redoing_finished_work(use_plugins, run_dir, tmp_path):
    use_plugins("llmcompare_testplugins")
    marker = tmp_path / "crashed-once"
    first = llmcompare.compare(["echo", "crashy"], options=["crashy.crash_after=4", f"crashy.marker={marker}"],
                               max_new_tokens=4, repeats=2, warmup=1, output=run_dir, fidelity=False)
    assert first.summary("crashy").status == "failed" and marker.exists()
    lines_before = (run_dir / "requests.jsonl").read_text().splitlines()
    # warm-up (1) + 3 measured requests finished before the 5th call crashed
    measured_before = [json.loads(x) for x in lines_before if '"type":"request"' in x and '"crashy"' in x]
    assert sum(not r["warmup"] for r in measured_before) == 3

    second = llmcompare.api.resume(run_dir)
    crashy = second.summary("crashy")
    assert crashy.status == "ok" and crashy.n_requests == 20 and crashy.n_errors == 0
    recs = read_records(run_dir / "requests.jsonl")
    reqs, backs = recs.requests, recs.backends
    measured = [r for r in reqs if r.backend == "crashy" and not r.warmup]
    assert len(measured) == 20  # 3 from the first run + 17 new: nothing done twice
    assert len({(r.prompt_id, r.repeat) for r in measured}) == 20
    # echo was complete: it was not run again
    assert len([b for b in backs if b.backend == "echo"]) == 1
    assert second.summary("echo").n_requests == 20
    # the file kept everything the first run wrote, in order
    assert (run_dir / "requests.jsonl").read_text().splitlines()[: len(lines_before)] == lines_before


def test_a_line_cut_short_by_a_crash_does_not_swallow_the_next_record(tmp_path):
    from llmcompare.records import BackendRecord, RecordWriter

    path = tmp_path / "requests.jsonl"
    path.write_text('{"type":"run"}\n{"type":"request","backend":"x","prom')  # killed mid-write
    with RecordWriter(path) as w:
        w.write(BackendRecord("x", "x", None, "failed", error="worker process died from SIGKILL"))
    recs = read_records(path)
    assert recs.run is not None and recs.requests == [] and [b.status for b in recs.backends] == ["failed"]


def _start_cli(*args):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "llmcompare", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_requests(path, n, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count('"type":"request"') >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} requests in {path} after {timeout} s")


@pytest.mark.engine
def test_kill_9_of_the_parent_leaves_no_worker_and_resume_is_clean(run_dir):
    import os
    import signal
    import time

    import psutil

    parent = _start_cli("-b", "echo", "--no-fidelity", "-o", "per_token_ms=20", "-n", "10", "-r", "3", "-w", "0", "-q", "-O",
                        str(run_dir))
    _wait_for_requests(run_dir / "requests.jsonl", 2)
    workers = psutil.Process(parent.pid).children(recursive=True)
    assert workers, "the worker should be running"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers outlived their parent: {alive}"
    lines_after_kill = (run_dir / "requests.jsonl").read_text()
    time.sleep(1.0)
    assert (run_dir / "requests.jsonl").read_text() == lines_after_kill  # nothing appends any more

    resumed = llmcompare.api.resume(run_dir)
    echo = resumed.summary("echo")
    assert echo.status == "ok" and echo.n_requests == 30 and echo.n_duplicates == 0
    assert resumed.duplicates == []


@pytest.mark.engine
def test_resume_of_a_run_a_live_process_holds_is_refused(run_dir):
    import subprocess
    import sys

    parent = _start_cli("-b", "echo", "--no-fidelity", "-o", "per_token_ms=20", "-n", "10", "-r", "3", "-w", "0", "-q", "-O",
                        str(run_dir))
    try:
        _wait_for_requests(run_dir / "requests.jsonl", 1)
        out = subprocess.run([sys.executable, "-m", "llmcompare", "--resume", str(run_dir)], capture_output=True, text=True)
        assert out.returncode == 2, out.stderr
        assert "is in use by pid" in out.stderr and f"pid {parent.pid}" in out.stderr
        assert "Traceback" not in out.stderr
    finally:
        parent.wait(timeout=120)
    assert parent.returncode == 0


@pytest.mark.engine
def test_a_request_recorded_twice_is_reported_not_dropped(use_plugins, run_dir):
    use_plugins("llmcompare_testplugins")
    llmcompare.compare(["echo"], max_new_tokens=4, repeats=1, warmup=0, output=run_dir, fidelity=False)
    path = run_dir / "requests.jsonl"
    lines = path.read_text().splitlines()
    first_request = next(x for x in lines if '"type":"request"' in x)
    path.write_text("\n".join(lines + [first_request]) + "\n")  # as a second writer would have done
    result = llmcompare.api.load_result(run_dir)
    s = result.summary("echo")
    assert s.n_duplicates == 1 and s.n_requests == 10
    assert [d.request_id for d in result.duplicates] == [json.loads(first_request)["request_id"]]
    from llmcompare.report.markdown import markdown

    assert "1 request(s) recorded twice" in markdown(result)


@pytest.mark.engine
def test_a_killed_workers_server_is_gone_when_the_run_goes_on(use_plugins, run_dir):
    """A worker killed at its time limit leaves its managed server to the guard, whose graceful stop
    takes time (a GPU server freeing its memory): the run waits for it before the next backend starts."""
    import re
    import time

    import psutil

    use_plugins("llmcompare_testplugins")
    started = time.monotonic()
    result = llmcompare.compare(["slowserver", "echo"], options=["slowserver.stop_s=3"], max_new_tokens=4, repeats=1,
                                warmup=0, timeout_s=8, output=run_dir, fidelity=False)
    slow = result.summary("slowserver")
    assert slow.status == "failed" and "timed out after 8 s" in slow.error
    assert result.summary("echo").status == "ok"
    log = (run_dir / "logs" / "slowserver.server.log").read_text()
    pid = int(re.search(r"server pid (\d+)", log).group(1))
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert time.monotonic() - started >= 8 + 3  # the timeout, then the server's slow stop
    assert not (run_dir / "jobs" / "slowserver.servers").exists()


@pytest.mark.engine
def test_sigterm_ends_the_cli_like_ctrl_c_and_the_run_resumes(run_dir):
    import os
    import signal

    import psutil

    parent = _start_cli("-b", "echo", "--no-fidelity", "-o", "per_token_ms=20", "-n", "10", "-r", "3", "-w", "0", "-q", "-O",
                        str(run_dir))
    _wait_for_requests(run_dir / "requests.jsonl", 2)
    workers = psutil.Process(parent.pid).children(recursive=True)
    os.kill(parent.pid, signal.SIGTERM)
    _, err = parent.communicate(timeout=60)
    assert parent.returncode == 130 and "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]  # stopped, not orphaned
    resumed = llmcompare.api.resume(run_dir)
    assert resumed.summary("echo").n_requests == 30
