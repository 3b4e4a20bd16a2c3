"""Load runs in files: ``levels.csv`` (one row per backend × level) and the Markdown section."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcompare.report.base import headline
from llmcompare.report.columns import LEVEL_COLUMNS, fmt, telemetry_columns

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
    "steady", "steady_reason", "steady_window_start", "steady_window_end", "steady_output_tok_s", "sweep_stop",
    "server_dialect", "server_scrapes", "server_scrape_failures", "server_running_mean", "server_running_max",
    "server_waiting_mean", "server_waiting_max", "kv_cache_usage_mean", "kv_cache_usage_max", "preemptions",
    "prefix_cache_queries", "prefix_cache_hits", "prefix_cache_hit_rate", "planned_hit_rate", "measured_hit_rate",
    "hit_rate_check", "server_generation_tokens", "client_generation_tokens", "token_check", "gpu_energy_j",
    "gpu_energy_s", "gpu_energy_method", "gpu_power_mean_w", "gpu_sm_util_mean_pct", "energy_output_tokens",
    "joules_per_token", "tokens_per_joule",
]
"""The ``_lo``/``_hi`` columns are the 95% bootstrap interval of the p50 before them (``Level.ci``);
``failed`` says why a level is not a result (empty when it is one: ``Level.failed``). From ``steady`` on:
the steady-state test and window, the server's own metrics over the level (``server_*``, ``kv_cache_*``,
``preemptions``, ``prefix_cache_*``; the hit rate of the whole level, and of its measured phase against
the plan), the generation-token cross-check (``token_check``: agree, mismatch or unavailable) and the
GPUs' energy over the steady window (docs/load.md, docs/telemetry.md)."""


def level_row(lv) -> dict[str, Any]:
    row = {k: getattr(lv, k) for k in LEVELS_CSV_FIELDS if hasattr(lv, k)}
    for metric in ("ttft", "tpot", "itl", "e2e", "queue"):
        dist = getattr(lv, f"{metric}_ms")
        for q in ("p50", "p90", "p99"):
            row[f"{metric}_{q}_ms"] = dist.get(q)
    row["errors_by_kind"] = " ".join(f"{k}={v}" for k, v in sorted(lv.errors_by_kind.items()))
    for key, ci in (getattr(lv, "ci", None) or {}).items():
        row[f"{key}_lo"], row[f"{key}_hi"] = ci.get("lo"), ci.get("hi")
    window = getattr(lv, "steady_window", None) or [None, None]
    row["steady_window_start"], row["steady_window_end"] = window
    srv = getattr(lv, "server", None) or {}
    if srv:
        row.update(server_dialect=srv.get("dialect"), server_scrapes=srv.get("scrapes"),
                   server_scrape_failures=" ".join(f"{k}={v}" for k, v in sorted((srv.get("failures") or {}).items())),
                   preemptions=srv.get("preemptions"), prefix_cache_queries=srv.get("prefix_cache_queries"),
                   prefix_cache_hits=srv.get("prefix_cache_hits"), prefix_cache_hit_rate=srv.get("prefix_cache_hit_rate"),
                   server_generation_tokens=srv.get("generation_tokens"))
        for gauge, prefix in (("running", "server_running"), ("waiting", "server_waiting"),
                              ("kv_cache_usage", "kv_cache_usage")):
            g = srv.get(gauge) or {}
            row[f"{prefix}_mean"], row[f"{prefix}_max"] = g.get("mean"), g.get("max")
        tc = srv.get("token_check") or {}
        row["client_generation_tokens"], row["token_check"] = tc.get("client_tokens"), tc.get("verdict")
        hc = srv.get("hit_rate_check") or {}
        if hc:
            row["planned_hit_rate"], row["measured_hit_rate"] = hc.get("planned"), hc.get("observed")
            row["hit_rate_check"] = {True: "agree", False: "differs", None: "unavailable"}[hc.get("agree")]
    en = getattr(lv, "energy", None) or {}
    if en:
        row.update(gpu_energy_j=en.get("joules"), gpu_energy_s=en.get("seconds"), gpu_energy_method=en.get("method"),
                   gpu_power_mean_w=en.get("mean_power_w"), gpu_sm_util_mean_pct=en.get("sm_util_mean_pct"),
                   energy_output_tokens=en.get("output_tokens"), joules_per_token=en.get("joules_per_token"),
                   tokens_per_joule=en.get("tokens_per_joule"))
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


def level_warnings(result: RunResult) -> list[tuple[str, str]]:
    """The flags every report prints under the levels, as ``("warning" | "note", text)``: a level whose
    server counted other generated tokens than llmcompare received, one that was not steady, a
    prefix-cache hit rate other than planned, failed scrapes, and where a sweep stopped."""
    out: list[tuple[str, str]] = []
    for lv in result.levels:
        who = f"{lv.backend} {lv.stage}"
        srv = getattr(lv, "server", None) or {}
        tc = srv.get("token_check") or {}
        if tc.get("verdict") == "mismatch":
            out.append(("warning", f"{who}: generation-token cross-check failed: {tc.get('message')}; one side counts"
                                   " tokens the other does not, or another client used the server"))
        if getattr(lv, "steady", None) is False:
            out.append(("warning", f"{who}: {lv.steady_reason}; its averages describe the level's length, not the"
                                   " server"))
        hc = srv.get("hit_rate_check") or {}
        if hc.get("agree") is False or (hc and hc.get("agree") is None):
            out.append(("warning" if hc.get("agree") is False else "note", f"{who}: prefix cache: {hc.get('message')}"))
        if srv.get("failures"):
            failed = ", ".join(f"{v} {k}" for k, v in sorted(srv["failures"].items()))
            out.append(("note", f"{who}: {failed} scrape(s) of the server's /metrics failed ({srv.get('scrapes', 0)}"
                                " answered)"))
        if getattr(lv, "sweep_stop", False):
            out.append(("note", f"{lv.backend}: the sweep stopped adding load after {lv.stage}, which was not steady"))
    return out


def markdown_telemetry(result: RunResult) -> list[str]:
    """The per-level table of the server's own metrics and the GPUs' energy (when either was sampled)."""
    cols = telemetry_columns(result.levels)
    if not cols:
        return []
    lines = ["", "## Server metrics and energy per level", "",
             "| " + " | ".join(c.header for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(c.cell(lv) for c in cols) + " |" for lv in result.levels]
    lines += ["", "Gauges: mean · max over the level's scrapes; counters: their increase over the level. Generated"
              " tokens: the server's counter against every token llmcompare received in the level (warm-up and failed"
              " requests included), agreeing within 1%. Energy: over the steady window (docs/telemetry.md)."]
    return lines


def markdown_levels(result: RunResult) -> list[str]:
    sc = result.spec.scenario
    length = f"{sc.duration_s:g} s" if sc.duration_s is not None else f"{sc.requests} requests"
    cache = ("requests share prefixes on purpose (prefix cache on)" if getattr(sc, "prefix_cache", False)
             else "every request distinct (no prefix cache can help)")
    lines = [f"{headline(result)}; each level {length} after its warm-up; greedy, output length forced; {cache}."
             " Latencies from the scheduled send.", "",
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
    lines += markdown_telemetry(result)
    lines += [""] + [f"**{kind.capitalize()}:** {text}." for kind, text in level_warnings(result)]
    return lines
