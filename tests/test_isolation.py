"""Process isolation and durability: crashes and hangs become failed rows; nothing finished is lost."""

import json

import llmcompare
from llmcompare.records import read_records
from conftest import needs_model

pytestmark = needs_model


def test_crash_leaves_failed_row_and_others_finish(use_plugins, run_dir):
    use_plugins("llmcompare_testplugins")
    result = llmcompare.compare(
        ["echo", "crashy"],
        options=["crashy.crash_after=3"], max_new_tokens=4, repeats=1, warmup=0, output=run_dir,
    )
    crashy, echo = result.summary("crashy"), result.summary("echo")
    assert echo.status == "ok" and echo.n_requests == 10
    assert crashy.status == "failed"
    assert "SIGKILL" in crashy.error and "out of memory" in crashy.error
    # the three requests finished before the crash are on disk, and counted
    reqs, backs, _ = read_records(run_dir / "requests.jsonl")
    assert len([r for r in reqs if r.backend == "crashy"]) == 3
    assert crashy.n_requests == 3
    assert [b.status for b in backs if b.backend == "crashy"] == ["failed"]


def test_crash_does_not_stop_later_backends(use_plugins, run_dir):
    use_plugins("llmcompare_testplugins")
    result = llmcompare.compare(["crashy", "echo"], options=["crashy.crash_after=0"], max_new_tokens=4,
                                repeats=1, warmup=0, output=run_dir)
    assert [s.status for s in result.summaries] == ["failed", "ok"]


def test_hang_times_out(use_plugins, run_dir):
    use_plugins("llmcompare_testplugins")
    result = llmcompare.compare(["hangs", "echo"], options=["hangs.hang_after=2"], max_new_tokens=4, repeats=1,
                                warmup=0, timeout_s=6, output=run_dir)
    hangs = result.summary("hangs")
    assert hangs.status == "failed" and "timed out after 6 s" in hangs.error
    assert hangs.n_requests == 2
    assert result.summary("echo").status == "ok"


def test_resume_continues_without_redoing_finished_work(use_plugins, run_dir, tmp_path):
    use_plugins("llmcompare_testplugins")
    marker = tmp_path / "crashed-once"
    first = llmcompare.compare(["echo", "crashy"], options=["crashy.crash_after=4", f"crashy.marker={marker}"],
                               max_new_tokens=4, repeats=2, warmup=1, output=run_dir)
    assert first.summary("crashy").status == "failed" and marker.exists()
    lines_before = (run_dir / "requests.jsonl").read_text().splitlines()
    # warm-up (1) + 3 measured requests finished before the 5th call crashed
    measured_before = [json.loads(x) for x in lines_before if '"type":"request"' in x and '"crashy"' in x]
    assert sum(not r["warmup"] for r in measured_before) == 3

    second = llmcompare.api.resume(run_dir)
    crashy = second.summary("crashy")
    assert crashy.status == "ok" and crashy.n_requests == 20 and crashy.n_errors == 0
    reqs, backs, _ = read_records(run_dir / "requests.jsonl")
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
    reqs, backs, runs = read_records(path)
    assert len(runs) == 1 and reqs == [] and [b.status for b in backs] == ["failed"]
