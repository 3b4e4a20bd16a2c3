"""The one column table every report draws from: console, Markdown and HTML show the same figures
under the same names, so "tok/s" can never mean two things.

A :class:`Column` has a key, a header, how to read its value from a summary (or a load level) and how
to format it. Renderers only choose which columns to show and how to style a cell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmcompare.analysis.metrics import Summary


def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def mib(x: int | None) -> str:
    return "–" if not x else f"{x / 2**20:,.0f} MiB"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def ratio(r: dict[str, Any] | None) -> str:
    if not r:
        return "–"
    note = " (within noise)" if r["within_noise"] else ""
    return f"{r['ratio']:.2f}× [{r['lo']:.2f}, {r['hi']:.2f}]{note}"


def speedup(s: dict[str, Any] | None) -> str:
    """A paired speed-up: ``1.80× [1.62, 1.99] faster`` (above 1: faster than the baseline)."""
    if not s:
        return "–"
    dropped = f" · {s['prompts']}/{s['prompts'] + s['dropped']} prompts" if s.get("dropped") else ""
    return f"{s['speedup']:.2f}× [{s['lo']:.2f}, {s['hi']:.2f}] {s['verdict']}{dropped}"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    value: Callable[[Any], Any]
    format: Callable[[Any], str] = fmt
    numeric: bool = True
    bad: Callable[[Any], bool] | None = None
    """True for a cell that should be shown as a problem (a failed status, a length mismatch)."""

    def cell(self, row: Any, intervals: str | None = None) -> str:
        """The formatted value; with ``intervals`` and where the row has a 95% interval under this
        column's key (``Summary.ci``), also the interval: ``"brackets"`` gives ``4.60 [4.58, 4.62]``,
        ``"pm"`` gives ``4.60 ±0.02`` (the larger half-width; the console's narrow form)."""
        value = self.value(row)
        text = self.format(value)
        ci = (getattr(row, "ci", None) or {}).get(self.key) if intervals else None
        if not ci or ci.get("lo") is None or value is None or text == "–":
            return text
        if intervals == "brackets":
            return f"{text} [{self.format(ci['lo'])}, {self.format(ci['hi'])}]"
        return f"{text} ±{self.format(max(ci['hi'] - value, value - ci['lo']))}"


def _status(s: Summary) -> str:
    return s.status if s.status == "ok" else f"failed: {s.error or ''}"


def _length_ok(s: Summary) -> str:
    return f"{s.n_length_ok}/{s.n_requests}"


def _agreement(s: Summary) -> str:
    return pct(s.agreement["token_match"]) if s.agreement else "–"


BACKEND = Column("backend", "backend", lambda s: s.backend, str, numeric=False)
STAGE = Column("stage", "stage", lambda s: s.stage, str, numeric=False)
STATUS = Column("status", "status", _status, str, numeric=False, bad=lambda s: s.status != "ok")
N = Column("n", "n", lambda s: s.n_requests, str)
TTFT_P50 = Column("ttft_p50_ms", "TTFT p50 ms", lambda s: s.ttft_ms["p50"])
TPOT_P50 = Column("tpot_p50_ms", "TPOT p50 ms", lambda s: s.tpot_ms["p50"], lambda x: fmt(x, 2))
TPOT_P90 = Column("tpot_p90_ms", "TPOT p90 ms", lambda s: s.tpot_ms["p90"], lambda x: fmt(x, 2))
E2E_P50 = Column("e2e_p50_ms", "e2e p50 ms", lambda s: s.e2e_ms["p50"])
OUTPUT_TOK_S = Column("output_tok_s", "output tok/s", lambda s: s.throughput_tok_s)
"""Generated tokens / measured wall time of the stage (all requests, warm-up excluded)."""
REQUEST_TOK_S = Column("request_tok_s_p50", "tok/s per request p50", lambda s: s.tok_s["p50"])
"""n / e2e of one request, median over requests."""
LOAD_S = Column("load_s", "load s", lambda s: s.load_s, lambda x: fmt(x, 2))
PEAK_RSS = Column("peak_rss", "peak RSS", lambda s: s.peak_rss_bytes, mib)
GPU_PEAK = Column("gpu_peak", "GPU peak", lambda s: s.gpu_peak_bytes, mib)


def _floor_pct(s: Summary) -> float | None:
    return (s.info.get("roofline") or {}).get("percent_of_floor")


FLOOR_PCT = Column("floor_pct", "% of floor", _floor_pct, lambda x: "–" if x is None else f"{x:.1f}%")
"""Batch-1 decode floor / TPOT p50, where the run measured the GPU's bandwidth (:mod:`llmcompare.hardware.roofline`)."""
JOULES_PER_TOKEN = Column("joules_per_token", "J / output token",
                          lambda s: (s.info.get("energy") or {}).get("joules_per_token"), lambda x: _joules(x))
"""GPU energy over the stage's measured requests / their verified output tokens (CUDA runs; docs/metrics.md)."""
TOKENS_PER_JOULE = Column("tokens_per_joule", "output tokens / J",
                          lambda s: (s.info.get("energy") or {}).get("tokens_per_joule"), lambda x: _joules(x))
LENGTH_OK = Column("length_ok", "length ok", _length_ok, str, bad=lambda s: s.n_length_ok != s.n_requests)
AGREEMENT = Column("agreement", "agreement", _agreement, str)

CONSOLE_ONLY_DROPS = {"request_tok_s_p50"}


def latency_columns(summaries: list[Summary], where: str = "markdown") -> list[Column]:
    """The summary table's columns: the stage column only with several stages, "% of floor" only where a
    summary carries a roofline entry, GPU memory only where a backend used a GPU; the console leaves out
    the per-request tok/s to fit a terminal."""
    cols = [BACKEND]
    if len({s.stage for s in summaries}) > 1:
        cols.append(STAGE)
    cols += [STATUS, N, TTFT_P50, TPOT_P50, TPOT_P90]
    if any("roofline" in s.info for s in summaries):
        cols.append(FLOOR_PCT)
    cols += [E2E_P50, OUTPUT_TOK_S, REQUEST_TOK_S, LOAD_S, PEAK_RSS]
    if any(s.gpu_peak_bytes for s in summaries):
        cols.append(GPU_PEAK)
    if any(s.info.get("energy") for s in summaries):
        cols += [JOULES_PER_TOKEN, TOKENS_PER_JOULE]
    cols += [LENGTH_OK, AGREEMENT]
    if where == "console":
        cols = [c for c in cols if c.key not in CONSOLE_ONLY_DROPS]
    return cols


def ttft_by_input_length(summaries: list[Summary]) -> tuple[list[int], dict[str, dict[int, float | None]]]:
    """TTFT p50 (ms) per backend against the stages' input lengths: prefill cost as a curve."""
    lengths = sorted({s.input_tokens for s in summaries if s.input_tokens is not None and s.stage != "latency"})
    table: dict[str, dict[int, float | None]] = {}
    for s in summaries:
        if s.input_tokens in lengths:
            table.setdefault(s.backend, {})[s.input_tokens] = s.ttft_ms["p50"]
    return lengths, table


def _errors(lv: Any) -> str:
    text = "0" if not lv.errors else (
        f"{lv.errors} (" + ", ".join(f"{k} {v}" for k, v in sorted(lv.errors_by_kind.items())) + ")")
    if getattr(lv, "warmup_errors", 0):
        text += f" + {lv.warmup_errors} in warm-up"
    if getattr(lv, "failed", None):
        text += " · level failed"
    return text


def _level_bad(lv: Any) -> bool:
    return bool(lv.errors or getattr(lv, "warmup_errors", 0) or getattr(lv, "failed", None))


def _money(x: float | None) -> str:
    return "–" if x is None else f"${x:,.2f}"


LEVEL_COLUMNS = [
    Column("backend", "backend", lambda lv: lv.backend, str, numeric=False),
    Column("level", "level", lambda lv: lv.stage.removeprefix("load:"), str, numeric=False),
    Column("requests", "requests", lambda lv: lv.requests, str),
    Column("errors", "errors", _errors, str, bad=_level_bad),
    Column("output_tok_s", "output tok/s", lambda lv: lv.output_tok_s),
    Column("req_s", "req/s", lambda lv: lv.req_s, lambda x: fmt(x, 2)),
    Column("achieved", "achieved rate · conc.", lambda lv: (lv.achieved_rate, lv.achieved_concurrency),
           lambda v: f"{fmt(v[0], 2)} · {fmt(v[1], 1)}", bad=lambda lv: lv.fell_behind),
    Column("ttft_p50_ms", "TTFT p50 ms", lambda lv: lv.ttft_ms.get("p50")),
    Column("ttft_p99_ms", "TTFT p99 ms", lambda lv: lv.ttft_ms.get("p99")),
    Column("tpot_p50_ms", "TPOT p50 ms", lambda lv: lv.tpot_ms.get("p50"), lambda x: fmt(x, 2)),
    Column("tpot_p90_ms", "TPOT p90 ms", lambda lv: lv.tpot_ms.get("p90"), lambda x: fmt(x, 2)),
    Column("e2e_p50_ms", "e2e p50 ms", lambda lv: lv.e2e_ms.get("p50")),
    Column("e2e_p99_ms", "e2e p99 ms", lambda lv: lv.e2e_ms.get("p99")),
    Column("queue_p99_ms", "queue p99 ms", lambda lv: lv.queue_ms.get("p99")),
    Column("goodput_req_s", "goodput req/s", lambda lv: lv.goodput_req_s, lambda x: fmt(x, 2)),
    Column("cost_per_1m_tokens", "$ / 1M tokens", lambda lv: lv.cost_per_1m_tokens, _money),
    Column("steady", "steady", lambda lv: getattr(lv, "steady", None), lambda v: _steady(v), numeric=False,
           bad=lambda lv: getattr(lv, "steady", None) is False),
]
"""One row per backend × load level (latencies from the scheduled send; queue = client lateness)."""


def _steady(v: bool | None) -> str:
    return "–" if v is None else "yes" if v else "NOT STEADY"


def _mean_max(d: dict[str, Any] | None, digits: int = 1, scale: float = 1.0) -> str:
    if not d:
        return "–"
    return f"{d['mean'] * scale:,.{digits}f} · {d['max'] * scale:,.{digits}f}"


def _server(lv: Any) -> dict[str, Any]:
    return getattr(lv, "server", None) or {}


def _energy(lv: Any) -> dict[str, Any]:
    return getattr(lv, "energy", None) or {}


def _tokens(lv: Any) -> str:
    check = _server(lv).get("token_check")
    if not check:
        return "–"
    server = "–" if check.get("server_tokens") is None else f"{check['server_tokens']:,.0f}"
    return f"{server} / {check['client_tokens']:,} {'ok' if check['verdict'] == 'agree' else check['verdict'].upper()}"


def _hit_rate(lv: Any) -> str:
    srv = _server(lv)
    check = srv.get("hit_rate_check")
    rate = srv.get("prefix_cache_hit_rate")
    if check:
        observed = "–" if check.get("observed") is None else f"{check['observed']:.1%}"
        return f"{observed} (plan {check['planned']:.1%})"
    return pct(rate) if rate is None else f"{rate:.1%}"


def _joules(x: float | None) -> str:
    return "–" if x is None else f"{x:,.3g}"


SERVER_COLUMNS = [
    Column("server_running", "server running mean · max", lambda lv: _server(lv).get("running"), _mean_max),
    Column("server_waiting", "waiting mean · max", lambda lv: _server(lv).get("waiting"), _mean_max),
    Column("kv_cache_usage", "KV cache % mean · max", lambda lv: _server(lv).get("kv_cache_usage"),
           lambda d: _mean_max(d, 1, 100.0)),
    Column("preemptions", "preemptions", lambda lv: _server(lv).get("preemptions"), lambda x: fmt(x, 0)),
    Column("prefix_cache_hit_rate", "prefix-cache hit rate", lambda lv: lv, _hit_rate,
           bad=lambda lv: (_server(lv).get("hit_rate_check") or {}).get("agree") is False),
    Column("generation_tokens", "generated tokens server / llmcompare", lambda lv: lv, _tokens,
           bad=lambda lv: (_server(lv).get("token_check") or {}).get("verdict") == "mismatch"),
]
"""The server's own figures per level, where its /metrics was scraped (docs/telemetry.md)."""

ENERGY_COLUMNS = [
    Column("steady_output_tok_s", "steady output tok/s", lambda lv: getattr(lv, "steady_output_tok_s", None)),
    Column("gpu_power_w", "GPU W (steady)", lambda lv: _energy(lv).get("mean_power_w")),
    Column("gpu_sm_util", "GPU SM util %", lambda lv: _energy(lv).get("sm_util_mean_pct"), lambda x: fmt(x, 0)),
    Column("joules_per_token", "J / output token", lambda lv: _energy(lv).get("joules_per_token"), _joules),
    Column("tokens_per_joule", "output tokens / J", lambda lv: _energy(lv).get("tokens_per_joule"), _joules),
    Column("cost_per_1m_tokens", "$ / 1M tokens", lambda lv: lv.cost_per_1m_tokens, _money),
]
"""GPU power and energy per level over its steady window, beside cost (docs/metrics.md, "Energy")."""


def telemetry_columns(levels: list[Any]) -> list[Column]:
    """The columns of the per-level telemetry table: the server's figures where any level has them, the
    energy figures where any level has them (the backend and level first); empty when neither."""
    cols: list[Column] = []
    if any(getattr(lv, "server", None) for lv in levels):
        cols += SERVER_COLUMNS
    if any(getattr(lv, "energy", None) for lv in levels):
        cols += ENERGY_COLUMNS
    return LEVEL_COLUMNS[:2] + cols if cols else []


def _tp_share(roof: dict) -> str:
    """`` N GPUs /`` in the floor note of a tensor-parallel run: each GPU reads 1/N of the bytes."""
    n = roof.get("n_gpus") or 1
    return f" {n} GPUs /" if n > 1 else ""


COUNT_DISAGREEMENT = ("the sources of the output count disagree (token ids, usage, text events: count_check in"
                      " requests.csv); each is credited only the tokens every source vouches for")


def summary_notes(summaries: list[Summary], max_new_tokens: int | None,
                  count_checks: bool = True) -> list[tuple[str, str]]:
    """The flags every report prints under its table, as ``("warning" | "note", text)``
    (``max_new_tokens`` None: lengths forced per request). With ``count_checks`` False the count
    disagreements are left to :func:`level_notes` (load runs: per level)."""
    out: list[tuple[str, str]] = []
    forced = f"{max_new_tokens} tokens" if max_new_tokens is not None else "their forced length"
    for s in summaries:
        who = f"{s.backend} ({s.stage})"
        if count_checks and getattr(s, "n_count_disagreements", 0):
            out.append(("warning", f"{who}: {s.n_count_disagreements} request(s) where {COUNT_DISAGREEMENT}"))
        if s.n_length_mismatch or s.n_prompt_mismatch:
            out.append(("warning", f"{who}: {s.n_length_mismatch} request(s) did not produce exactly {forced},"
                                   f" {s.n_prompt_mismatch} prompt count mismatch(es) (flagged in the results,"
                                   " not averaged away)"))
        if s.n_duplicates:
            out.append(("warning", f"{who}: {s.n_duplicates} request(s) recorded twice (two processes wrote this run);"
                                   " the second copies are left out of the statistics"))
        if s.n_approximate:
            out.append(("note", f"{who}: {s.n_approximate} request(s) counted by re-tokenizing the server's text"
                                " (approximate: it sent neither ids nor a count)"))
        roof = s.info.get("roofline") or {}
        if roof.get("ms_per_token"):
            out.append(("note", f"{who}: % of floor = floor / TPOT p50; floor {roof['ms_per_token']:.3f} ms/token ="
                                f" ({roof['weight_bytes'] / 1e9:.2f} GB of {roof['weight_dtype']} weights +"
                                f" {roof['kv_bytes'] / 1e9:.3f} GB of KV at {roof['context_tokens']} tokens) /"
                                f"{_tp_share(roof)} {roof['bandwidth_bytes_per_s'] / 1e9:,.1f} GB/s copy bandwidth"
                                f" ({roof.get('bandwidth_source') or 'recorded'})"))
        elif roof.get("error"):
            out.append(("note", f"{who}: no % of floor: {roof['error']}"))
        if s.n_without_ids:
            out.append(("note", f"{who}: {s.n_without_ids} request(s) counted by the server itself (its usage, its"
                                " log-probabilities, or a 'length' finish at max_tokens), without token ids: no"
                                " agreement check"))
    return out


def level_notes(levels: list[Any]) -> list[tuple[str, str]]:
    """The flags of a load run's levels, for every report: failed levels and why, warm-up failures,
    and count disagreements, as ``("warning" | "note", text)``."""
    out: list[tuple[str, str]] = []
    for lv in levels:
        who = f"{lv.backend} {lv.stage}"
        if getattr(lv, "failed", None):
            out.append(("warning", f"{who} failed: {lv.failed}; its figures are not a result (left out of the knee,"
                                   " the SLO and the recommendations)"))
        elif getattr(lv, "warmup_errors", 0):
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(lv.warmup_errors_by_kind.items()))
            out.append(("warning", f"{who}: {lv.warmup_errors} of its {lv.warmup_requests} warm-up requests failed"
                                   f" ({kinds})"))
        if getattr(lv, "count_disagreements", 0):
            out.append(("warning", f"{who}: {lv.count_disagreements} request(s) where {COUNT_DISAGREEMENT}"))
    return out


#: How each backend keeps prefix caching out of the numbers (``Capabilities.prefix_cache``), in words.
PREFIX_CACHE = {
    "none": "none across requests",
    "reset": "reset before every request",
    "disabled": "disabled at load",
    "distinct": "every request made distinct",
    "server": "the server's own setting (see its recipe); every load request made distinct",
    "on": "on in the server and it cannot be turned off: repeated latency prompts may hit it; every load request made distinct",
}
