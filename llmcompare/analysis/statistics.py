"""Resampling statistics: bootstrap confidence intervals and paired speed-ups. ``docs/metrics.md``
("Statistics") gives every formula.

Everything here is a **percentile bootstrap**: draw ``resamples`` (2000) samples with replacement,
compute the statistic on each, and take the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
percentiles of those values (linear interpolation, as :func:`llmcompare.analysis.metrics.percentile`) as the
interval. The generator is seeded, so a report computed twice gives the same interval.

**What is resampled matters.** The requests of one prompt across repeats are not independent: a long
prompt is slow on every repeat. Treating them as independent draws makes an interval too narrow by
up to ``sqrt(repeats)``. So wherever prompts are known, the unit of resampling is the *prompt*
(a cluster bootstrap): draw prompts with replacement and keep all the repeats of each. The
intervals then answer "how much would this figure move on another prompt set like this one, and
another run". With fewer than two prompts there is nothing to resample but requests, and the result
says so (``"resampled": "requests"``).

**Comparing two backends** on the same prompts, :func:`paired_speedup` pairs them by prompt: the
per-prompt ratio cancels each prompt's own length and difficulty, which an unpaired ratio of medians
(:func:`bootstrap_ratio`) leaves in as noise, so a 5% speed-up is visible that the unpaired ratio
cannot tell from noise.

Resampling is vectorised with NumPy (a few milliseconds for hundreds of requests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import numpy as np

from llmcompare.analysis.timing import request_row

RESAMPLES = 2000
CONFIDENCE = 0.95

Stat = str | Callable[[np.ndarray], float]
"""``"mean"``, ``"median"``, ``"pNN"`` (e.g. ``"p90"``, NumPy's linear percentile), or any function
of a 1-D array (applied resample by resample: correct, but not vectorised)."""

_BLOCK = 4_000_000
"""At most this many numbers are drawn at once; resamples are taken in blocks below it."""

# Per-request metrics (keys of metrics.request_row) where a larger value is better.
HIGHER_IS_BETTER = frozenset({"tok_s"})


# ---- statistics of the rows of a NaN-padded matrix ----------------------------------------------

def _row_stat(stat: Stat) -> Callable[[np.ndarray], np.ndarray]:
    """A function of a 2-D array (one resample per row, NaN = no value) giving one figure per row."""
    if callable(stat):
        return lambda m: np.array([stat(row[~np.isnan(row)]) for row in m], dtype=float)
    if stat == "mean":
        def row_mean(m: np.ndarray) -> np.ndarray:
            present = ~np.isnan(m)
            return np.where(present, m, 0.0).sum(axis=1) / present.sum(axis=1)
        return row_mean
    q = 50.0 if stat == "median" else _percentile_of(stat)

    def row_percentile(m: np.ndarray) -> np.ndarray:
        xs = np.sort(m, axis=1)  # NaN sorts last
        count = (~np.isnan(xs)).sum(axis=1)
        rank = q / 100.0 * (count - 1)
        lo = np.floor(rank).astype(int)
        hi = np.minimum(lo + 1, count - 1)
        rows = np.arange(len(xs))
        return xs[rows, lo] + (xs[rows, hi] - xs[rows, lo]) * (rank - lo)
    return row_percentile


def _percentile_of(stat: str) -> float:
    try:
        q = float(stat[1:]) if stat.startswith("p") else math.nan
    except ValueError:
        q = math.nan
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"unknown statistic {stat!r}: use 'mean', 'median', 'pNN' or a function")
    return q


def _interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    draws = draws[np.isfinite(draws)]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(draws, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(lo), float(hi)


# ---- resampling ---------------------------------------------------------------------------------

class _Sample:
    """Values grouped into clusters (prompts), padded into a ``clusters × size`` matrix with NaN so
    that a resample of clusters is one fancy-indexing operation."""

    def __init__(self, values: Sequence[float | None], clusters: Sequence[Hashable] | None):
        pairs = [(v, i if clusters is None else clusters[i]) for i, v in enumerate(values)
                 if v is not None and not math.isnan(v)]
        self.values = np.array([v for v, _ in pairs], dtype=float)
        self.n = len(pairs)
        groups: dict[Hashable, list[float]] = {}
        for v, c in pairs:
            groups.setdefault(c, []).append(v)
        self.by_prompt = clusters is not None and len(groups) >= 2
        if not self.by_prompt:  # one value per cluster: plain resampling of values
            groups = {i: [v] for i, (v, _) in enumerate(pairs)}
        width = max((len(g) for g in groups.values()), default=0)
        self.matrix = np.full((len(groups), width), np.nan)
        for row, g in enumerate(groups.values()):
            self.matrix[row, :len(g)] = g

    @property
    def resampled(self) -> str:
        return "prompts" if self.by_prompt else "requests"

    def draws(self, fn: Callable[[np.ndarray], np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
        """``fn`` on ``resamples`` bootstrap resamples (clusters drawn with replacement)."""
        k, width = self.matrix.shape
        block = max(1, _BLOCK // max(1, k * width))
        out = []
        for start in range(0, resamples, block):
            idx = rng.integers(0, k, size=(min(block, resamples - start), k))
            out.append(fn(self.matrix[idx].reshape(len(idx), k * width)))
        return np.concatenate(out)


def bootstrap_ci(
    values: Sequence[float | None],
    stat: Stat = "median",
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> dict[str, Any] | None:
    """``stat(values)`` with a percentile-bootstrap interval; None with fewer than two values.

    ``clusters`` (one label per value, e.g. its prompt id) makes it a cluster bootstrap: clusters
    are drawn with replacement and keep all their values; with fewer than two clusters, or without
    ``clusters``, values are drawn one by one. None and NaN values are left out.

    Returns ``{"value", "lo", "hi", "confidence", "n", "clusters", "resampled"}``: ``n`` values,
    ``clusters`` units resampled (prompts, or ``n`` when ``resampled`` is ``"requests"``).
    """
    sample = _Sample(values, clusters)
    if sample.n < 2:
        return None
    fn = _row_stat(stat)
    lo, hi = _interval(sample.draws(fn, resamples, np.random.default_rng(seed)), confidence)
    return {"value": float(fn(sample.values[None, :])[0]), "lo": lo, "hi": hi, "confidence": confidence,
            "n": sample.n, "clusters": len(sample.matrix), "resampled": sample.resampled}


def ratio_of_sums_ci(
    numerators: Sequence[float],
    denominators: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any] | None:
    """``Σ numerators / Σ denominators`` (e.g. tokens over seconds) with a percentile-bootstrap
    interval, resampling whole clusters (prompts) where given, else pairs. None with fewer than two
    pairs or a zero denominator. Same keys as :func:`bootstrap_ci`."""
    if len(numerators) != len(denominators):
        raise ValueError("numerators and denominators differ in length")
    labels = list(range(len(numerators))) if clusters is None else list(clusters)
    sums: dict[Hashable, list[float]] = {}
    for num, den, c in zip(numerators, denominators, labels):
        acc = sums.setdefault(c, [0.0, 0.0])
        acc[0] += num
        acc[1] += den
    total = np.array(list(sums.values()), dtype=float).reshape(-1, 2)
    if len(numerators) < 2 or total[:, 1].sum() <= 0:
        return None
    if len(total) < 2:  # one prompt: resample its requests
        return ratio_of_sums_ci(numerators, denominators, None, confidence, resamples, seed)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(total), size=(resamples, len(total)))
    picked = total[idx].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = _interval(picked[:, 0] / picked[:, 1], confidence)
    return {"value": float(total[:, 0].sum() / total[:, 1].sum()), "lo": lo, "hi": hi, "confidence": confidence,
            "n": len(numerators), "clusters": len(total),
            "resampled": "prompts" if clusters is not None else "requests"}


def bootstrap_ratio(
    a: Sequence[float],
    b: Sequence[float],
    stat: Stat = "median",
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    clusters_a: Sequence[Hashable] | None = None,
    clusters_b: Sequence[Hashable] | None = None,
) -> dict[str, Any] | None:
    """``stat(b) / stat(a)`` with a percentile-bootstrap interval, resampling each side on its own
    (unpaired; by cluster where ``clusters_a``/``clusters_b`` are given). None with fewer than two
    values on a side or ``stat(a) == 0``.

    Returns ``{"ratio", "lo", "hi", "confidence", "within_noise"}``; ``within_noise`` is true when
    the interval contains 1. When both sides ran the same prompts, :func:`paired_speedup` is the
    sharper test.
    """
    sa, sb = _Sample(a, clusters_a), _Sample(b, clusters_b)
    if sa.n < 2 or sb.n < 2:
        return None
    fn = _row_stat(stat)
    den = float(fn(sa.values[None, :])[0])
    if den == 0:
        return None
    rng = np.random.default_rng(seed)
    da, db = sa.draws(fn, resamples, rng), sb.draws(fn, resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = _interval(db / da, confidence)
    return {"ratio": float(fn(sb.values[None, :])[0]) / den, "lo": lo, "hi": hi, "confidence": confidence,
            "within_noise": lo <= 1.0 <= hi}


# ---- paired speed-up ----------------------------------------------------------------------------

def per_prompt_medians(records: Iterable[Any], key: str) -> dict[str, float]:
    """prompt id -> the median of ``key`` (a :func:`llmcompare.analysis.timing.request_row` figure) over the
    prompt's measured, successful requests (warm-up and failed requests left out)."""
    values: dict[str, list[float]] = {}
    for r in records:
        if r.warmup or r.error is not None:
            continue
        v = request_row(r)[key]
        if v is not None and not math.isnan(v):
            values.setdefault(r.prompt_id, []).append(v)
    return {pid: float(np.median(vs)) for pid, vs in values.items()}


def paired_speedup(
    baseline: Iterable[Any],
    other: Iterable[Any],
    key: str,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any] | None:
    """How much faster ``other`` is than ``baseline`` on ``key``, paired by prompt.

    ``baseline`` and ``other`` are request records (:class:`llmcompare.records.RequestRecord`) of
    one stage; ``key`` is a :func:`llmcompare.analysis.timing.request_row` figure (``tpot_ms``, ``ttft_ms``,
    ``e2e_ms``, ``tok_s``). Per prompt, each side's figure is the median over its measured repeats;
    the prompt's speed-up is ``baseline / other`` for a latency and ``other / baseline`` for
    ``tok_s``, so a speed-up above 1 always means ``other`` is faster. The speed-up is the geometric
    mean of the per-prompt speed-ups, ``exp(mean(log s_p))``, and its interval comes from resampling
    prompts (see :func:`paired_ratios`).

    Only prompts with a positive figure on both sides are paired; ``dropped`` counts the other
    prompts either side measured (failed on one side, or missing). None with fewer than two pairs.
    Returns :func:`paired_ratios`'s dict plus ``"metric": key`` and ``"dropped"``.
    """
    base_records, other_records = list(baseline), list(other)
    base, oth = per_prompt_medians(base_records, key), per_prompt_medians(other_records, key)
    seen = {r.prompt_id for r in base_records + other_records if not r.warmup}
    paired = sorted(p for p in set(base) & set(oth) if base[p] > 0 and oth[p] > 0)
    faster_is_lower = key not in HIGHER_IS_BETTER
    ratios = [base[p] / oth[p] if faster_is_lower else oth[p] / base[p] for p in paired]
    result = paired_ratios(ratios, confidence=confidence, resamples=resamples, seed=seed)
    if result is None:
        return None
    return {"metric": key, **result, "dropped": len(seen) - len(paired)}


def paired_ratios(
    ratios: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The geometric mean of per-prompt speed-ups (each > 0) with a percentile-bootstrap interval
    over prompts: each resample draws the prompts with replacement and takes ``exp(mean(log s))``.
    None with fewer than two.

    Returns ``{"speedup", "lo", "hi", "confidence", "within_noise", "verdict", "prompts",
    "resampled"}``; ``within_noise`` is true when the interval contains 1, and ``verdict`` is
    ``"faster"``, ``"slower"`` or ``"no difference (within noise)"`` (see :func:`verdict`).
    """
    logs = np.log(np.asarray(ratios, dtype=float))
    if len(logs) < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, len(logs), size=(resamples, len(logs)))
    lo, hi = _interval(np.exp(logs[idx].mean(axis=1)), confidence)
    return {"speedup": float(np.exp(logs.mean())), "lo": lo, "hi": hi, "confidence": confidence,
            "within_noise": lo <= 1.0 <= hi, "verdict": verdict(lo, hi, higher_is_better=True, same=NO_DIFFERENCE),
            "prompts": len(logs), "resampled": "prompts"}


NO_DIFFERENCE = "no difference (within noise)"


def verdict(lo: float, hi: float, *, higher_is_better: bool, better: str = "faster", worse: str = "slower",
            same: str = "no difference") -> str:
    """Read a ratio's interval ``[lo, hi]`` against 1: ``same`` when it contains 1, else ``better``
    when the whole interval lies on the good side (above 1 when ``higher_is_better``), else ``worse``."""
    if lo <= 1.0 <= hi:
        return same
    return better if (lo > 1.0) == higher_is_better else worse

