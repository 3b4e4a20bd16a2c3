"""The load driver and its analysis: levels, open loop from the schedule, knee, SLO, cost, resume."""

import csv
import json

import pytest
from conftest import needs_model

import llmcompare
from llmcompare.analysis import levels as lv_mod
from llmcompare.records import read_records

pytestmark = needs_model


@pytest.mark.engine
def test_closed_loop_levels_scale_an_ideal_server(run_dir):
    # echo's async path never slows a request down: throughput grows with concurrency, TPOT stays put
    r = llmcompare.load(["echo"], options=["per_token_ms=4"], concurrency=[1, 4], requests=12, max_new_tokens=10,
                        output=run_dir)
    assert [lv.stage for lv in r.levels] == ["load:c=1", "load:c=4"]
    one, four = r.levels
    assert one.requests == four.requests == 12 and one.errors == four.errors == 0
    assert four.output_tok_s > 2.5 * one.output_tok_s
    assert four.tpot_ms["p50"] == pytest.approx(4.0, rel=0.25) and one.tpot_ms["p50"] == pytest.approx(4.0, rel=0.25)
    assert four.max_in_flight == 4 and one.max_in_flight == 1
    recs = read_records(run_dir / "requests.jsonl")
    warm = [x for x in recs.requests if x.warmup]
    assert len(warm) == 1 + 4  # the default warm-up is one wave of the level's concurrency
    # every request was distinct (echo echoes its prompt, so its output shows what was sent)
    sent = [tuple(x.token_ids) for x in recs.requests]
    assert len(set(sent)) == len(sent)
    assert len({(x.stage, x.request_id) for x in recs.requests}) == len(recs.requests)


@pytest.mark.engine
def test_every_request_is_distinct_and_lengths_are_drawn(run_dir):
    r = llmcompare.load(["echo"], concurrency=[2], requests=20, max_new_tokens=8, output_tokens_dist="uniform:4-12",
                        input_tokens=32, seed=7, output=run_dir)
    recs = read_records(run_dir / "requests.jsonl").requests
    ids = [tuple(x.token_ids) for x in recs]  # echo echoes its prompt: the output shows what was sent
    assert len(set(ids)) == len(ids)
    assert all(x.input_tokens == 32 for x in recs)
    lengths = {x.expected_output_tokens for x in recs}
    assert len(lengths) > 3 and min(lengths) >= 4 and max(lengths) <= 12
    assert all(x.output_tokens == x.expected_output_tokens for x in recs)
    assert r.levels[0].length_mismatch == 0


@pytest.mark.engine
def test_open_loop_reaches_the_asked_rate(run_dir):
    r = llmcompare.load(["echo"], options=["per_token_ms=2"], rates=[20.0], arrivals="poisson", seed=3, duration_s=3.0,
                        max_new_tokens=8, output=run_dir)
    lv = r.levels[0]
    assert lv.rate == 20.0 and lv.arrivals == "poisson"
    assert lv.requests == pytest.approx(60, rel=0.35)  # Poisson over 3 s: 60 expected
    assert lv.achieved_rate == pytest.approx(20.0, rel=0.35)
    assert not lv.fell_behind and lv.queue_ms["p99"] < 10.0


@pytest.mark.engine
def test_a_sync_backend_queues_under_open_loop_and_latency_counts_from_the_schedule(use_plugins, run_dir):
    # echo served through its *sync* path (a test plugin without astream) handles one request at a time:
    # at twice its service rate the queue grows, and TTFT counted from the schedule grows with it
    use_plugins("llmcompare_testplugins")
    r = llmcompare.load(["syncecho"], options=["per_token_ms=10"], rates=[20.0], requests=20, max_new_tokens=10,
                        warmup=0, output=run_dir)
    lv = r.levels[0]
    assert lv.concurrent_backend is False
    # service time ~100 ms, arrivals every 50 ms: the 20th request waits ~19 × 50 ms
    assert lv.ttft_ms["max"] > 700.0
    assert lv.tpot_ms["p50"] == pytest.approx(10.0, rel=0.3)
    assert lv.output_tok_s == pytest.approx(100.0, rel=0.3)  # one request at a time: 10 tok / 100 ms


@pytest.mark.engine
def test_levels_csv_report_and_resume(run_dir):
    llmcompare.load(["echo"], options=["per_token_ms=1"], concurrency=[1, 2], requests=6, max_new_tokens=4,
                    price_per_hour=["echo=3.6"], slo="ttft_ms=1000,tpot_ms=100", output=run_dir)
    from llmcompare.report.base import write_all

    result = llmcompare.api.load_result(run_dir)
    paths = write_all(result)
    rows = list(csv.DictReader(open(paths["levels"])))
    assert [row["stage"] for row in rows] == ["load:c=1", "load:c=2"]
    for col in ("backend", "concurrency", "rate", "requests", "errors", "output_tok_s", "req_s", "ttft_p50_ms",
                "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "e2e_p50_ms", "goodput_req_s", "cost_per_1m_tokens"):
        assert col in rows[0], col
    # cost per 1M tokens by hand from the level's own throughput: $3.6/h at T tok/s = 1e6 / (T * 1000)
    for row in rows:
        assert float(row["cost_per_1m_tokens"]) == pytest.approx(3.6 / (float(row["output_tok_s"]) * 3600) * 1e6)
        assert float(row["goodput_req_s"]) == pytest.approx(float(row["req_s"]))  # every request meets a loose SLO
    # resume: both levels are complete, nothing runs again
    before = (run_dir / "requests.jsonl").read_text()
    again = llmcompare.api.resume(run_dir)
    assert len(again.levels) == 2
    assert (run_dir / "requests.jsonl").read_text() == before
    body = json.loads(paths["json"].read_text())
    assert body["analysis"]["recommendations"]["most_cost_effective"]["backend"] == "echo"


@pytest.mark.engine
def test_an_interrupted_level_is_redone_whole_on_resume(run_dir):
    r = llmcompare.load(["echo"], options=["per_token_ms=1"], concurrency=[1, 2], requests=5, max_new_tokens=4,
                        output=run_dir)
    path = run_dir / "requests.jsonl"
    lines = path.read_text().splitlines()
    # cut the run after the first level's stage record, as a kill would
    cut = next(i for i, x in enumerate(lines) if '"type":"stage"' in x)
    path.write_text("\n".join(lines[: cut + 3]) + "\n")
    again = llmcompare.api.resume(run_dir)
    assert [lv.stage for lv in again.levels] == ["load:c=1", "load:c=2"]
    assert all(lv.requests == 5 and lv.errors == 0 for lv in again.levels)
    assert again.levels[0].stage == r.levels[0].stage and again.levels[0].output_tok_s == r.levels[0].output_tok_s


def _level(stage, c, tok_s, tpot, price=None):
    d = {"n": 1, "mean": tpot, "p50": tpot, "p90": tpot, "p99": tpot, "std": 0.0, "min": tpot, "max": tpot}
    return lv_mod.Level(backend="b", stage=stage, concurrency=c, rate=None, arrivals=None, requests=10, errors=0,
                        errors_by_kind={}, length_mismatch=0, wall_s=1.0, output_tokens=int(tok_s),
                        output_tok_s=tok_s, req_s=1.0, ttft_ms=d, tpot_ms=d, itl_ms=d, e2e_ms=d, queue_ms=d,
                        achieved_rate=None, achieved_concurrency=None, max_in_flight=c, fell_behind=False,
                        price_per_hour=price)


def test_knee_on_a_synthetic_curve_with_a_known_answer():
    # throughput doubles while TPOT barely moves up to 8, then +5% throughput for +60% TPOT: knee at 8
    curve = [_level("load:c=1", 1, 50, 20.0), _level("load:c=2", 2, 98, 20.5), _level("load:c=4", 4, 190, 21.0),
             _level("load:c=8", 8, 350, 23.0), _level("load:c=16", 16, 368, 37.0), _level("load:c=32", 32, 372, 75.0)]
    assert lv_mod.knee(curve).stage == "load:c=8"
    # a step whose gain is below 10% ends the walk even if latency did not rise
    flat = [_level("load:c=1", 1, 50, 20.0), _level("load:c=2", 2, 52, 20.0), _level("load:c=4", 4, 200, 20.0)]
    assert lv_mod.knee(flat).stage == "load:c=1"
    # a step that buys +30% throughput for +50% TPOT is not worth it
    costly = [_level("load:c=1", 1, 100, 10.0), _level("load:c=2", 2, 130, 15.0)]
    assert lv_mod.knee(costly).stage == "load:c=1"


def test_cost_per_million_tokens_by_hand():
    from llmcompare.analysis.metrics import cost_per_million

    # the seed's SageMaker figure: 13B GPTQ on g5.2xlarge, 71 tok/s at $1.52/h -> about $5.95 per 1M
    assert cost_per_million(1.52, 71.0) == pytest.approx(5.9468, abs=1e-3)


@pytest.mark.engine
def test_sweep_runs_synchronous_then_throughput_then_rates_between(run_dir):
    r = llmcompare.load(["echo"], options=["per_token_ms=5"], sweep=True, sweep_levels=2, concurrency=[4],
                        requests=8, max_new_tokens=8, output=run_dir)
    stages = [lv.stage for lv in r.levels]
    assert stages[:2] == ["load:c=1", "load:c=4"] and len(stages) == 4, stages
    sync, top = r.levels[0].req_s, r.levels[1].req_s
    rates = [lv.rate for lv in r.levels[2:]]
    assert all(sync < x < top for x in rates) and rates == sorted(rates)
    assert r.analysis["backends"]["echo"]["knee"] is not None
