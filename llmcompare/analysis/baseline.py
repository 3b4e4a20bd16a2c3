"""Each backend against the baseline, stage by stage: speed-ups paired by prompt, ratios of medians with
bootstrap intervals, and greedy-token agreement (docs/metrics.md, "Statistics")."""

from __future__ import annotations

from typing import Any

from llmcompare.analysis import metrics, statistics
from llmcompare.records import RequestRecord


def compare_summaries(labels: list[str], requests: list[RequestRecord], reference: str | None,
                      stages: list[str]) -> list[dict[str, Any]]:
    """Each backend against the reference (default: the first one), stage by stage, one dict each:

    * ``tpot_ratio``, ``ttft_ratio``, ``e2e_ratio``: ``median(backend) / median(reference)`` over
      requests, unpaired, with a bootstrap interval that resamples prompts on each side
      (:func:`llmcompare.analysis.statistics.bootstrap_ratio`; below 1 is faster);
    * ``speedup_tpot``, ``speedup_ttft``, ``speedup_e2e``: the speed-up paired by prompt, the
      geometric mean of per-prompt ``reference / backend`` (above 1 is faster), with its interval
      and verdict (:func:`llmcompare.analysis.statistics.paired_speedup`); the sharper test of the two;
    * ``agreement``: greedy-token agreement (:func:`llmcompare.analysis.metrics.agreement`).
    """
    if len(labels) < 2:
        return []
    ref = reference or labels[0]
    out = []
    for stage in stages:
        measured = {label: [r for r in requests if r.backend == label and r.stage == stage and not r.warmup]
                    for label in labels}
        ok = {label: [r for r in rs if r.error is None] for label, rs in measured.items()}

        for label in labels:
            if label == ref or not ok[label] or not ok[ref]:
                continue
            out.append({
                "backend": label,
                "baseline": ref,
                "stage": stage,
                "tpot_ratio": _ratio(ok[ref], ok[label], "tpot_ms"),
                "ttft_ratio": _ratio(ok[ref], ok[label], "ttft_ms"),
                "e2e_ratio": _ratio(ok[ref], ok[label], "e2e_ms"),
                "speedup_tpot": statistics.paired_speedup(measured[ref], measured[label], "tpot_ms"),
                "speedup_ttft": statistics.paired_speedup(measured[ref], measured[label], "ttft_ms"),
                "speedup_e2e": statistics.paired_speedup(measured[ref], measured[label], "e2e_ms"),
                "agreement": metrics.agreement(ok[ref], ok[label]),
            })
    return out


def _ratio(base: list[RequestRecord], other: list[RequestRecord], key: str) -> dict[str, Any] | None:
    """``median(other) / median(base)`` of a :func:`metrics.request_row` figure, resampling prompts."""
    return statistics.bootstrap_ratio([metrics.request_row(r)[key] for r in base],
                                      [metrics.request_row(r)[key] for r in other],
                                      clusters_a=[r.prompt_id for r in base], clusters_b=[r.prompt_id for r in other])
