"""results.json (everything), requests.csv (one row per request) and summary.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..metrics import request_row

if TYPE_CHECKING:
    from ..api import RunResult

CSV_FIELDS = [
    "backend", "prompt_id", "repeat", "warmup", "input_tokens", "expected_output_tokens", "output_tokens",
    "length_ok", "engine_prompt_tokens", "ttft_ms", "tpot_ms", "e2e_ms", "tok_s", "finish_reason", "error", "token_ids",
]


SYNTHETIC_AGREEMENT_NOTE = (
    "Random weights make near-ties between logits, so token agreement is not meaningful for a synthetic model."
)

PREFIX_CACHE = {
    "none": "none across requests",
    "reset": "reset before every request",
    "disabled": "disabled at load",
}


def write_all(result: RunResult) -> dict[str, Path]:
    d = result.run_dir
    paths = {"json": d / "results.json", "csv": d / "requests.csv", "markdown": d / "summary.md"}
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, default=str), encoding="utf-8")
    write_csv(result, paths["csv"])
    paths["markdown"].write_text(markdown(result), encoding="utf-8")
    return paths


def write_csv(result: RunResult, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in result.requests:
            row: dict[str, Any] = {k: getattr(r, k, None) for k in CSV_FIELDS if hasattr(r, k)}
            row.update(request_row(r))
            row["length_ok"] = r.length_ok
            row["token_ids"] = " ".join(map(str, r.token_ids))
            w.writerow(row)


def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def mib(x: int | None) -> str:
    return "–" if not x else f"{x / 2**20:,.0f} MiB"


def markdown(result: RunResult) -> str:
    spec, env = result.spec, result.environment
    model = env.get("model", {})
    lines = [
        "# llmcompare results",
        "",
        f"Model **{model.get('name')}** ({model.get('kind')}{', ' + model['quantization'] if model.get('quantization') else ''}),"
        f" {len(result.prompts)} prompts, {spec['max_new_tokens']} new tokens forced, batch size 1, greedy,"
        f" {spec['repeats']} repeats, {spec['warmup']} warm-up request(s) excluded. Device: {spec['device']}.",
        f"Machine: {env.get('cpu')} ({env.get('cpu_count_logical')} logical CPUs), {mib(env.get('ram_bytes'))} RAM,"
        f" {env.get('os')}, Python {env.get('python')}, llmcompare {env.get('llmcompare')}.",
        "",
        "| backend | status | n | TTFT p50 ms | TPOT p50 ms | TPOT p90 ms | e2e p50 ms | tok/s p50 | throughput tok/s"
        " | load s | peak RSS | GPU peak | length ok | agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result.summaries:
        agree = agreement_pct(s)
        ok_len = f"{s.n_length_ok}/{s.n_requests}"
        status = s.status if s.status == "ok" else f"FAILED: {s.error}"
        lines.append(
            f"| {s.backend} | {status} | {s.n_requests} | {fmt(s.ttft_ms['p50'])} | {fmt(s.tpot_ms['p50'], 2)}"
            f" | {fmt(s.tpot_ms['p90'], 2)} | {fmt(s.e2e_ms['p50'])} | {fmt(s.tok_s['p50'])} | {fmt(s.throughput_tok_s)}"
            f" | {fmt(s.load_s, 2)} | {mib(s.peak_rss_bytes)} | {mib(s.gpu_peak_bytes)} | {ok_len} | {agree} |"
        )
    if result.comparisons:
        lines += ["", f"## Against {result.comparisons[0]['reference']} (ratio of medians, 95% bootstrap CI)", "",
                  "| backend | TPOT ratio | TTFT ratio | e2e ratio | token agreement | identical outputs |",
                  "|---|---|---|---|---|---|"]
        for c in result.comparisons:
            a = c.get("agreement")
            lines.append(
                f"| {c['backend']} | {ratio(c['tpot_ratio'])} | {ratio(c['ttft_ratio'])} | {ratio(c['e2e_ratio'])}"
                f" | {a['token_match']:.1%} | {a['exact_prompts']}/{a['prompts']} |" if a else
                f"| {c['backend']} | {ratio(c['tpot_ratio'])} | {ratio(c['ttft_ratio'])} | {ratio(c['e2e_ratio'])} | – | – |"
            )
    lines += ["", "## Backends", ""]
    for s in result.summaries:
        info, caps = s.info, s.info.get("capabilities") or {}
        versions = ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items()) or "–"
        where = "in-process" if caps.get("in_process", True) else "over HTTP"
        cache = PREFIX_CACHE.get(caps.get("prefix_cache"), "unknown")
        opts = ", ".join(f"{k}={v}" for k, v in (info.get("options") or {}).items()) or "defaults"
        lines.append(f"- **{s.backend}**: {versions}; device {info.get('device')}; {where}; prefix cache: {cache};"
                     f" options: {opts}; cold request TTFT {fmt(s.cold_ttft_ms)} ms.")
    if result.comparisons and model.get("kind") == "synthetic":
        lines += ["", SYNTHETIC_AGREEMENT_NOTE]
    lines += ["", "Definitions: TTFT = first token time; TPOT = (e2e − TTFT)/(n − 1); tok/s = n/e2e per request;"
              " throughput = output tokens / measured wall time. See docs/metrics.md.", ""]
    flagged = [s for s in result.summaries if s.n_length_mismatch or s.n_prompt_mismatch]
    for s in flagged:
        lines.append(f"**Warning:** {s.backend}: {s.n_length_mismatch} request(s) did not produce exactly"
                     f" {spec['max_new_tokens']} tokens; {s.n_prompt_mismatch} prompt count mismatch(es).")
    return "\n".join(lines) + "\n"


def agreement_pct(s: Any) -> str:
    return f"{s.agreement['token_match']:.0%}" if s.agreement else "–"


def ratio(r: dict[str, Any] | None) -> str:
    if not r:
        return "–"
    note = " (within noise)" if r["within_noise"] else ""
    return f"{r['ratio']:.2f}× [{r['lo']:.2f}, {r['hi']:.2f}]{note}"
