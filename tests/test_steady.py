"""Steady state: a level whose TTFT (and requests in flight) keeps rising is flagged "not steady";
flat series, noisy or not, are not; the warm-up and the window's first 10% are left out."""

from __future__ import annotations

import math
import random

import pytest

from llmcompare.analysis.steady import (
    check_level, check_steady, fit_slope, in_flight_at_sends, level_series, steady_window, t_cdf, t_ppf,
)


def test_t_quantiles():
    table = {(1, 0.975): 12.7062, (2, 0.975): 4.3027, (5, 0.975): 2.5706, (10, 0.975): 2.2281, (30, 0.975): 2.0423,
             (10, 0.95): 1.8125, (1e6, 0.975): 1.95996}
    for (df, p), q in table.items():
        assert t_ppf(p, df) == pytest.approx(q, abs=2e-4), (df, p)
    assert t_ppf(0.025, 10) == pytest.approx(-2.2281, abs=2e-4)
    assert t_cdf(0.0, 3) == 0.5 and t_cdf(2.2281, 10) == pytest.approx(0.975, abs=1e-5)
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1.5, 3, 7.25, 40, 500):
        for p in (0.9, 0.975, 0.995):
            assert t_ppf(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-7)


def overloaded_level(seed, rate=10.0, service=8.0, seconds=60.0):
    """Open loop past capacity: arrivals every 1/rate s, one server of ``service`` requests/s, FIFO.
    TTFT from the schedule grows linearly, and so do the requests in flight."""
    rng = random.Random(seed)
    free, records = 0.0, []
    for i in range(int(rate * seconds)):
        sched = i / rate
        start = max(sched, free)
        dur = rng.expovariate(service)
        free = start + dur
        ttft = start - sched + dur * 0.3
        records.append({"scheduled_at": sched, "sent_at": sched, "ttft_s": ttft, "e2e_s": free - sched,
                        "warmup": i < 2, "error": None})
    return records


def flat_level(seed, n=600, seconds=60.0, sigma=0.3, spikes=0.0, concurrency=None):
    rng = random.Random(seed)
    records = []
    for i in range(n):
        sched = i * seconds / n
        ttft = 0.2 * math.exp(rng.gauss(0, sigma))
        if spikes and rng.random() < spikes:
            ttft *= 10
        records.append({"scheduled_at": sched, "sent_at": sched, "ttft_s": ttft,
                        "e2e_s": (concurrency or 1) * seconds / n, "warmup": False, "error": None})
    return records


def test_an_overloaded_level_is_not_steady():
    for seed in range(5):
        check = check_level(overloaded_level(seed))
        assert check.steady is False, check.reason
        assert check.ttft.relative_lo > 0.2 and check.in_flight.relative_lo > 0.2
        assert "not steady: TTFT and requests in flight kept rising" in check.reason
        assert check.window[0] == pytest.approx(0.2 + 0.1 * (59.9 - 0.2))


def test_flat_levels_noisy_or_not_are_steady():
    flagged = sum(check_level(flat_level(seed)).steady is False for seed in range(200))
    assert flagged == 0
    heavy = sum(check_level(flat_level(seed, sigma=0.8, spikes=0.03)).steady is False for seed in range(200))
    assert heavy <= 2  # heavy-tailed noise: at most a rare false alarm
    exact = check_level(flat_level(0, sigma=0.0))
    assert exact.steady is True and exact.ttft.slope == pytest.approx(0.0, abs=1e-12)
    assert exact.reason.startswith("steady: TTFT rose +0%")


def test_a_mild_drift_is_below_the_threshold_and_a_clear_one_is_not():
    def drifting(rise, seed=0):
        rng = random.Random(seed)
        return [(t / 10, 0.2 * (1 + rise * t / 600) * math.exp(rng.gauss(0, 0.1))) for t in range(600)]

    mild = check_steady(drifting(0.05), start=0.0, end=59.9)
    assert mild.steady is True and 0 < mild.ttft.relative_rise < 0.2
    clear = check_steady(drifting(1.0), start=0.0, end=59.9)
    assert clear.steady is False and clear.ttft.relative_lo > 0.2


def test_the_warmup_and_the_first_tenth_are_left_out():
    def ramp_then_flat(seed=0):
        rng = random.Random(seed)
        pts = []
        for i in range(600):
            t = i / 10
            level = 0.05 + 0.95 * min(t / 6.0, 1.0)  # rising for the first 6 s, then flat
            pts.append((t, level * math.exp(rng.gauss(0, 0.1))))
        return pts

    kept = check_steady(ramp_then_flat(), start=0.0, end=59.9)
    assert kept.steady is True and kept.window == (pytest.approx(5.99), 59.9)
    assert abs(kept.ttft.relative_rise) < 0.05
    raw = check_steady(ramp_then_flat(), start=0.0, end=59.9, exclude_fraction=0.0)
    assert raw.ttft.relative_rise > 0.2  # the ramp, fitted as a trend when it is not left out
    assert steady_window(0.0, 100.0, warmup_end=25.0) == (25.0, 100.0)
    assert steady_window(0.0, 100.0, warmup_end=3.0) == (10.0, 100.0)
    with pytest.raises(ValueError):
        steady_window(5.0, 1.0)


def test_too_few_points_give_no_verdict():
    check = check_steady([(0.0, 0.1), (1.0, 0.2), (2.0, 0.3)], start=0.0, end=2.0)
    assert check.steady is None and check.ttft is None and "too few" in check.reason
    assert fit_slope([1.0, 1.0, 1.0], [1, 2, 3]) is None
    assert fit_slope([0.0, 0.1, 0.2], [1, 2, 3]) is None  # 0.2 s: fewer than 3 independent seconds
    with pytest.raises(ValueError):
        fit_slope([0.0, 1.0], [1.0])


def test_the_slope_interval_covers_the_true_slope_about_95_percent():
    covered = 0
    for seed in range(300):
        rng = random.Random(seed)
        ts = [i * 0.5 for i in range(40)]
        ys = [2.0 + 0.03 * t + rng.gauss(0, 0.2) for t in ts]
        fit = fit_slope(ts, ys, correlation_s=0.01)  # independent points: n_eff = n
        covered += fit.slope_lo <= 0.03 <= fit.slope_hi
    assert 0.91 <= covered / 300 <= 0.99


def test_in_flight_and_level_series_from_records():
    assert in_flight_at_sends([(0.0, 3.0), (1.0, 2.0), (2.0, 5.0), (3.0, 4.0)]) == [
        (0.0, 1.0), (1.0, 2.0), (2.0, 2.0), (3.0, 2.0)]

    class Rec:  # attribute access, as llmcompare's RequestRecord
        def __init__(self, **kw):
            self.__dict__.update(kw)

    recs = [Rec(scheduled_at=0.0, sent_at=0.0, ttft_s=0.5, e2e_s=1.0, warmup=True, error=None, token_times_s=[]),
            Rec(scheduled_at=1.0, sent_at=1.25, ttft_s=0.5, e2e_s=1.0, warmup=False, error=None, token_times_s=[]),
            Rec(scheduled_at=2.0, sent_at=2.0, ttft_s=None, e2e_s=None, warmup=False, error="boom",
                token_times_s=[0.1, 0.3])]
    s = level_series(recs)
    assert s["ttft"] == [(1.0, 0.75)]  # from the schedule: 0.25 s of client queueing + 0.5 s
    assert s["start"] == 1.0 and s["end"] == 2.0 and s["warmup_end"] == 1.0
    assert s["in_flight"] == [(0.0, 1.0), (1.0, 1.0), (2.0, 2.0)]
    assert check_level([]) is None


def test_a_closed_loop_level_has_flat_in_flight():
    check = check_level(flat_level(1, concurrency=4))
    assert check.steady is True and check.in_flight is not None
    assert abs(check.in_flight.slope) < 0.01 and check.in_flight.mean == pytest.approx(4.0, abs=0.5)
    assert set(check.to_dict()) == {"steady", "window", "threshold", "ttft", "in_flight", "reason"}
