"""Every formula llmcompare reports, in one place. ``docs/metrics.md`` documents each one.

Per request (times in seconds from the moment the request is handed to the engine):

* ``TTFT = t[0]``, the first generated token's arrival (prompt tokenization by the engine is inside);
* ``e2e = t[n-1]``, the last token's arrival;
* ``TPOT = (e2e - TTFT) / (n - 1)``, undefined for n < 2;
* ``ITL``: gaps between consecutive *chunks* (tokens that share a timestamp arrived together; no gap
  is invented between them);
* ``tok/s = n / e2e``, output tokens over the request's end-to-end time.

Per backend: ``output throughput = sum(verified n) / measured wall time`` (warm-up excluded; see
:func:`verified_tokens`: a request counts at most the tokens it was asked for, and a request whose
count sources disagree at most the smallest of their exact counts), and for every
metric n, mean, p50, p90, p99, std, min, max. Percentiles interpolate linearly between order
statistics (NumPy's default). ``std`` is the sample standard deviation (n - 1).

Headline figures carry a 95% bootstrap interval (``Summary.ci``) that resamples prompts, not requests:
see :mod:`llmcompare.analysis.statistics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import mean, stdev
from typing import Any

from llmcompare.analysis import statistics as stats
from llmcompare.analysis.statistics import bootstrap_ratio  # noqa: F401  (its home is llmcompare.analysis.statistics; kept importable here)
from llmcompare.analysis.timing import e2e, itl, request_row, tokens_per_second, tpot, ttft  # noqa: F401  (part of this module's API)
from llmcompare.records import COUNT_EXACT, BackendRecord, RequestRecord, StageRecord


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks: rank = q/100 * (n - 1)."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    rank = (q / 100.0) * (len(xs) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def describe(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, mean, p50, p90, p99, std, min, max of ``values`` (None where undefined)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "std": None, "min": None, "max": None}
    return {
        "n": len(vals),
        "mean": mean(vals),
        "p50": percentile(vals, 50),
        "p90": percentile(vals, 90),
        "p99": percentile(vals, 99),
        "std": stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
    }


# ---- per request -------------------------------------------------------------------------------

def verified_tokens(r: RequestRecord) -> int:
    """The output tokens one request contributes to throughput (docs/metrics.md, "Verified tokens").

    A failed request contributes none. Otherwise ``min(n, N)``: the tokens counted, but never more
    than the forced length ``N`` (tokens a server sends beyond what was asked are flagged as a length
    mismatch and not credited). When the request's count sources disagree (``count_check``), also no
    more than the smallest exact count any source gave: the figure every piece of evidence vouches for.
    Records without a ``count_check`` (older runs, in-process engines) are counted as before, capped."""
    if r.error is not None:
        return 0
    n = min(int(r.output_tokens), int(r.expected_output_tokens))
    if r.count_disputed:
        claims = [v for k, v in r.count_check.items() if k in COUNT_EXACT and type(v) is int]  # type: ignore[union-attr]
        n = min([n, *claims])
    return max(0, n)


def count_disagreements(records: Sequence[RequestRecord]) -> int:
    """How many of ``records`` succeeded with output counts whose sources disagree (ids, ``usage``,
    log-probabilities, text events: ``RequestRecord.count_check``). For reports to show beside the
    length mismatches; the throughput already credits such requests only their verified tokens."""
    return sum(1 for r in records if r.error is None and r.count_disputed)


# ---- per backend -------------------------------------------------------------------------------

@dataclass
class Summary:
    """One backend in one stage: every latency figure with its distribution, counts and flags."""

    backend: str
    status: str
    error: str | None
    n_requests: int
    n_errors: int
    n_length_mismatch: int
    n_prompt_mismatch: int
    output_tokens: int
    throughput_tok_s: float | None
    ttft_ms: dict[str, Any]
    tpot_ms: dict[str, Any]
    e2e_ms: dict[str, Any]
    itl_ms: dict[str, Any]
    tok_s: dict[str, Any]
    warmup: list[dict[str, Any]]
    cold_ttft_ms: float | None
    cold_e2e_ms: float | None
    load_s: float | None
    peak_rss_bytes: int | None
    gpu_peak_bytes: int | None
    info: dict[str, Any]
    agreement: dict[str, Any] | None = None
    stage: str = "latency"
    input_tokens: int | None = None
    """The stage's prompt length, when every prompt of it has one length (``--input-tokens``)."""
    n_approximate: int = 0
    """Requests whose output count is approximate: text re-tokenized with the shared tokenizer."""
    n_without_ids: int = 0
    """Requests counted exactly by the server (usage, log-probabilities, a ``length`` finish) but
    without token ids."""
    n_duplicates: int = 0
    """Requests recorded twice (two writers on one run): kept out of the statistics, reported."""
    n_count_disagreements: int = 0
    """Successful requests whose output count's sources disagree (:func:`count_disagreements`): each
    credited its verified tokens only, and every report says how many."""
    ci: dict[str, dict[str, Any]] = field(default_factory=dict)
    """95% bootstrap intervals of the headline figures, keyed like their report columns
    (:data:`CI_FIGURES` and ``output_tok_s``): each ``{"value", "lo", "hi", "confidence", "n",
    "clusters", "resampled"}`` as :func:`llmcompare.analysis.statistics.bootstrap_ci` returns it. Empty for
    load runs; a figure with fewer than two values has none."""

    @property
    def n_length_ok(self) -> int:
        """Measured requests that succeeded with exactly the forced number of tokens."""
        return self.n_requests - self.n_errors - self.n_length_mismatch

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: ``Summary.ci`` key -> (the per-request figure of :func:`request_row`, the statistic over requests).
CI_FIGURES: dict[str, tuple[str, str]] = {
    "ttft_p50_ms": ("ttft_ms", "median"),
    "tpot_p50_ms": ("tpot_ms", "median"),
    "e2e_p50_ms": ("e2e_ms", "median"),
    "request_tok_s_p50": ("tok_s", "median"),
    "ttft_mean_ms": ("ttft_ms", "mean"),
    "tpot_mean_ms": ("tpot_ms", "mean"),
    "e2e_mean_ms": ("e2e_ms", "mean"),
}


def summarize(label: str, requests: list[RequestRecord], backends: list[BackendRecord], stage: str | None = None,
              stages: list[StageRecord] | None = None, duplicates: int = 0, intervals: bool | None = None) -> Summary:
    """One backend's summary from its records (all worker runs of it, e.g. after ``--resume``), in
    one ``stage`` (all of its records when None). Output throughput divides by the stage records'
    measured wall time where there are any, else by the backend records'.

    ``intervals`` fills ``Summary.ci`` (bootstrap intervals resampling prompts, :func:`headline_intervals`).
    None means: for batch-1 records only, not when a measured record comes from a load level (a
    ``load…`` stage), whose requests overlap in time."""
    mine = [r for r in requests if r.backend == label and (stage is None or r.stage == stage)]
    measured = dedupe([r for r in mine if not r.warmup])
    warm = [r for r in mine if r.warmup]
    ok = [r for r in measured if r.error is None]
    brs = [b for b in backends if b.backend == label]
    last = brs[-1] if brs else None
    srs = [s for s in stages or [] if s.backend == label and (stage is None or s.stage == stage)]
    wall = sum(s.wall_s for s in srs) if srs else sum(b.measured_wall_s for b in brs)
    lengths = {r.input_tokens for r in measured}
    out_tokens = sum(verified_tokens(r) for r in ok)
    rows = [request_row(r) for r in ok]
    col = lambda k: [row[k] for row in rows if row[k] is not None]  # noqa: E731
    first_warm = warm[0] if warm else None
    ok_loads = [b.load_s for b in brs if b.load_s is not None]
    throughput = (out_tokens / wall) if wall > 0 and ok else None
    if intervals is None:
        intervals = not any(r.stage.startswith("load") for r in measured)
    status, error = (last.status, last.error) if last else ("failed", "the worker wrote no status record")
    if status == "ok" and measured and not ok:  # the backend loaded, but not one request succeeded
        status, error = "failed", f"every measured request failed, e.g. {measured[0].error}"
    return Summary(
        backend=label,
        status=status,
        error=error,
        n_requests=len(measured),
        n_errors=len(measured) - len(ok),
        n_length_mismatch=sum(1 for r in ok if not r.length_ok),
        n_prompt_mismatch=sum(
            1 for r in ok if r.engine_prompt_tokens is not None and r.engine_prompt_tokens != r.input_tokens
        ),
        n_approximate=sum(1 for r in ok if r.count_source == "retokenized"),
        n_without_ids=sum(1 for r in ok if r.count_source in ("usage", "logprobs", "length")),
        n_duplicates=duplicates,
        n_count_disagreements=count_disagreements(ok),
        stage=stage or (mine[0].stage if mine else "latency"),
        input_tokens=lengths.pop() if len(lengths) == 1 else None,
        output_tokens=out_tokens,
        throughput_tok_s=throughput,
        ttft_ms=describe(col("ttft_ms")),
        tpot_ms=describe(col("tpot_ms")),
        e2e_ms=describe(col("e2e_ms")),
        itl_ms=describe([g * 1000.0 for r in ok for g in itl(r.token_times_s)]),
        tok_s=describe(col("tok_s")),
        warmup=[{"prompt_id": r.prompt_id, **request_row(r), "error": r.error} for r in warm],
        cold_ttft_ms=request_row(first_warm)["ttft_ms"] if first_warm else None,
        cold_e2e_ms=request_row(first_warm)["e2e_ms"] if first_warm else None,
        load_s=ok_loads[0] if ok_loads else None,
        peak_rss_bytes=max((b.peak_rss_bytes for b in brs if b.peak_rss_bytes), default=None),
        gpu_peak_bytes=max((b.gpu_peak_bytes for b in brs if b.gpu_peak_bytes), default=None),
        info={
            "name": last.name if last else None,
            "variant": last.variant if last else None,
            "device": last.device if last else None,
            "options": last.options if last else {},
            "versions": last.versions if last else {},
            "capabilities": last.capabilities if last else {},
            "gpu_memory": last.gpu_memory if last else {},
            "python": last.python if last else None,
        },
        ci=headline_intervals(ok, throughput) if intervals else {},
    )


def headline_intervals(ok: list[RequestRecord], throughput: float | None) -> dict[str, dict[str, Any]]:
    """``Summary.ci`` for one backend and stage from its successful measured requests: each
    :data:`CI_FIGURES` figure by :func:`~llmcompare.analysis.statistics.bootstrap_ci` with the requests'
    prompts as clusters, and ``output_tok_s`` by :func:`throughput_ci`."""
    rows = [request_row(r) for r in ok]
    prompts = [r.prompt_id for r in ok]
    out = {}
    for name, (key, stat) in CI_FIGURES.items():
        if (ci := stats.bootstrap_ci([row[key] for row in rows], stat, clusters=prompts)) is not None:
            out[name] = ci
    if throughput is not None and (tp := throughput_ci(ok, throughput)) is not None:
        out["output_tok_s"] = tp
    return out


def throughput_ci(ok: list[RequestRecord], throughput: float) -> dict[str, Any] | None:
    """An interval for the output throughput of a batch-1 stage, whose requests ran one at a time.

    The throughput is one number per stage, ``Σ n / wall``; at batch 1 the wall time is ``Σ e2e``
    plus the harness's short gaps between requests. Prompts are resampled and ``R* = Σ n / Σ e2e``
    recomputed over the resampled requests; the interval is that bootstrap's relative spread applied
    to the measured throughput, ``[throughput · lo(R*) / R, throughput · hi(R*) / R]`` with ``R`` the
    sample's ``Σ n / Σ e2e`` (the gaps are taken as a fixed share of the wall time)."""
    times = [e2e(r.token_times_s) or 0.0 for r in ok]
    ci = stats.ratio_of_sums_ci([verified_tokens(r) for r in ok], times, clusters=[r.prompt_id for r in ok])
    if ci is None or ci["value"] <= 0:
        return None
    scale = throughput / ci["value"]
    return {**ci, "value": throughput, "lo": ci["lo"] * scale, "hi": ci["hi"] * scale}


def dedupe(records: list[RequestRecord]) -> list[RequestRecord]:
    """One record per (backend, stage, request id): the first that succeeded, else the first. A
    resumed run never counts a request twice."""
    best: dict[tuple, RequestRecord] = {}
    for r in records:
        if r.key not in best or (best[r.key].error is not None and r.error is None):
            best[r.key] = r
    return list(best.values())


# ---- comparisons -------------------------------------------------------------------------------

def common_prefix(a: Sequence, b: Sequence) -> int:
    """How many leading items (token ids, or characters) ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def agreement(reference: list[RequestRecord], other: list[RequestRecord]) -> dict[str, Any] | None:
    """Greedy-token agreement of ``other`` with ``reference``, over prompts both generated.

    Per prompt (first measured repeat of each): ``match = mean(ref[i] == out[i])`` over the common
    length, and ``prefix = index of the first difference`` (the common length when none). Reported:
    the mean match fraction, the mean prefix length, and the share of prompts that agree exactly.
    """
    def first(records: list[RequestRecord]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for r in sorted((r for r in records if not r.warmup and r.error is None), key=lambda r: r.repeat):
            out.setdefault(r.prompt_id, r.token_ids)
        return out

    ref, oth = first(reference), first(other)
    common = sorted(set(ref) & set(oth))
    if not common:
        return None
    matches, prefixes, exact = [], [], 0
    for pid in common:
        a, b = ref[pid], oth[pid]
        n = min(len(a), len(b))
        if n == 0:
            continue
        same = [x == y for x, y in zip(a[:n], b[:n])]
        matches.append(sum(same) / n)
        prefixes.append(common_prefix(a, b))
        exact += a == b
    if not matches:
        return None
    return {
        "prompts": len(matches),
        "token_match": mean(matches),
        "mean_prefix_tokens": mean(prefixes),
        "exact_prompts": exact,
    }


def cost_per_million(dollars_per_hour: float, tok_s: float) -> float:
    """$ per 1M output tokens = $/h / (tok/s * 3600) * 1e6."""
    return dollars_per_hour / (tok_s * 3600.0) * 1e6
