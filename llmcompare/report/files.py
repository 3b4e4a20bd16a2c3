"""results.json (everything), requests.csv (one row per request), levels.csv (load runs) and summary.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcompare.analysis.metrics import request_row
from llmcompare.config.spec import LoadScenario
from llmcompare.report.columns import fmt, latency_columns, mib, ratio, speedup, summary_notes, ttft_by_input_length

if TYPE_CHECKING:
    from llmcompare.analysis.result import RunResult

CSV_FIELDS = [
    "backend", "stage", "request_id", "prompt_id", "repeat", "warmup", "input_tokens", "expected_output_tokens",
    "output_tokens", "length_ok", "count_source", "engine_prompt_tokens", "engine_output_tokens", "scheduled_at",
    "sent_at", "queue_ms", "ttft_ms", "tpot_ms", "e2e_ms", "tok_s", "finish_reason", "error_kind", "error", "token_ids",
]

SYNTHETIC_AGREEMENT_NOTE = (
    "Random weights make near-ties between logits, so token agreement is not meaningful for a synthetic model."
)

PREFIX_CACHE = {
    "none": "none across requests",
    "reset": "reset before every request",
    "disabled": "disabled at load",
    "distinct": "every request made distinct",
    "server": "the server's own setting (see its recipe); every load request made distinct",
    "on": "on in the server and it cannot be turned off: repeated latency prompts may hit it; every load request made distinct",
}


def write_all(result: RunResult) -> dict[str, Path]:
    d = result.run_dir
    paths = {"json": d.results_json, "csv": d.requests_csv, "markdown": d.markdown}
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, default=str), encoding="utf-8")
    write_csv(result, paths["csv"])
    if result.levels:
        from llmcompare.report.levels_files import write_levels_csv

        paths["levels"] = d.levels_csv
        write_levels_csv(result, paths["levels"])
    from llmcompare.report.html import write_html

    paths["html"] = write_html(result)
    paths["markdown"].write_text(markdown(result), encoding="utf-8")
    paths["requests"] = d.requests
    return paths


def write_csv(result: RunResult, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in result.requests:
            row: dict[str, Any] = {k: getattr(r, k) for k in CSV_FIELDS if hasattr(r, k)}
            row.update(request_row(r))
            row["length_ok"] = r.length_ok
            row["queue_ms"] = r.queue_s * 1000.0
            row["token_ids"] = " ".join(map(str, r.token_ids))
            w.writerow(row)


def headline(result: RunResult) -> str:
    """One line that says what was run."""
    sc = result.spec.scenario
    model = result.environment.get("model", {}).get("name")
    if isinstance(sc, LoadScenario):
        levels = (f"concurrency {', '.join(map(str, sc.concurrency))}" if sc.concurrency
                  else f"{sc.arrivals} arrivals at {', '.join(f'{r:g}' for r in sc.rates)} req/s" if sc.rates else "sweep")
        return f"{model} · load · {levels} · {sc.max_new_tokens} new tokens · {result.spec.device}"
    n = result.prompts_per_stage or len(result.prompts) // max(1, len(result.stages))
    return (f"{model} · {n} prompts × {sc.repeats} ·"
            f" {sc.max_new_tokens} new tokens · batch 1 · {result.spec.device}")


def markdown_fidelity(result: RunResult) -> list[str]:
    from llmcompare.report.fidelity import FIDELITY_COLUMNS, examples, reference_line, verdict_lines

    lines = ["", "## Fidelity: does each backend still say the same thing?", "", reference_line(result), ""]
    lines += [f"- {line}" for line in verdict_lines(result)]
    if any(f.prompts for f in result.fidelity):
        lines += ["", "| " + " | ".join(c.header for c in FIDELITY_COLUMNS) + " |", "|" + "---|" * len(FIDELITY_COLUMNS)]
        lines += ["| " + " | ".join(c.cell(f).replace("|", "\\|") for c in FIDELITY_COLUMNS) + " |"
                  for f in result.fidelity]
    shown = examples(result)
    if shown:
        lines += ["", "Real divergences (the text both agree on, then each continuation):", "",
                  "| backend | prompt | token | gap nats | … shared | reference goes on | backend goes on |",
                  "|---|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(e[k].replace("|", "\\|") for k in ("backend", "prompt_id", "position", "gap", "shared",
                                                                       "reference", "backend_text")) + " |"
                  for e in shown]
    lines += ["", "A near-tie: at the first divergence the reference scores the backend's token within the margin of"
              " its own; a real divergence: beyond it. Log-likelihood gap: the reference's mean log-probability per"
              " token of its own outputs minus of the backend's. See docs/fidelity.md."]
    return lines


def markdown(result: RunResult) -> str:
    spec, env = result.spec, result.environment
    sc = spec.scenario
    model = env.get("model", {})
    lines = ["# llmcompare results", ""]
    if isinstance(sc, LoadScenario):
        from llmcompare.report.levels_files import markdown_levels

        lines += markdown_levels(result)
    else:
        lines += [
            f"Model **{model.get('name')}** ({model.get('kind')}{', ' + model['quantization'] if model.get('quantization') else ''}),"
            f" {headline(result)}; greedy, {sc.max_new_tokens} new tokens forced, {sc.repeats} repeats,"
            f" {sc.warmup} warm-up request(s) per stage excluded.",
        ]
    lines += [
        f"Machine: {env.get('cpu')} ({env.get('cpu_count_logical')} logical CPUs), {mib(env.get('ram_bytes'))} RAM,"
        f" {env.get('os')}, Python {env.get('python')}, llmcompare {env.get('llmcompare')}."
        + "".join(f" GPU {g.get('index')}: {g.get('name')}, driver {g.get('driver')}." for g in env.get("gpus") or []),
        "",
    ]
    if not result.levels:
        cols = latency_columns(result.summaries)
        lines += ["| " + " | ".join(c.header for c in cols) + " |", "|" + "---|" * len(cols)]
        for s in result.summaries:
            lines.append("| " + " | ".join(c.cell(s, intervals="brackets") for c in cols) + " |")
        lengths, ttft = ttft_by_input_length(result.summaries)
        if len(lengths) > 1:
            lines += ["", "## TTFT p50 ms against input length (prefill cost)", "",
                      "| backend | " + " | ".join(f"{n} tokens" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
            for label, row in ttft.items():
                lines.append(f"| {label} | " + " | ".join(fmt(row.get(n)) for n in lengths) + " |")
    if result.comparisons:
        lines += ["", f"## Against {result.comparisons[0]['baseline']} (95% bootstrap intervals over prompts)", "",
                  "| backend | stage | speed-up TPOT, paired | speed-up e2e, paired | TPOT ratio of medians | TTFT ratio"
                  " | e2e ratio | token agreement | identical outputs |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in result.comparisons:
            a = c.get("agreement")
            agree = f"{a['token_match']:.1%} | {a['exact_prompts']}/{a['prompts']}" if a else "– | –"
            lines.append(f"| {c['backend']} | {c['stage']} | {speedup(c.get('speedup_tpot'))}"
                         f" | {speedup(c.get('speedup_e2e'))} | {ratio(c['tpot_ratio'])} | {ratio(c['ttft_ratio'])}"
                         f" | {ratio(c['e2e_ratio'])} | {agree} |")
        lines += ["", "Speed-up, paired: the geometric mean over prompts of baseline / backend (above 1: faster), each"
                  " prompt's figure the median of its repeats. Ratio of medians: backend / baseline (below 1: faster)."]
    if spec.fidelity is not None:
        lines += markdown_fidelity(result)
    lines += ["", "## Backends", ""]
    seen = set()
    for s in result.summaries:
        if s.backend in seen:
            continue
        seen.add(s.backend)
        info, caps = s.info, s.info.get("capabilities") or {}
        versions = ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items()) or "–"
        where = "in-process" if caps.get("in_process", True) else "over HTTP"
        cache = PREFIX_CACHE.get(caps.get("prefix_cache"), "unknown")
        opts = ", ".join(f"{k}={v}" for k, v in (info.get("options") or {}).items()) or "defaults"
        lines.append(f"- **{s.backend}**: {versions}; device {info.get('device')}; {where}; prefix cache: {cache};"
                     f" options: {opts}; cold request TTFT {fmt(s.cold_ttft_ms)} ms.")
    if result.comparisons and model.get("kind") == "synthetic":
        lines += ["", SYNTHETIC_AGREEMENT_NOTE]
    lines += ["", "Definitions: TTFT = first token time; TPOT = (e2e − TTFT)/(n − 1); tok/s per request = n/e2e;"
              " output tok/s = output tokens / measured wall time. See docs/metrics.md.", ""]
    for kind, text in summary_notes(result.summaries, sc.max_new_tokens):
        lines.append(f"**{kind.capitalize()}:** {text}.")
    return "\n".join(lines) + "\n"
