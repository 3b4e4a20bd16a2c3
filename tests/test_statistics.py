"""Bootstrap intervals and paired speed-ups: coverage over many seeds, the power of pairing, and the
intervals in summaries, comparisons and results.json."""

import json

import numpy as np
import pytest
from conftest import needs_model

from llmcompare.analysis import metrics, statistics
from llmcompare.analysis.baseline import compare_summaries
from llmcompare.analysis.result import load_result
from llmcompare.records import BackendRecord, RequestRecord

SEEDS = 300


def _req(label, pid, rep, times, warmup=False, error=None, stage="latency"):
    return RequestRecord(
        backend=label, prompt_id=pid, repeat=rep, warmup=warmup, input_tokens=4, expected_output_tokens=len(times),
        output_tokens=len(times), ttft_s=times[0] if times else None, e2e_s=times[-1] if times else None,
        token_times_s=list(times), token_ids=list(range(len(times))), error=error, stage=stage,
    )


def _records(label, e2e_by_prompt, tokens=2):
    """One record per (prompt, repeat) with the given e2e seconds; TTFT is a tenth of it."""
    out = []
    for pid, reps in e2e_by_prompt.items():
        for rep, e in enumerate(reps):
            ttft = e / 10
            out.append(_req(label, pid, rep, [ttft + (e - ttft) * i / (tokens - 1) for i in range(tokens)]))
    return out


def _prompts_world(rng, n_prompts, repeats, speedup, prompt_sigma, repeat_sigma, ratio_sigma=0.0):
    """Per-request e2e times of a baseline and of a backend ``speedup`` times faster on average.

    Prompts differ in cost by a lognormal factor (``prompt_sigma``: prompts of very different
    lengths); each prompt's own speed-up is lognormal around ``speedup`` (``ratio_sigma``); every
    request has its own lognormal noise (``repeat_sigma``). The population's geometric-mean speed-up
    is exactly ``speedup``: the noise is symmetric in log space on both sides."""
    cost = rng.lognormal(np.log(0.5), prompt_sigma, n_prompts)
    own = rng.lognormal(np.log(speedup), ratio_sigma, n_prompts) if ratio_sigma else np.full(n_prompts, speedup)
    base = {f"p{i}": list(cost[i] * rng.lognormal(0, repeat_sigma, repeats)) for i in range(n_prompts)}
    other = {f"p{i}": list(cost[i] / own[i] * rng.lognormal(0, repeat_sigma, repeats)) for i in range(n_prompts)}
    return base, other


# ---- coverage -----------------------------------------------------------------------------------

def test_the_95_percent_interval_of_a_median_covers_the_truth_at_about_95_percent():
    truth = 20.0  # the median of lognormal(log 20, 0.5)
    covered = 0
    for seed in range(SEEDS):
        values = np.random.default_rng(seed).lognormal(np.log(truth), 0.5, 40)
        ci = statistics.bootstrap_ci(list(values), "median", seed=seed)
        covered += ci["lo"] <= truth <= ci["hi"]
    assert 0.90 <= covered / SEEDS <= 0.99, covered


def test_resampling_by_prompt_keeps_its_coverage_where_resampling_requests_loses_it():
    """Repeats of one prompt are near-copies: resampled as independent requests, the interval is
    about half as wide as it should be and misses the truth far more often than 5%."""
    truth = 10.0  # median of exp(log 10 + prompt effect + repeat noise), both symmetric
    by_prompt = by_request = 0
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        effect = rng.normal(0, 0.5, 20)
        values, prompts = [], []
        for p in range(20):
            values += list(truth * np.exp(effect[p] + rng.normal(0, 0.05, 4)))
            prompts += [f"p{p}"] * 4
        ci = statistics.bootstrap_ci(values, "median", seed=seed, clusters=prompts)
        naive = statistics.bootstrap_ci(values, "median", seed=seed)
        assert ci["resampled"] == "prompts" and ci["clusters"] == 20 and naive["resampled"] == "requests"
        by_prompt += ci["lo"] <= truth <= ci["hi"]
        by_request += naive["lo"] <= truth <= naive["hi"]
    assert 0.90 <= by_prompt / SEEDS <= 0.99, by_prompt
    assert by_request / SEEDS < 0.85, by_request


def test_the_paired_speedup_interval_covers_a_true_1_2x_at_about_95_percent():
    covered = 0
    for seed in range(SEEDS):
        base, other = _prompts_world(np.random.default_rng(seed), 30, 3, 1.2, prompt_sigma=1.0,
                                     repeat_sigma=0.05, ratio_sigma=0.1)
        sp = statistics.paired_speedup(_records("a", base), _records("b", other), "e2e_ms", seed=seed)
        assert sp["prompts"] == 30 and sp["dropped"] == 0
        covered += sp["lo"] <= 1.2 <= sp["hi"]
    assert 0.90 <= covered / SEEDS <= 0.99, covered


# ---- the paired speed-up ------------------------------------------------------------------------

def test_pairing_by_prompt_detects_5_percent_that_an_unpaired_ratio_cannot():
    base, other = _prompts_world(np.random.default_rng(7), 30, 3, 1.05, prompt_sigma=1.0, repeat_sigma=0.02)
    a, b = _records("a", base), _records("b", other)
    sp = statistics.paired_speedup(a, b, "e2e_ms")
    assert sp["lo"] > 1.0 and sp["lo"] <= 1.05 <= sp["hi"] and sp["hi"] < 1.1
    assert not sp["within_noise"] and sp["verdict"] == "faster"
    unpaired = statistics.bootstrap_ratio([metrics.request_row(r)["e2e_ms"] for r in a],
                                          [metrics.request_row(r)["e2e_ms"] for r in b],
                                          clusters_a=[r.prompt_id for r in a], clusters_b=[r.prompt_id for r in b])
    assert unpaired["within_noise"] and unpaired["hi"] / unpaired["lo"] > 1.5  # prompt lengths swamp 5%
    back = statistics.paired_speedup(b, a, "e2e_ms")
    assert back["verdict"] == "slower" and back["speedup"] == pytest.approx(1 / sp["speedup"])
    # per-request tok/s: higher is better, so the same backend is still "faster"
    assert statistics.paired_speedup(a, b, "tok_s")["verdict"] == "faster"


def test_no_true_difference_is_within_noise():
    base, other = _prompts_world(np.random.default_rng(3), 30, 3, 1.0, prompt_sigma=1.0, repeat_sigma=0.02)
    sp = statistics.paired_speedup(_records("a", base), _records("b", other), "e2e_ms")
    assert sp["within_noise"] and sp["verdict"] == "no difference (within noise)"
    assert sp["lo"] <= 1.0 <= sp["hi"] and sp["hi"] - sp["lo"] < 0.03


def test_only_prompts_both_backends_completed_are_paired():
    a = _records("a", {f"p{i}": [0.5, 0.5] for i in range(10)})
    b = _records("b", {f"p{i}": [0.25, 0.25] for i in range(9)})  # never ran p9
    b = [r if r.prompt_id != "p3" else _req("b", "p3", r.repeat, [], error="boom") for r in b]  # p3 failed
    b.append(_req("b", "p0", 0, [0.9, 9.0], warmup=True))  # warm-up: ignored
    sp = statistics.paired_speedup(a, b, "e2e_ms")
    assert sp["prompts"] == 8 and sp["dropped"] == 2
    assert sp["speedup"] == pytest.approx(2.0) and sp["lo"] == pytest.approx(2.0) and sp["metric"] == "e2e_ms"
    assert statistics.paired_speedup(a[:2], b, "e2e_ms") is None  # one prompt in common: nothing to say


# ---- bootstrap_ci's contract --------------------------------------------------------------------

def test_bootstrap_ci_contract():
    assert statistics.bootstrap_ci([]) is None and statistics.bootstrap_ci([1.0, None, float("nan")]) is None
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0]
    ci = statistics.bootstrap_ci(values + [None])
    assert ci["value"] == pytest.approx(metrics.percentile(values, 50)) and ci["n"] == 11
    assert ci == statistics.bootstrap_ci(values)  # seeded: the same interval every time
    smooth = list(np.random.default_rng(0).lognormal(0, 1, 30))
    assert statistics.bootstrap_ci(smooth, seed=1)["lo"] != statistics.bootstrap_ci(smooth, seed=2)["lo"]
    one_prompt = statistics.bootstrap_ci(values, clusters=["p"] * len(values))
    assert one_prompt["resampled"] == "requests" and one_prompt["clusters"] == 11


@pytest.mark.parametrize("stat, fn", [("median", np.median), ("mean", np.mean),
                                      ("p90", lambda x: np.percentile(x, 90))])
def test_vectorised_statistics_match_the_function_applied_resample_by_resample(stat, fn):
    """Unequal prompts (1 to 5 repeats) pad the resampling matrix with NaN; the vectorised median,
    mean and percentile must see through the padding exactly."""
    rng = np.random.default_rng(0)
    values, prompts = [], []
    for p in range(12):
        k = 1 + p % 5
        values += list(rng.lognormal(0, 1, k))
        prompts += [p] * k
    fast = statistics.bootstrap_ci(values, stat, clusters=prompts, resamples=300)
    slow = statistics.bootstrap_ci(values, fn, clusters=prompts, resamples=300)
    assert fast == pytest.approx(slow)


def test_ratio_of_sums_resamples_prompts():
    ci = statistics.ratio_of_sums_ci([10, 10, 20, 20], [1.0, 1.0, 1.0, 3.0], clusters=["a", "a", "b", "b"])
    assert ci["value"] == pytest.approx(60 / 6) and ci["clusters"] == 2 and ci["resampled"] == "prompts"
    # the only resamples are {a, a} (10 tok/s), {a, b} and {b, b} (10 tok/s): all 10
    assert ci["lo"] == pytest.approx(10.0) and ci["hi"] == pytest.approx(10.0)
    assert statistics.ratio_of_sums_ci([1], [1.0]) is None


def test_the_old_import_still_works():
    from llmcompare.analysis.metrics import bootstrap_ratio

    assert bootstrap_ratio is statistics.bootstrap_ratio


# ---- summaries and comparisons ------------------------------------------------------------------

def _stage(label, e2e_by_prompt, stage="latency"):
    recs = _records(label, e2e_by_prompt, tokens=8)
    for r in recs:
        r.stage = stage
    wall = 1.01 * sum(r.token_times_s[-1] for r in recs)  # batch 1: the e2e times plus small gaps
    return recs, BackendRecord(label, "echo", None, "ok", measured_wall_s=wall)


def test_summarize_gives_every_headline_figure_an_interval_around_it():
    rng = np.random.default_rng(5)
    recs, back = _stage("a", {f"p{i}": list(rng.lognormal(np.log(0.5), 0.3, 3)) for i in range(10)})
    recs.append(_req("a", "p0", 0, [2.0, 3.0], warmup=True))
    s = metrics.summarize("a", recs, [back])
    assert set(s.ci) == set(metrics.CI_FIGURES) | {"output_tok_s"}
    for ci in s.ci.values():
        assert ci["lo"] <= ci["value"] <= ci["hi"] and ci["lo"] < ci["hi"]
        assert (ci["n"], ci["clusters"], ci["resampled"], ci["confidence"]) == (30, 10, "prompts", 0.95)
    assert s.ci["tpot_p50_ms"]["value"] == pytest.approx(s.tpot_ms["p50"])
    assert s.ci["ttft_mean_ms"]["value"] == pytest.approx(s.ttft_ms["mean"])
    assert s.ci["request_tok_s_p50"]["value"] == pytest.approx(s.tok_s["p50"])
    assert s.ci["output_tok_s"]["value"] == pytest.approx(s.throughput_tok_s)
    assert json.loads(json.dumps(s.to_dict()))["ci"]["e2e_p50_ms"]["hi"] == pytest.approx(s.ci["e2e_p50_ms"]["hi"])


def test_load_levels_get_no_intervals():
    recs, back = _stage("a", {f"p{i}": [0.5, 0.6] for i in range(5)}, stage="load:c=4")
    assert metrics.summarize("a", recs, [back]).ci == {}
    assert metrics.summarize("a", recs, [back], intervals=True).ci


def test_comparisons_carry_paired_speedups():
    base, other = _prompts_world(np.random.default_rng(11), 12, 2, 1.25, prompt_sigma=0.8, repeat_sigma=0.02)
    a, _ = _stage("a", base)
    b, _ = _stage("b", other)
    (c,) = compare_summaries(["a", "b"], a + b, None, ["latency"])
    for key in ("speedup_tpot", "speedup_ttft", "speedup_e2e"):
        sp = c[key]
        assert sp["verdict"] == "faster" and sp["lo"] <= 1.25 <= sp["hi"] and sp["prompts"] == 12, (key, sp)
    assert c["speedup_e2e"]["metric"] == "e2e_ms" and c["e2e_ratio"]["ratio"] < 1


@pytest.mark.engine
@needs_model
def test_results_json_has_intervals_and_speedups(tmp_path):
    """Two echo backends at 4 and 6 ms per token: the second is 1.5x slower per token, paired by prompt."""
    import llmcompare

    result = llmcompare.compare(["echo", "echo@b"], options=["per_token_ms=4", "ttft_ms=5", "b.per_token_ms=6"],
                                max_new_tokens=12, repeats=2, warmup=1, output=tmp_path / "run", fidelity=False)
    data = json.loads(json.dumps(result.to_dict(), default=str))  # what results.json holds (report.write_all)
    again = load_result(result.run_dir)  # rebuilt from requests.jsonl: the seeded intervals come back equal
    assert [s.ci for s in again.summaries] == [s.ci for s in result.summaries]
    for s in data["summaries"]:
        tpot = s["ci"]["tpot_p50_ms"]
        assert tpot["lo"] <= tpot["value"] <= tpot["hi"] and tpot["resampled"] == "prompts"
        assert s["ci"]["output_tok_s"]["value"] == pytest.approx(s["throughput_tok_s"])
    (c,) = data["comparisons"]
    assert c["speedup_tpot"]["speedup"] == pytest.approx(4 / 6, rel=0.05) and c["speedup_tpot"]["verdict"] == "slower"
    assert c["speedup_tpot"]["dropped"] == 0 and c["speedup_tpot"]["prompts"] == len(data["prompts"])
