"""Steady state: is a load level's latency level, or still climbing when the level ends?

A server driven past its capacity queues requests faster than it serves them, so time to first token
(counted from the scheduled send) and the number of requests in flight keep rising for as long as the
level lasts: the level's averages then describe its length, not the server. GuideLLM stops such a
benchmark by a slope test on TTFT and on concurrent requests over time
(``guidellm/scheduler/constraints/over_saturation.py``: least squares, a t-based margin of error,
correlated requests counted as at most one point per second). This module applies the same idea after
the fact, to a level's records, as pure functions over ``(time, value)`` series:

1. **Window** (:func:`steady_window`): the level runs from its first scheduled send ``start`` to its
   last ``end``; the first ``exclude_fraction`` of it (10%), or up to the end of the warm-up when that
   is later, is left out.
2. **Fit** (:func:`fit_slope`): ordinary least squares of the value on the scheduled time within the
   window. The slope's standard error is inflated by ``n / n_eff``, with ``n_eff = min(n, span /
   correlation_s)`` (requests within ``correlation_s`` = 1 s of each other see the same queue and are
   not independent), and its interval uses Student's t with ``n_eff - 2`` degrees of freedom: 95%.
3. **Relative rise**: ``slope × span / mean`` — the fitted rise over the window as a share of the
   series' mean — with the interval scaled the same way.
4. **Verdict** (:func:`check_steady`): **not steady** when the *lower* bound of the relative rise of
   TTFT, or of requests in flight, exceeds ``threshold`` (20%): the rise is large and certain. A flat
   but noisy series keeps its lower bound near or below 0 and is not flagged; a series too short to
   fit (fewer than ``min_points`` points in the window) gives no verdict (``steady=None``).

The window is also the one to count energy and tokens over (``llmcompare.telemetry.nvml``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_EXCLUDE_FRACTION = 0.1
DEFAULT_THRESHOLD = 0.2
DEFAULT_CONFIDENCE = 0.95
DEFAULT_CORRELATION_S = 1.0
DEFAULT_MIN_POINTS = 10


# ---------------------------------------------------------------------------------------------
# Student's t quantile (no SciPy): regularized incomplete beta by continued fraction, then bisection
# ---------------------------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_cdf`, to 1e-10)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError("need 0 < p < 1 and df > 0")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


# ---------------------------------------------------------------------------------------------
# The slope test
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlopeFit:
    """A least-squares slope of ``value`` on time, with its interval, absolute and relative."""

    metric: str
    n: int
    n_eff: float
    span_s: float
    slope: float
    """Units of the value per second."""
    slope_lo: float
    slope_hi: float
    mean: float
    relative_rise: float | None
    """``slope * span / mean``: the fitted rise over the window as a share of the mean (None when the
    mean is 0)."""
    relative_lo: float | None
    relative_hi: float | None
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fit_slope(times: Sequence[float], values: Sequence[float], *, metric: str = "",
              confidence: float = DEFAULT_CONFIDENCE, correlation_s: float = DEFAULT_CORRELATION_S) -> SlopeFit | None:
    """Least squares of ``values`` on ``times`` (module docstring, step 2); None with fewer than 3
    points, no spread in time, or ``n_eff <= 2``."""
    n = len(times)
    if n != len(values):
        raise ValueError("times and values differ in length")
    if n < 3:
        return None
    mt = sum(times) / n
    my = sum(values) / n
    sxx = sum((t - mt) ** 2 for t in times)
    if sxx <= 0:
        return None
    sxy = sum((t - mt) * (y - my) for t, y in zip(times, values))
    syy = sum((y - my) ** 2 for y in values)
    slope = sxy / sxx
    rss = max(syy - slope * sxy, 0.0)
    span = max(times) - min(times)
    n_eff = min(float(n), span / correlation_s) if correlation_s > 0 else float(n)
    if n_eff <= 2:
        return None
    se = math.sqrt(rss / (n - 2) / sxx * (n / n_eff))
    half = t_ppf(0.5 + confidence / 2.0, n_eff - 2.0) * se
    lo, hi = slope - half, slope + half
    if my != 0:
        k = span / abs(my)
        rel, rel_lo, rel_hi = slope * k, lo * k, hi * k
    else:
        rel = rel_lo = rel_hi = None
    return SlopeFit(metric, n, n_eff, span, slope, lo, hi, my, rel, rel_lo, rel_hi, confidence)


def steady_window(start: float, end: float, *, warmup_end: float | None = None,
                  exclude_fraction: float = DEFAULT_EXCLUDE_FRACTION) -> tuple[float, float]:
    """``(start + exclude_fraction * (end - start), end)``, or from ``warmup_end`` when that is later."""
    if end < start:
        raise ValueError("the window ends before it starts")
    cut = start + exclude_fraction * (end - start)
    if warmup_end is not None:
        cut = max(cut, warmup_end)
    return min(cut, end), end


@dataclass(frozen=True)
class SteadyCheck:
    steady: bool | None
    """False: not steady (a rise beyond the threshold, with confidence); None: too few points."""
    window: tuple[float, float]
    threshold: float
    ttft: SlopeFit | None
    in_flight: SlopeFit | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"steady": self.steady, "window": list(self.window), "threshold": self.threshold,
                "ttft": self.ttft.to_dict() if self.ttft else None,
                "in_flight": self.in_flight.to_dict() if self.in_flight else None, "reason": self.reason}


def _rising(fit: SlopeFit | None, threshold: float) -> bool:
    return fit is not None and fit.relative_lo is not None and fit.mean > 0 and fit.relative_lo > threshold


def _describe(fit: SlopeFit, name: str) -> str:
    if fit.relative_rise is None:
        return f"{name}: mean 0 over {fit.span_s:.0f} s"
    return (f"{name} {'rose' if fit.relative_rise >= 0 else 'fell'} {fit.relative_rise:+.0%}"
            f" [{fit.relative_lo:+.0%}, {fit.relative_hi:+.0%}] over {fit.span_s:.0f} s ({fit.n} points)")


def check_steady(ttft: Iterable[tuple[float, float]], in_flight: Iterable[tuple[float, float]] | None = None, *,
                 start: float, end: float, warmup_end: float | None = None,
                 exclude_fraction: float = DEFAULT_EXCLUDE_FRACTION, threshold: float = DEFAULT_THRESHOLD,
                 confidence: float = DEFAULT_CONFIDENCE, correlation_s: float = DEFAULT_CORRELATION_S,
                 min_points: int = DEFAULT_MIN_POINTS) -> SteadyCheck:
    """The verdict for one level (module docstring). ``ttft``: (scheduled send, TTFT from the schedule)
    of its measured requests; ``in_flight``: (time, requests in flight) points, e.g.
    :func:`in_flight_at_sends`; ``start``/``end``: the level's first and last scheduled send."""
    window = steady_window(start, end, warmup_end=warmup_end, exclude_fraction=exclude_fraction)
    fits = []
    for name, series in (("TTFT", ttft), ("in flight", in_flight)):
        if series is None:
            fits.append(None)
            continue
        pts = sorted((t, v) for t, v in series if window[0] <= t <= window[1] and v is not None)
        fit = None
        if len(pts) >= min_points:
            fit = fit_slope([p[0] for p in pts], [p[1] for p in pts], metric=name, confidence=confidence,
                            correlation_s=correlation_s)
        fits.append(fit)
    ttft_fit, flight_fit = fits
    rising = [(fit, name) for fit, name in ((ttft_fit, "TTFT"), (flight_fit, "requests in flight"))
              if _rising(fit, threshold)]
    described = "; ".join(_describe(f, n) for f, n in ((ttft_fit, "TTFT"), (flight_fit, "requests in flight")) if f)
    if rising:
        steady = False
        reason = (f"not steady: {' and '.join(n for _, n in rising)} kept rising (95% lower bound above"
                  f" {threshold:.0%} of the mean over the window): {described}")
    elif ttft_fit is None and flight_fit is None:
        steady = None
        reason = f"too few requests in the window to tell (fewer than {min_points}, or under 3 s)"
    else:
        steady = True
        reason = f"steady: {described}"
    return SteadyCheck(steady, window, threshold, ttft_fit, flight_fit, reason)


# ---------------------------------------------------------------------------------------------
# Series from request records
# ---------------------------------------------------------------------------------------------

def in_flight_at_sends(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """For requests given as (scheduled send, finish) intervals, the number in flight (scheduled and
    not finished, the request itself included) at each scheduled send."""
    iv = sorted(intervals)
    finishes = sorted(f for _, f in iv)
    out, j = [], 0
    for i, (s, _) in enumerate(iv):
        while j < len(finishes) and finishes[j] <= s:
            j += 1
        out.append((s, float(i + 1 - j)))
    return out


def level_series(records: Iterable[Any]) -> dict[str, Any]:
    """From one level's request records (llmcompare's ``RequestRecord`` or dicts with the same keys):
    ``ttft`` points (scheduled send, TTFT counted from it) of the measured successful requests,
    ``in_flight`` at every scheduled send (warm-up requests count: they occupy the server), ``start``
    and ``end`` (first and last scheduled send) and ``warmup_end`` (the last warm-up request's finish)."""
    ttft, intervals, warm_end = [], [], None
    starts = []
    for r in records:
        get = r.get if isinstance(r, dict) else (lambda k, _r=r: getattr(_r, k, None))
        sched, sent = get("scheduled_at"), get("sent_at")
        if sched is None:
            sched = sent
        if sched is None or sent is None:
            continue
        e2e = get("e2e_s")
        times = get("token_times_s") or []
        finish = sent + (e2e if e2e is not None else (times[-1] if times else 0.0))
        intervals.append((sched, finish))
        if get("warmup"):
            warm_end = finish if warm_end is None else max(warm_end, finish)
            continue
        starts.append(sched)
        if get("error") is None and get("ttft_s") is not None:
            ttft.append((sched, (sent - sched) + get("ttft_s")))
    return {"ttft": ttft, "in_flight": in_flight_at_sends(intervals),
            "start": min(starts) if starts else None, "end": max(starts) if starts else None, "warmup_end": warm_end}


def check_level(records: Iterable[Any], **kwargs: Any) -> SteadyCheck | None:
    """:func:`check_steady` on one level's records (:func:`level_series`); None without measured requests."""
    s = level_series(records)
    if s["start"] is None:
        return None
    return check_steady(s["ttft"], s["in_flight"], start=s["start"], end=s["end"], warmup_end=s["warmup_end"], **kwargs)
