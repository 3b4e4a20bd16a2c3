"""The telemetry figures of a stage, rebuilt from the raw records a worker wrote beside it
(:mod:`llmcompare.scenarios.telemetry`): the server's own metrics over a load level with the
generation-token cross-check and the prefix-cache hit rate against the plan, and the GPUs' energy over
a window with joules per output token (docs/telemetry.md, docs/metrics.md).

Every function here is pure over records: ``{"type": "metrics"}`` and ``{"type": "gpu"}`` dicts
(:attr:`llmcompare.records.RunRecords.metrics`, ``gpu``) and request records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmcompare.analysis import metrics
from llmcompare.records import RequestRecord
from llmcompare.telemetry import nvml, prometheus
from llmcompare.workloads.shared_prefix import check_hit_rate

GAUGES = ("running", "waiting", "kv_cache_usage")
COUNTERS = ("preemptions", "prefix_cache_queries", "prefix_cache_hits", "generation_tokens", "prompt_tokens")


def _of(records: Iterable[Mapping[str, Any]], backend: str, session: str | None) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("backend") == backend and (session is None or r.get("session") == session)]


def _marks(records: Sequence[Mapping[str, Any]], stage: str) -> dict[str, float]:
    """The times of the level's ``begin``, ``measured`` and ``end`` scrapes (the last of each: a level
    redone in the same session keeps its last run)."""
    out: dict[str, float] = {}
    for r in records:
        if r.get("stage") == stage and r.get("mark"):
            out[str(r["mark"])] = float(r["t"])
    return out


def server_level(records: Iterable[Mapping[str, Any]], backend: str, session: str | None, stage: str, *,
                 client_tokens: int | None = None, planned_hit_rate: Any = None) -> dict[str, Any] | None:
    """The server's figures over one load level (from its ``begin`` scrape to its ``end`` scrape),
    summed over the backend's servers (one per replica; ratios averaged): gauges' mean and max,
    counters' increase; with ``client_tokens`` the generation-token cross-check
    (:func:`~llmcompare.telemetry.prometheus.cross_check_tokens`); with ``planned_hit_rate`` (a rate,
    or a callable of the server's block size) the measured phase's prefix-cache hit rate against it.
    None when the level has no scrapes."""
    mine = _of(records, backend, session)
    by_replica: dict[int, list[Mapping[str, Any]]] = {}
    for r in mine:
        by_replica.setdefault(int(r.get("replica") or 0), []).append(r)
    windows, measured, info = [], [], {}
    for recs in by_replica.values():
        marks = _marks(recs, stage)
        if "begin" not in marks or "end" not in marks:
            continue
        dialect = next((r.get("dialect") for r in recs if r.get("dialect")), None)
        points = prometheus.points_from_records(recs, dialect)
        windows.append(prometheus.summarize_window(points, dialect, marks["begin"], marks["end"], stage=stage))
        if "measured" in marks:
            measured.append(prometheus.summarize_window(points, dialect, marks["measured"], marks["end"], stage=stage))
        info.update(prometheus.server_info(recs))
    if not windows:
        return None
    out: dict[str, Any] = {"dialect": windows[0].dialect, "servers": len(windows),
                           "scrapes": sum(w.scrapes for w in windows), "failures": {},
                           "bounded": all(w.bounded for w in windows),
                           "start": min(w.start for w in windows), "end": max(w.end for w in windows)}
    for w in windows:
        for k, v in w.failures.items():
            out["failures"][k] = out["failures"].get(k, 0) + v
    for g in GAUGES:
        values = [w.gauges[g] for w in windows if g in w.gauges]
        if values:
            ratio = g == "kv_cache_usage"
            mean = sum(v["mean"] for v in values) / (len(values) if ratio else 1)
            top = max(v["max"] for v in values) if ratio else sum(v["max"] for v in values)
            out[g] = {"mean": mean, "max": top}
    for c in COUNTERS:
        deltas = [w.delta(c) for w in windows if w.delta(c) is not None]
        if deltas:
            out[c] = sum(deltas)
    out["missing"] = sorted({f for w in windows for f in w.missing})
    q, h = out.get("prefix_cache_queries"), out.get("prefix_cache_hits")
    out["prefix_cache_hit_rate"] = h / q if q and h is not None else None
    block = _block_size(info)
    out["block_size"] = block
    out["prefix_caching"] = _caching(info)
    if client_tokens is not None:
        source = windows[0] if len(windows) == 1 else out.get("generation_tokens")
        out["token_check"] = prometheus.cross_check_tokens(source, client_tokens).to_dict()
    if planned_hit_rate is not None and measured:
        planned = planned_hit_rate(block or 1) if callable(planned_hit_rate) else float(planned_hit_rate)
        mq = [w.delta("prefix_cache_queries") for w in measured]
        mh = [w.delta("prefix_cache_hits") for w in measured]
        queries = sum(x for x in mq if x is not None) if any(x is not None for x in mq) else None
        hits = sum(x for x in mh if x is not None) if any(x is not None for x in mh) else None
        out["hit_rate_check"] = check_hit_rate(planned, queries, hits).to_dict()
        out["hit_rate_check"]["block_size"] = block or 1
    return out


def _block_size(info: Mapping[str, Mapping[str, str]]) -> int | None:
    """The server's prefix-cache block size, where it says (vLLM's ``cache_config_info``)."""
    for labels in info.values():
        try:
            if "block_size" in labels:
                return int(labels["block_size"])
        except (TypeError, ValueError):
            continue
    return None


def _caching(info: Mapping[str, Mapping[str, str]]) -> bool | None:
    """Whether the server says its prefix cache is on (vLLM's ``enable_prefix_caching`` label)."""
    for labels in info.values():
        value = labels.get("enable_prefix_caching")
        if value is not None:
            return str(value).lower() == "true"
    return None


def client_tokens(requests: Iterable[RequestRecord]) -> int:
    """Every output token llmcompare received in a level, warm-up and failed requests included: the
    count the server's generation counter is checked against."""
    return sum(int(r.output_tokens) for r in requests)


def verified_tokens_in_window(requests: Iterable[RequestRecord], start: float, end: float) -> int:
    """Verified output tokens (at most the forced length per request, none from a failed one:
    :func:`~llmcompare.analysis.metrics.verified_tokens`) that arrived within ``[start, end]`` (Unix)."""
    n = 0
    for r in requests:
        if r.sent_at is None:
            continue
        times = r.token_times_s[:metrics.verified_tokens(r)]
        n += sum(1 for dt in times if start <= r.sent_at + dt <= end)
    return n


def gpu_samples(records: Iterable[Mapping[str, Any]], backend: str, session: str | None) -> list[nvml.GpuSample]:
    return nvml.samples_from_records(_of(records, backend, session))


def energy(samples: Sequence[nvml.GpuSample], start: float, end: float, tokens: int) -> dict[str, Any] | None:
    """Energy of the GPUs over ``[start, end]`` (the counter, else integrated power), joules per output
    token and output tokens per joule for ``tokens`` generated in that window, and each GPU's mean SM
    utilisation, clocks and memory over it. None without readings or a window."""
    if not samples or end <= start:
        return None
    gpus = sorted({s.gpu for s in samples})
    e = nvml.energy_over_window(samples, start, end, output_tokens=tokens, gpus=gpus)
    out = e.to_dict()
    out.pop("type", None)
    means = nvml.summarize_samples(samples, start, end)
    out["per_gpu"] = {str(g): {k: v for k, v in m.items() if k != "n"} for g, m in means.items()}
    util = [m["sm_util_pct"]["mean"] for m in means.values() if isinstance(m.get("sm_util_pct"), dict)]
    out["sm_util_mean_pct"] = sum(util) / len(util) if util else None
    return out
