"""The load driver against a local server over HTTP: open-loop rate, a stall counted from the schedule,
faults counted by kind, a server that dies mid-level. The server is llmcompare's mock server."""

import pytest
from conftest import needs_model

import llmcompare
from llmcompare.records import read_records
from llmcompare.servers.mock import spawn

pytestmark = [pytest.mark.engine, needs_model]


def _load(url, run_dir, **kw):
    opts = [f"url={url}/v1"] + kw.pop("options", [])
    return llmcompare.load(["openai"], options=opts, output=run_dir, input_tokens=16, **kw)


def test_poisson_arrivals_reach_the_asked_rate(run_dir):
    srv = spawn(["--ttft-ms", "20", "--itl-ms", "5"])
    try:
        r = _load(srv.url, run_dir, rates=[15.0], arrivals="poisson", seed=11, duration_s=4.0, max_new_tokens=8)
    finally:
        srv.stop()
    lv = r.levels[0]
    assert lv.errors == 0 and lv.length_mismatch == 0
    assert lv.requests == pytest.approx(60, rel=0.35)
    assert lv.achieved_rate == pytest.approx(15.0, rel=0.3)
    assert not lv.fell_behind
    # the server's known service time: 20 ms to the first token, 5 ms between tokens
    assert lv.ttft_ms["p50"] == pytest.approx(20.0, abs=8.0)
    assert lv.tpot_ms["p50"] == pytest.approx(5.0, abs=2.0)


def test_a_stall_is_inside_the_latency_of_every_request_scheduled_during_it(run_dir):
    # the server stops sending for 2 s from the arrival of its 25th request (the adapter's probe is the
    # 1st, the warm-up the 2nd): every request scheduled during the stall must carry the rest of it,
    # whether or not the client could send it on time
    stall_for, nth = 2.0, 25
    srv = spawn(["--ttft-ms", "10", "--itl-ms", "2", "--stall-after", str(nth), "--stall-for", str(stall_for)])
    try:
        r = _load(srv.url, run_dir, rates=[10.0], duration_s=6.0, max_new_tokens=4)
    finally:
        srv.stop()
    recs = sorted(read_records(run_dir / "requests.jsonl").requests, key=lambda x: x.sent_at)
    begins = recs[nth - 2].sent_at  # the nth request the server saw (the probe is not in the file)
    ends = begins + stall_for
    measured = [x for x in recs if not x.warmup and x.error is None]
    inside = [x for x in measured if begins + 0.3 < x.scheduled_at < ends - 0.3]
    assert len(inside) >= 10, "requests should have been scheduled during the stall"
    for x in inside:
        remaining = ends - x.scheduled_at  # the stall's remainder when the request was due
        assert x.queue_s + x.ttft_s >= remaining - 0.3, (x.request_id, x.queue_s + x.ttft_s, remaining)
    before = [x for x in measured if x.scheduled_at < begins - 0.3]
    assert before and max(x.queue_s + x.ttft_s for x in before) < 0.5
    assert r.levels[0].ttft_ms["max"] >= (stall_for - 0.5) * 1000.0  # the stall shows in the level's TTFT tail


def test_first_token_timeouts_during_a_stall_are_their_own_kind(run_dir):
    srv = spawn(["--ttft-ms", "5", "--itl-ms", "1", "--stall-after", "6", "--stall-for", "3"])
    try:
        r = _load(srv.url, run_dir, concurrency=[2], requests=8, max_new_tokens=4, warmup=0,
                  options=["first_token_timeout_s=0.5"])
    finally:
        srv.stop()
    kinds = r.levels[0].errors_by_kind
    assert kinds.get("timeout_first_token", 0) >= 2 and set(kinds) == {"timeout_first_token"}, kinds


def test_faults_are_counted_by_kind_and_the_run_goes_on(run_dir):
    srv = spawn(["--ttft-ms", "2", "--itl-ms", "1", "--seed", "5",
                 "--faults", "overload=0.1,unavailable=0.05,server_error=0.08,stream_cut=0.1,malformed=0.1"])
    try:
        r = _load(srv.url, run_dir, concurrency=[4], requests=80, max_new_tokens=8, warmup=0)
    finally:
        srv.stop()
    lv = r.levels[0]
    assert r.summaries[0].status == "ok"
    assert lv.requests == 80
    for kind in ("overload", "server_error", "stream_cut", "malformed"):
        assert lv.errors_by_kind.get(kind, 0) > 0, (kind, lv.errors_by_kind)
    assert sum(lv.errors_by_kind.values()) == lv.errors < 60
    recs = read_records(run_dir / "requests.jsonl")
    failed = [x for x in recs.requests if x.error is not None]
    assert len(failed) == lv.errors and all(x.error_kind for x in failed)


def test_a_server_that_dies_mid_level_becomes_connect_errors_and_results_survive(run_dir):
    srv = spawn(["--ttft-ms", "2", "--itl-ms", "2", "--die-after", "12"])
    try:
        r = _load(srv.url, run_dir, concurrency=[2], requests=30, max_new_tokens=8, warmup=0,
                  options=["connect_timeout_s=2"])
    finally:
        srv.stop()
    lv = r.levels[0]
    assert lv.requests == 30
    assert lv.errors_by_kind.get("connect", 0) >= 10, lv.errors_by_kind
    assert 5 <= lv.requests - lv.errors <= 12  # what finished before the server died is kept
    # more than half the level failed: it is not a result (llmcompare.limits.MAX_FAILED_SHARE)
    assert lv.failed.startswith(f"{lv.errors} of its 30 measured requests failed (connect")
    assert r.summaries[0].status == "failed" and r.summaries[0].error.startswith("level load:c=2 failed: ")


def test_two_client_processes_drive_one_level_together(run_dir):
    srv = spawn(["--ttft-ms", "5", "--itl-ms", "5"])
    try:
        r = _load(srv.url, run_dir, concurrency=[4], requests=20, max_new_tokens=8, clients=2)
    finally:
        srv.stop()
    lv = r.levels[0]
    assert r.summaries[0].status == "ok", r.summaries[0].error
    assert lv.requests == 20 and lv.errors == 0 and lv.length_mismatch == 0
    recs = read_records(run_dir / "requests.jsonl")
    warm = [x for x in recs.requests if x.warmup]
    assert len(warm) == 4 and not recs.duplicates  # one warm-up wave across both processes
    by_client = {x.request_id.rpartition("@")[2] if "@" in x.request_id else "0" for x in recs.requests}
    assert by_client == {"0", "1"}  # both processes sent requests
    assert recs.stages[-1].params["clients"] == 2
    assert lv.tpot_ms["p50"] == pytest.approx(5.0, abs=2.0)
