"""``report.html``: a run as one self-contained page (a load run's levels and plots; a batch-1 run's
summary table, comparisons and fidelity).

The page needs nothing but its own file: CSS inline, no script, no web font, every plot a PNG embedded
as a ``data:`` URI (and also written under ``plots/`` beside it, for slides and issues). Opened
offline, it shows everything.

Every figure comes from the :class:`~llmcompare.analysis.result.RunResult`: the per-level table from
:data:`~llmcompare.report.columns.LEVEL_COLUMNS` (cells a column flags as bad are shaded), the three
answers from :func:`~llmcompare.report.levels_files.recommendation_lines`, the knees and rules from
``result.analysis``. So the page, the console, ``levels.csv`` and ``summary.md`` never disagree. Every
string taken from the run is escaped with :func:`html.escape`.

The plots (matplotlib on its Agg canvas; pyplot's global state is never touched):

- ``latency_throughput``: per backend, TPOT p50 and p90 against output tok/s, one point per level,
  each labelled with its level; the knee circled.
- ``ttft_by_load``: TTFT p50 and p99 (from the scheduled send) against the asked concurrency, or rate.
- ``ttft_by_input``: per request, TTFT against input length, when the requests had several input
  lengths; only each backend's first level (lowest concurrency, else lowest rate), where requests
  disturb each other least, so the curve shows prefill cost rather than queueing.
- ``errors``: failed requests per level as a share of the level's measured requests, stacked by kind;
  drawn only when a request failed.

Without matplotlib the page is still written, with every table, and says that the plots were left out.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcompare.report.columns import (
    BACKEND,
    GPU_PEAK,
    LEVEL_COLUMNS,
    LOAD_S,
    PEAK_RSS,
    STATUS,
    Column,
    fmt,
)
from llmcompare.report.levels_files import recommendation_lines

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from llmcompare.analysis.result import RunResult

LEVEL = next(c for c in LEVEL_COLUMNS if c.key == "level")
"""How a level is named everywhere (``c=4``, ``rate=2``): the table's own column."""

FIGSIZE = (7.2, 4.4)
"""Inches at 100 dpi; one size, so that every plot's text comes out at one scale on the page."""

ERROR_COLORS = ("#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#9467bd", "#17becf")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1b1b1b;
 margin:0 auto;padding:1.5rem 2rem 3rem;max-width:1500px;background:#fff}
h1{font-size:1.6rem;margin:0 0 .3rem}h2{font-size:1.25rem;margin:2rem 0 .6rem;border-bottom:1px solid #ddd;
 padding-bottom:.2rem}
.headline{color:#444;margin:0 0 1rem}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d4d4d4;padding:.25rem .55rem;vertical-align:top;text-align:left}
th{background:#f3f4f6;font-weight:600}
td.num,th.num{text-align:right}td.num{white-space:nowrap}
td.bad{background:#fde2e1;color:#9b1111;font-weight:600}
tbody tr:nth-child(even) td:not(.bad){background:#fafafa}
.wide{overflow-x:auto}
#levels{font-size:13px}#levels th{vertical-align:bottom}#levels th,#levels td{padding:.2rem .4rem}
.plots{display:flex;flex-wrap:wrap;gap:1.2rem}
figure{margin:0;border:1px solid #e3e3e3;padding:.5rem;background:#fff;flex:0 1 620px;box-sizing:border-box}
figure img{display:block;width:100%;height:auto}
figcaption{color:#444;font-size:.9rem;max-width:800px;margin-top:.3rem}
.recs li{margin:.2rem 0}.note{color:#555}.warn{color:#8a4b00}
details pre{background:#f6f8fa;padding:.8rem;overflow:auto;max-height:40rem;font-size:12px}
code{font-size:.95em}
"""


@dataclass(frozen=True)
class Plot:
    name: str
    """File stem under ``plots/``."""
    title: str
    caption: str
    png: bytes

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def write_html(result: RunResult) -> Path:
    """Write ``report.html`` (and, for a load run, ``plots/*.png``); return the page's path."""
    d = result.run_dir
    if not result.levels:
        d.html.write_text(latency_page(result), encoding="utf-8")
        return d.html
    try:
        plots = make_plots(result)
        missing = None
    except ImportError as exc:
        plots, missing = [], str(exc)
    if plots:
        d.plots.mkdir(parents=True, exist_ok=True)
    for p in plots:
        (d.plots / f"{p.name}.png").write_bytes(p.png)
    d.html.write_text(page(result, plots, missing), encoding="utf-8")
    return d.html


# ---- plots ----------------------------------------------------------------------------------------

def make_plots(result: RunResult) -> list[Plot]:
    """Every plot that applies to this run, in page order. Raises ImportError without matplotlib."""
    import matplotlib  # noqa: F401  (raises ImportError here, before anything is drawn, when it is missing)

    colors = {label: f"C{i % 10}" for i, label in enumerate(_labels(result))}
    makers = (
        ("latency_throughput", "Latency against throughput", _latency_throughput,
         ("TPOT p50 (solid) and p90 (dashed) against output tok/s of the whole level; each point is one level,"
          " the circled point is the knee (rule below).")),
        ("ttft_by_load", "TTFT against load", _ttft_by_load,
         "TTFT p50 (solid) and p99 (dashed), counted from each request's scheduled send."),
        ("ttft_by_input", "TTFT against input length", _ttft_by_input,
         ("One point per measured request of each backend's first level (lowest concurrency, else lowest"
          " rate), TTFT from the scheduled send.")),
        ("errors", "Failed requests per level", _error_rates,
         "Failed requests as a share of the level's measured requests, stacked by kind."),
    )
    out = []
    for name, title, draw, caption in makers:
        fig = draw(result, colors, title)
        if fig is not None:
            out.append(Plot(name, title, caption, _png(fig)))
    return out


def _labels(result: RunResult) -> list[str]:
    labels = list(result.spec.labels)
    return labels + [lv.backend for lv in result.levels if lv.backend not in labels]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _latency_throughput(result: RunResult, colors: dict[str, str], title: str) -> Figure | None:
    knees = {label: a.get("knee") for label, a in (result.analysis.get("backends") or {}).items()}
    points = {label: [lv for lv in result.levels if lv.backend == label and lv.output_tok_s
                      and lv.tpot_ms.get("p50") is not None] for label in _labels(result)}
    if not any(points.values()):
        return None
    fig = _figure(*FIGSIZE)
    ax = fig.add_subplot()
    top = 0.0
    for label, mine in points.items():
        c = colors[label]
        # A curve joins levels of one kind in order of load; a sweep's concurrency and rate levels are two.
        curves = [sorted(g, key=lambda lv: lv.load) for g in ([lv for lv in mine if lv.concurrency is not None],
                                                              [lv for lv in mine if lv.concurrency is None]) if g]
        for i, curve in enumerate(curves):
            marker = "o" if curve[0].concurrency is not None else "s"
            p50 = [lv.tpot_ms["p50"] for lv in curve]
            ax.plot([lv.output_tok_s for lv in curve], p50, f"{marker}-", color=c,
                    label=f"{label} TPOT p50" if i == 0 else "_nolegend_")
            p90 = [(lv.output_tok_s, lv.tpot_ms["p90"]) for lv in curve if lv.tpot_ms.get("p90") is not None]
            if p90:
                ax.plot(*zip(*p90), "^--", color=c, alpha=0.55, label=f"{label} TPOT p90" if i == 0 else "_nolegend_")
            top = max([top, *p50, *(y for _, y in p90)])
            for lv in curve:
                ax.annotate(LEVEL.cell(lv), (lv.output_tok_s, lv.tpot_ms["p50"]), textcoords="offset points",
                            xytext=(6, 6), fontsize=8, color=c)
        k = next((lv for lv in mine if lv.stage == knees.get(label)), None)
        if k is not None:
            ax.scatter([k.output_tok_s], [k.tpot_ms["p50"]], s=320, facecolors="none", edgecolors=c,
                       linewidths=2.2, zorder=3, label=f"{label} knee ({LEVEL.cell(k)})")
    ax.set_xlim(0, 1.1 * max(lv.output_tok_s for mine in points.values() for lv in mine))
    ax.set_ylim(0, 1.15 * top)
    ax.set_xlabel("output tok/s (whole level)")
    ax.set_ylabel("TPOT ms")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def _ttft_by_load(result: RunResult, colors: dict[str, str], title: str) -> Figure | None:
    axes_kinds = [(label, get) for label, get in (("concurrency", lambda lv: lv.concurrency),
                                                  ("asked rate (req/s)", lambda lv: lv.rate))
                  if any(get(lv) is not None and lv.ttft_ms.get("p50") is not None for lv in result.levels)]
    if not axes_kinds:
        return None
    fig = _figure(FIGSIZE[0] * len(axes_kinds), FIGSIZE[1])
    for ax, (xlabel, get) in zip(fig.subplots(1, len(axes_kinds), squeeze=False)[0], axes_kinds):
        xs_all: set[float] = set()
        for label in _labels(result):
            pts = sorted(((get(lv), lv) for lv in result.levels if lv.backend == label and get(lv) is not None
                          and lv.ttft_ms.get("p50") is not None), key=lambda p: p[0])
            if not pts:
                continue
            xs = [x for x, _ in pts]
            xs_all.update(xs)
            ax.plot(xs, [lv.ttft_ms["p50"] for _, lv in pts], "o-", color=colors[label], label=f"{label} p50")
            ax.plot(xs, [lv.ttft_ms.get("p99") for _, lv in pts], "v--", color=colors[label], alpha=0.55,
                    label=f"{label} p99")
        ticks = sorted(xs_all)
        if ticks[0] > 0 and ticks[-1] / ticks[0] >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("TTFT ms (from the scheduled send)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def _ttft_by_input(result: RunResult, colors: dict[str, str], title: str) -> Figure | None:
    # A level redone on resume counts its last run (as in levels.build_levels): keep that session only.
    sessions = {(s.backend, s.stage): s.session for s in (result.records.stages if result.records else [])}
    points: dict[str, list[tuple[int, float]]] = {}
    for label in _labels(result):
        mine = [lv for lv in result.levels if lv.backend == label]
        if not mine:
            continue
        first = mine[0]  # levels come ordered: concurrency levels first, then by load
        session = sessions.get((label, first.stage))
        points[label] = [(r.input_tokens, (r.queue_s + r.ttft_s) * 1000.0) for r in result.requests
                         if r.backend == label and r.stage == first.stage and not r.warmup and r.error is None
                         and r.ttft_s is not None and r.input_tokens is not None
                         and (session is None or r.session == session)]
    if len({n for pts in points.values() for n, _ in pts}) < 2:
        return None
    fig = _figure(*FIGSIZE)
    ax = fig.add_subplot()
    for label, pts in points.items():
        if pts:
            first = next(lv for lv in result.levels if lv.backend == label)
            ax.scatter(*zip(*pts), s=18, alpha=0.75, color=colors[label], label=f"{label} ({LEVEL.cell(first)})")
    ax.set_xlabel("input tokens")
    ax.set_ylabel("TTFT ms (from the scheduled send)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def _error_rates(result: RunResult, colors: dict[str, str], title: str) -> Figure | None:
    levels = result.levels
    if not any(lv.errors for lv in levels):
        return None
    kinds = sorted({k for lv in levels for k in lv.errors_by_kind})
    fig = _figure(min(16.0, max(FIGSIZE[0], 1.0 + 0.75 * len(levels))), FIGSIZE[1])
    ax = fig.add_subplot()
    xs = list(range(len(levels)))
    bottom = [0.0] * len(levels)
    for i, kind in enumerate(kinds):
        share = [100.0 * lv.errors_by_kind.get(kind, 0) / lv.requests if lv.requests else 0.0 for lv in levels]
        ax.bar(xs, share, bottom=bottom, color=ERROR_COLORS[i % len(ERROR_COLORS)], label=kind)
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set_xticks(xs, [f"{lv.backend}\n{LEVEL.cell(lv)}" for lv in levels], fontsize=8)
    for tick, lv in zip(ax.get_xticklabels(), levels):
        tick.set_color(colors.get(lv.backend, "black"))
    ax.set_ylim(0, 100)
    ax.set_ylabel("failed requests, % of the level")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    ax.legend(title="kind", fontsize=8)
    return fig


# ---- the page -------------------------------------------------------------------------------------

def page(result: RunResult, plots: list[Plot], plots_missing: str | None = None) -> str:
    """The whole HTML5 document."""
    from llmcompare.report.files import headline

    parts = _opening(result, "llmcompare load report", headline(result))
    parts += _recommendations(result)
    parts += _plots_section(result, plots, plots_missing)
    parts += _knees(result)
    parts += _levels(result)
    parts += _backends(result)
    parts += _environment(result)
    parts += [('<p class="note">Definitions: TTFT = first token time; TPOT = (e2e − TTFT)/(n − 1); output tok/s ='
               " output tokens / wall time of the level; under load TTFT, e2e and queue are counted from each"
               " request's scheduled send. See docs/load.md and docs/metrics.md.</p>"), "</body>", "</html>", ""]
    return "\n".join(parts)


def _opening(result: RunResult, name: str, line: str) -> list[str]:
    """The document's head and the page's title block."""
    return ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(f'{name} · {line}')}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
            f"<h1>{escape(name)}</h1>", f'<p class="headline">{escape(line)}</p>',
            f'<p class="note">Run directory: <code>{escape(str(result.run_dir))}</code>.</p>']


def latency_page(result: RunResult) -> str:
    """A batch-1 run: every backend's figures, the speed against the baseline, and fidelity beside it."""
    from llmcompare.report.columns import latency_columns, ratio, speedup
    from llmcompare.report.fidelity import FIDELITY_COLUMNS, examples, reference_line, verdict_lines
    from llmcompare.report.files import headline

    parts = _opening(result, "llmcompare report", headline(result))
    lines = verdict_lines(result)
    if lines:
        parts += ["<h2>At a glance</h2>", '<ul class="recs">'] + [f"<li>{escape(x)}</li>" for x in lines] + ["</ul>"]
    cols = latency_columns(result.summaries, where="html")
    parts += ["<h2>Batch 1</h2>",
              '<p class="note">Greedy, output length forced; warm-up excluded; brackets are 95% bootstrap intervals'
              " over prompts.</p>",
              f'<div class="wide">{_table("summary", [(c.header, "num" if c.numeric else "") for c in cols], [_cells(cols, s, "brackets") for s in result.summaries])}</div>']
    if result.comparisons:
        rows = []
        for c in result.comparisons:
            rows.append([(c["backend"], ""), (c["stage"], ""), (speedup(c.get("speedup_tpot")), "num"),
                         (ratio(c["tpot_ratio"]), "num"), (ratio(c["ttft_ratio"]), "num"), (ratio(c["e2e_ratio"]), "num")])
        base = result.comparisons[0]["baseline"]
        parts += [f"<h2>Against {escape(base)}</h2>",
                  _table("comparisons", [("backend", ""), ("stage", ""), ("speed-up, TPOT, paired by prompt", "num"),
                                         ("TPOT ratio of medians", "num"), ("TTFT ratio", "num"), ("e2e ratio", "num")],
                         rows)]
    if result.spec.fidelity is not None:
        parts += ["<h2>Fidelity: does each backend still say the same thing?</h2>",
                  f'<p class="note">{escape(reference_line(result))}</p>']
        if any(f.prompts for f in result.fidelity):
            parts.append(f'<div class="wide">{_table("fidelity", [(c.header, "num" if c.numeric else "") for c in FIDELITY_COLUMNS], [_cells(FIDELITY_COLUMNS, f) for f in result.fidelity])}</div>')
        shown = examples(result)
        if shown:
            keys = ("backend", "prompt_id", "position", "gap", "shared", "reference", "backend_text")
            parts.append(_table("divergences", [("backend", ""), ("prompt", ""), ("token", "num"), ("gap nats", "num"),
                                                ("… shared text", ""), ("reference goes on", ""), ("backend goes on", "")],
                                [[(e[k], "num" if k in ("position", "gap") else "") for k in keys] for e in shown]))
        parts.append('<p class="note">Near-tie: at the first divergence the reference scores the backend\'s token within'
                     " the margin of its own; real divergence: beyond it. See docs/fidelity.md.</p>")
    parts += _backends(result)
    parts += _environment(result)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _recommendations(result: RunResult) -> list[str]:
    rule = (result.analysis.get("recommendations") or {}).get("rule")
    out = ["<h2>Recommendations</h2>", '<ul class="recs">']
    out += [f"<li>{escape(line)}</li>" for line in recommendation_lines(result)]
    out.append("</ul>")
    if rule:
        out.append(f'<p class="note">Chosen among: {escape(rule)}.</p>')
    return out


def _plots_section(result: RunResult, plots: list[Plot], missing: str | None) -> list[str]:
    out = ["<h2>Plots</h2>"]
    if missing is not None:
        return [*out, (f'<p class="warn">Plots left out: matplotlib is not installed ({escape(missing)});'
                       " <code>pip install matplotlib</code> and run <code>llmcompare report"
                       f" {escape(str(result.run_dir))}</code>.</p>")]
    out.append('<div class="plots">')
    for p in plots:
        out.append(f'<figure id="plot-{escape(p.name)}"><img src="{p.data_uri()}" alt="{escape(p.title)}">'
                   f"<figcaption><strong>{escape(p.title)}.</strong> {escape(p.caption)}"
                   f" (<code>plots/{escape(p.name)}.png</code>)</figcaption></figure>")
    out.append("</div>")
    if not any(p.name == "errors" for p in plots):
        n = sum(lv.requests for lv in result.levels)
        out.append(f'<p class="note">No request failed at any level ({n} measured requests).</p>')
    return out


def _knees(result: RunResult) -> list[str]:
    slo = dict(result.spec.scenario.slo)
    rows = []
    for label, a in (result.analysis.get("backends") or {}).items():
        rows.append([(label, ""), (_level_name(a["knee"]), ""), (fmt(a["knee_output_tok_s"]), "num"),
                     (fmt(a["knee_tpot_p50_ms"], 2), "num"),
                     (_level_name(a["max_level_meeting_slo"]) if slo else "no SLO given", "")])
    out = ["<h2>Knee and SLO</h2>",
           _table("knees", [("backend", ""), ("knee", ""), ("output tok/s at the knee", "num"),
                            ("TPOT p50 ms at the knee", "num"), ("highest level meeting the SLO", "")], rows),
           "<ul>", f"<li>Knee rule: {escape(str(result.analysis.get('knee_rule')))}.</li>",
           f"<li>SLO rule: {escape(str(result.analysis.get('slo_rule')))}.</li>"]
    limits = ", ".join(f"{k} ≤ {v:g}" for k, v in slo.items()) or "none given (--slo)"
    out += [f"<li>SLO limits per request: {escape(limits)}.</li>", "</ul>"]
    return out


def _level_name(stage: str | None) -> str:
    return stage.removeprefix("load:") if stage else "–"


def _levels(result: RunResult) -> list[str]:
    head = [(c.header, "num" if c.numeric else "") for c in LEVEL_COLUMNS]
    rows = [_cells(LEVEL_COLUMNS, lv, "brackets") for lv in result.levels]
    sc = result.spec.scenario
    length = (f"{sc.duration_s:g} s" if sc.duration_s is not None
              else f"{sc.requests} requests" if sc.requests is not None else "measured")
    out = ["<h2>Levels</h2>",
           (f'<p class="note">One row per backend and level; each level {escape(length)} after its warm-up;'
            " greedy, output length forced; every request distinct. Shaded cells flag a problem: failed requests,"
            " or a client that fell behind its schedule.</p>"),
           f'<div class="wide">{_table("levels", head, rows)}</div>']
    for lv in result.levels:
        if lv.fell_behind:
            out.append(f'<p class="warn"><strong>Warning:</strong> {escape(lv.backend)} {escape(lv.stage)}: the client'
                       f" fell behind the schedule (queue p99 {escape(fmt(lv.queue_ms.get('p99')))} ms); the level was"
                       " not driven at the asked rate.</p>")
    return out


def _backends(result: RunResult) -> list[str]:
    from llmcompare.report.files import PREFIX_CACHE

    summaries, seen = [], set()
    for s in result.summaries:
        if s.backend not in seen:
            seen.add(s.backend)
            summaries.append(s)
    cols = [BACKEND, STATUS, LOAD_S, PEAK_RSS] + ([GPU_PEAK] if any(s.gpu_peak_bytes for s in summaries) else [])
    head = [(c.header, "num" if c.numeric else "") for c in cols] + [
        ("engine versions", ""), ("device", ""), ("runs", ""), ("prefix cache", ""), ("options", ""),
        ("$ / hour", "num"), ("worker Python", "")]
    rows = []
    for s in summaries:
        info, caps = s.info, s.info.get("capabilities") or {}
        price = result.spec.price(s.backend) if s.backend in result.spec.labels else None
        rows.append(_cells(cols, s) + [
            (", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items()) or "–", ""),
            (str(info.get("device") or "–"), ""),
            ("in-process" if caps.get("in_process", True) else "over HTTP", ""),
            (PREFIX_CACHE.get(caps.get("prefix_cache"), "unknown"), ""),
            (", ".join(f"{k}={v}" for k, v in (info.get("options") or {}).items()) or "defaults", ""),
            ("–" if price is None else f"${price:,.2f}", "num"),
            (str(info.get("python") or "–"), ""),
        ])
    return ["<h2>Backends</h2>", _table("backends", head, rows)]


def _environment(result: RunResult) -> list[str]:
    env = result.environment or {}
    rows = [[(key, ""), (value, "")] for key, value in _flatten(env)]
    raw = json.dumps(env, indent=2, default=str, ensure_ascii=False)
    return ["<h2>Environment</h2>", _table("environment", [("key", ""), ("value", "")], rows),
            f"<details><summary>Raw environment JSON</summary><pre>{escape(raw)}</pre></details>"]


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings and lists as ``a.b[0].c`` keys with scalar values, in the record's order."""
    if isinstance(value, dict):
        if not value:
            return [(prefix, "{}")] if prefix else []
        return [row for k, v in value.items() for row in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, (list, tuple)):
        if not value:
            return [(prefix, "[]")]
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return [(prefix, ", ".join(map(str, value)))]
        return [row for i, v in enumerate(value) for row in _flatten(v, f"{prefix}[{i}]")]
    return [(prefix, "–" if value is None else str(value))]


def _cells(columns: list[Column], row: Any, intervals: str | None = None) -> list[tuple[str, str]]:
    """One table row from shared columns: each cell's text (with its interval where asked and known),
    right-aligned when numeric, "bad" when the column flags it."""
    return [(c.cell(row, intervals), " ".join(filter(None, ("num" if c.numeric else "",
                                                 "bad" if c.bad is not None and c.bad(row) else ""))))
            for c in columns]


def _table(table_id: str, head: list[tuple[str, str]], rows: list[list[tuple[str, str]]]) -> str:
    """A table; ``head`` and every row are ``(text, css classes)`` pairs, every text escaped here."""

    def cls(c: str) -> str:
        return f' class="{c}"' if c else ""

    out = [f'<table id="{escape(table_id)}">', "<thead><tr>"]
    out += [f"<th{cls(c)}>{escape(text)}</th>" for text, c in head]
    out.append("</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td{cls(c)}>{escape(text)}</td>" for text, c in row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)
