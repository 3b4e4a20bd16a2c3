"""Load runs in files: ``levels.csv`` (one row per backend × level) and the Markdown section."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcompare.report.base import headline
from llmcompare.report.columns import LEVEL_COLUMNS, fmt

if TYPE_CHECKING:
    from llmcompare.analysis.result import RunResult

LEVELS_CSV_FIELDS = [
    "backend", "stage", "concurrency", "rate", "arrivals", "requests", "errors", "errors_by_kind", "length_mismatch",
    "wall_s", "output_tokens", "output_tok_s", "req_s", "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms",
    "tpot_p90_ms", "tpot_p99_ms", "itl_p50_ms", "itl_p99_ms", "e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms",
    "queue_p50_ms", "queue_p99_ms", "achieved_rate", "achieved_concurrency", "max_in_flight", "fell_behind",
    "slo_attainment", "goodput_req_s", "meets_slo", "price_per_hour", "cost_per_1m_tokens", "hours_to_1m_tokens",
    "ttft_p50_ms_lo", "ttft_p50_ms_hi", "tpot_p50_ms_lo", "tpot_p50_ms_hi", "e2e_p50_ms_lo", "e2e_p50_ms_hi",
    "warmup_requests", "warmup_errors", "count_disagreements", "failed",
]
"""The ``_lo``/``_hi`` columns are the 95% bootstrap interval of the p50 before them (``Level.ci``);
``failed`` says why a level is not a result (empty when it is one: ``Level.failed``)."""


def level_row(lv) -> dict[str, Any]:
    row = {k: getattr(lv, k) for k in LEVELS_CSV_FIELDS if hasattr(lv, k)}
    for metric in ("ttft", "tpot", "itl", "e2e", "queue"):
        dist = getattr(lv, f"{metric}_ms")
        for q in ("p50", "p90", "p99"):
            row[f"{metric}_{q}_ms"] = dist.get(q)
    row["errors_by_kind"] = " ".join(f"{k}={v}" for k, v in sorted(lv.errors_by_kind.items()))
    for key, ci in (getattr(lv, "ci", None) or {}).items():
        row[f"{key}_lo"], row[f"{key}_hi"] = ci.get("lo"), ci.get("hi")
    return {k: row.get(k) for k in LEVELS_CSV_FIELDS}


def write_levels_csv(result: RunResult, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=LEVELS_CSV_FIELDS)
        w.writeheader()
        for lv in result.levels:
            w.writerow(level_row(lv))


def recommendation_lines(result: RunResult) -> list[str]:
    rec = result.analysis.get("recommendations") or {}
    out = []
    for key, title, unit in (("best_latency", "Best latency", "tpot_p50_ms"),
                             ("best_throughput", "Best throughput", "output_tok_s"),
                             ("most_cost_effective", "Most cost-effective", "cost_per_1m_tokens")):
        r = rec.get(key)
        if r is None:
            why = " (give --price-per-hour)" if key == "most_cost_effective" else ""
            out.append(f"{title}: –{why}")
            continue
        value = {"tpot_p50_ms": f"{r[unit]:,.2f} ms/token TPOT p50", "output_tok_s": f"{r[unit]:,.1f} output tok/s",
                 "cost_per_1m_tokens": f"${r[unit]:,.2f} per 1M output tokens"}[unit]
        out.append(f"{title}: {r['backend']} at {r['stage']}, {value}")
    return out


def markdown_levels(result: RunResult) -> list[str]:
    sc = result.spec.scenario
    length = f"{sc.duration_s:g} s" if sc.duration_s is not None else f"{sc.requests} requests"
    lines = [f"{headline(result)}; each level {length} after its warm-up; greedy, output length forced;"
             " every request distinct (no prefix cache can help). Latencies from the scheduled send.", "",
             "| " + " | ".join(c.header for c in LEVEL_COLUMNS) + " |", "|" + "---|" * len(LEVEL_COLUMNS)]
    for lv in result.levels:
        lines.append("| " + " | ".join(c.cell(lv, "brackets") for c in LEVEL_COLUMNS) + " |")
    lines += ["", "## Knee, SLO and recommendations", ""]
    for label, a in (result.analysis.get("backends") or {}).items():
        lines.append(f"- **{label}**: knee at {a['knee'] or '–'} ({fmt(a['knee_output_tok_s'])} output tok/s,"
                     f" TPOT p50 {fmt(a['knee_tpot_p50_ms'], 2)} ms); highest level meeting the SLO:"
                     f" {a['max_level_meeting_slo'] or ('–' if sc.slo else 'no SLO given')}.")
    lines += [""] + [f"- {x}" for x in recommendation_lines(result)]
    lines += ["", f"Knee rule: {result.analysis.get('knee_rule')}. SLO rule: {result.analysis.get('slo_rule')}.", ""]
    flagged = [lv for lv in result.levels if lv.fell_behind]
    for lv in flagged:
        lines.append(f"**Warning:** {lv.backend} {lv.stage}: the client fell behind the schedule"
                     f" (queue p99 {fmt(lv.queue_ms.get('p99'))} ms); the level was not driven at the asked rate.")
    return lines
