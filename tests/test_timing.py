"""Timing truth: what the echo backend is configured to do is what llmcompare measures."""

import pytest
from conftest import needs_model

import llmcompare

pytestmark = pytest.mark.engine  # the engine tier: whole runs, live servers or real engines


@needs_model
def test_echo_latency_measured_back_within_5_percent(run_dir):
    result = llmcompare.compare(
        ["echo"], options=["ttft_ms=50", "per_token_ms=10"], max_new_tokens=16, repeats=2, warmup=1,
        output=run_dir, fidelity=False,
    )
    s = result.summary("echo")
    assert s.status == "ok" and s.n_requests == 20 and s.n_length_mismatch == 0
    assert s.ttft_ms["p50"] == pytest.approx(50.0, rel=0.05)
    assert s.tpot_ms["p50"] == pytest.approx(10.0, rel=0.05)
    assert s.e2e_ms["p50"] == pytest.approx(50.0 + 15 * 10.0, rel=0.05)
    assert s.itl_ms["p50"] == pytest.approx(10.0, rel=0.05)
    assert s.tok_s["p50"] == pytest.approx(16 / 0.200, rel=0.05)
    assert len(s.warmup) == 1 and s.cold_ttft_ms is not None


@needs_model
def test_chunked_stream_counts_tokens_not_events(run_dir):
    # 4 tokens per chunk: 4 real gaps of 40 ms between 5 chunks, TPOT still 10 ms/token
    result = llmcompare.compare(
        ["echo"], options=["ttft_ms=20", "per_token_ms=10", "chunk=4"], max_new_tokens=20, repeats=1, warmup=0,
        prompts="default", output=run_dir, fidelity=False,
    )
    s = result.summary("echo")
    assert s.n_length_mismatch == 0
    assert s.itl_ms["p50"] == pytest.approx(40.0, rel=0.05)
    assert s.itl_ms["n"] == 4 * 10
    assert s.tpot_ms["p50"] == pytest.approx(160.0 / 19, rel=0.05)
