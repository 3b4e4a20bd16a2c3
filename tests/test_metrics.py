"""Metric formulas against values computed by hand."""

import math

import pytest

from llmcompare.analysis import metrics
from llmcompare.records import BackendRecord, RequestRecord


def test_percentile_linear_interpolation():
    xs = [10.0, 20.0, 30.0, 40.0]
    # rank = q/100 * (n-1): p50 -> 1.5 -> 25; p90 -> 2.7 -> 37; p99 -> 2.97 -> 39.7
    assert metrics.percentile(xs, 50) == pytest.approx(25.0)
    assert metrics.percentile(xs, 90) == pytest.approx(37.0)
    assert metrics.percentile(xs, 99) == pytest.approx(39.7)
    assert metrics.percentile([5.0], 99) == 5.0
    assert metrics.percentile(list(reversed(xs)), 0) == 10.0


def test_describe_hand_computed():
    d = metrics.describe([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert d["n"] == 8
    assert d["mean"] == pytest.approx(5.0)
    # sample std: sum of squared deviations = 32, / 7
    assert d["std"] == pytest.approx(math.sqrt(32 / 7))
    assert d["p50"] == pytest.approx(4.5)
    assert (d["min"], d["max"]) == (2.0, 9.0)
    assert metrics.describe([])["n"] == 0 and metrics.describe([])["p50"] is None


def test_request_formulas():
    # hand-over at 0; tokens at 0.100, 0.120, 0.140, 0.160, 0.180 s
    t = [0.100, 0.120, 0.140, 0.160, 0.180]
    assert metrics.ttft(t) == pytest.approx(0.100)
    assert metrics.e2e(t) == pytest.approx(0.180)
    assert metrics.tpot(t) == pytest.approx((0.180 - 0.100) / 4)  # 20 ms, not e2e/n = 36 ms
    assert metrics.tokens_per_second(t) == pytest.approx(5 / 0.180)
    assert metrics.itl(t) == pytest.approx([0.02, 0.02, 0.02, 0.02])
    assert metrics.tpot([0.1]) is None


def test_itl_does_not_invent_gaps_inside_chunks():
    # two chunks of 3 tokens: one real gap of 60 ms, not five gaps of 12 ms
    t = [0.1, 0.1, 0.1, 0.16, 0.16, 0.16]
    assert metrics.itl(t) == pytest.approx([0.06])
    assert metrics.tpot(t) == pytest.approx(0.06 / 5)


def _req(label, pid, rep, times, ids=None, warmup=False, expected=None, error=None):
    return RequestRecord(
        backend=label, prompt_id=pid, repeat=rep, warmup=warmup, input_tokens=4,
        expected_output_tokens=expected if expected is not None else len(times), output_tokens=len(times),
        ttft_s=times[0] if times else None, e2e_s=times[-1] if times else None, token_times_s=times,
        token_ids=ids or list(range(len(times))), error=error,
    )


def test_summary_excludes_warmup_counts_mismatch_and_throughput():
    reqs = [
        _req("a", "p1", 0, [1.0, 1.5], warmup=True),  # cold: excluded from stats, reported
        _req("a", "p1", 0, [0.1, 0.2, 0.3]),
        _req("a", "p2", 0, [0.2, 0.3, 0.4]),
        _req("a", "p3", 0, [0.1, 0.2], expected=3),  # one token short: flagged
    ]
    backs = [BackendRecord("a", "a", None, "ok", measured_wall_s=2.0, load_s=0.5)]
    s = metrics.summarize("a", reqs, backs)
    assert s.n_requests == 3 and s.n_errors == 0 and s.n_length_mismatch == 1
    assert s.output_tokens == 8
    assert s.throughput_tok_s == pytest.approx(8 / 2.0)
    assert s.ttft_ms["p50"] == pytest.approx(100.0)
    assert s.tpot_ms["mean"] == pytest.approx(100.0)
    assert s.cold_ttft_ms == pytest.approx(1000.0) and len(s.warmup) == 1
    assert s.load_s == 0.5


def test_summary_prefers_successful_record_after_resume():
    reqs = [_req("a", "p1", 0, [], error="boom"), _req("a", "p1", 0, [0.1, 0.2])]
    s = metrics.summarize("a", reqs, [BackendRecord("a", "a", None, "ok", measured_wall_s=1.0)])
    assert s.n_requests == 1 and s.n_errors == 0


def test_agreement():
    ref = [_req("r", "p1", 0, [0.1] * 4, ids=[1, 2, 3, 4]), _req("r", "p2", 0, [0.1] * 4, ids=[5, 6, 7, 8])]
    oth = [_req("o", "p1", 0, [0.1] * 4, ids=[1, 2, 9, 4]), _req("o", "p2", 0, [0.1] * 4, ids=[5, 6, 7, 8])]
    a = metrics.agreement(ref, oth)
    assert a["prompts"] == 2
    assert a["token_match"] == pytest.approx((3 / 4 + 1) / 2)
    assert a["mean_prefix_tokens"] == pytest.approx((2 + 4) / 2)
    assert a["exact_prompts"] == 1


def test_bootstrap_ratio_detects_difference_and_noise():
    a = [10.0, 10.5, 9.5, 10.2, 9.8, 10.1, 9.9, 10.3]
    fast = [x / 2 for x in a]
    r = metrics.bootstrap_ratio(a, fast)
    assert r["ratio"] == pytest.approx(0.5)
    assert r["lo"] <= 0.5 <= r["hi"] and not r["within_noise"]
    same = metrics.bootstrap_ratio(a, list(reversed(a)))
    assert same["within_noise"] and same["ratio"] == pytest.approx(1.0)


def test_cost_per_million():
    # $1.52/h at 71 tok/s: 1.52 / (71 * 3600) * 1e6 = 5.9468...
    assert metrics.cost_per_million(1.52, 71.0) == pytest.approx(1.52 / (71 * 3600) * 1e6)
    assert metrics.cost_per_million(3.6, 1000.0) == pytest.approx(1.0)


def test_a_run_written_by_llmcompare_0_1_is_still_read(tmp_path):
    """The H200 run of 2026-11-21 predates scenarios and request ids: its figures come back unchanged."""
    import shutil
    from pathlib import Path

    from llmcompare.analysis.result import load_result

    src = Path(__file__).resolve().parent.parent / "benchmarks/results/2026-11-21-h200-transformers-cuda"
    shutil.copy(src / "requests.jsonl", tmp_path / "requests.jsonl")
    r = load_result(tmp_path)
    assert r.spec.scenario.max_new_tokens == 256 and r.spec.scenario.repeats == 1
    s = r.summary("fp16-static")
    assert s.n_requests == 10 and s.tpot_ms["p50"] == pytest.approx(6.60, abs=0.005)


def test_a_backend_whose_every_request_failed_is_a_failed_row():
    reqs = [_req("a", "p1", 0, [], error="RuntimeError: CUDA graphs overwritten"),
            _req("a", "p2", 0, [], error="RuntimeError: CUDA graphs overwritten")]
    s = metrics.summarize("a", reqs, [BackendRecord("a", "a", None, "ok", measured_wall_s=1.0)])
    assert s.status == "failed" and "every measured request failed" in s.error and "CUDA graphs" in s.error
