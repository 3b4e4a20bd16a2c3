"""A load run in HTML: the plots, the recommendations, knees and the per-level table.

The plots (matplotlib on its Agg canvas; pyplot's global state is never touched):

- ``latency_throughput``: per backend, TPOT p50 and p90 against output tok/s, one point per level,
  each labelled with its level; the knee circled.
- ``ttft_by_load``: TTFT p50 and p99 (from the scheduled send) against the asked concurrency, or rate.
- ``ttft_by_input``: per request, TTFT against input length, when the requests had several input
  lengths; only each backend's first level (lowest concurrency, else lowest rate), where requests
  disturb each other least, so the curve shows prefill cost rather than queueing.
- ``errors``: failed requests per level as a share of the level's measured requests, stacked by kind;
  drawn only when a request failed.
- ``server_metrics``: the server's own gauges over time, from its scrapes (requests running and
  waiting, KV-cache usage) and its generated tokens per second (the counter's increase between
  scrapes); each level's span shaded. Drawn when a server's /metrics was scraped.
- ``gpu_power``: each GPU's power and SM utilisation over time from the NVML readings, each level's
  steady window shaded (the window energy is counted over). Drawn when GPUs were sampled.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from llmcompare.report.columns import LEVEL_COLUMNS, fmt, telemetry_columns
from llmcompare.report.html import FIGSIZE, Plot, cells, table_html
from llmcompare.report.html import figure as _figure
from llmcompare.report.html import png as _png
from llmcompare.report.levels_files import level_warnings, recommendation_lines
from llmcompare.telemetry.nvml import samples_from_records
from llmcompare.telemetry.prometheus import points_from_records

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from llmcompare.analysis.result import RunResult

LEVEL = next(c for c in LEVEL_COLUMNS if c.key == "level")
"""How a level is named everywhere (``c=4``, ``rate=2``): the table's own column."""

ERROR_COLORS = ("#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#9467bd", "#17becf")


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
        ("server_metrics", "The server's own metrics over the run", _server_metrics,
         ("From the server's /metrics, scraped during each level: requests running (solid) and waiting (dashed),"
          " KV-cache usage, and generated tokens per second (its counter's increase between scrapes). Shaded: each"
          " level's span, labelled.")),
        ("gpu_power", "GPU power and utilisation over the run", _gpu_power,
         ("NVML readings of each GPU: power (W) and SM utilisation (%). Shaded: each level's steady window, the"
          " window its energy and joules per token are counted over.")),
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



def _sessions(result: RunResult, label: str) -> set[str]:
    """The worker sessions whose levels the result shows for ``label`` (a level redone on resume: its last)."""
    last = {}
    for s in (result.records.stages if result.records else []):
        if s.backend == label:
            last[s.stage] = s.session
    return set(last.values())


def _spans(result: RunResult, label: str) -> list[tuple[str, float, float, list[float] | None]]:
    """(level name, start, end, steady window) of each of ``label``'s levels, Unix seconds."""
    out = []
    stages = {s.stage: s for s in (result.records.stages if result.records else []) if s.backend == label}
    for lv in result.levels:
        s = stages.get(lv.stage)
        if lv.backend == label and s is not None:
            out.append((LEVEL.cell(lv), s.started_at, s.started_at + s.wall_s, getattr(lv, "steady_window", None)))
    return out


def _shade(ax, spans, t0: float, steady: bool, labels: bool = True) -> None:
    """Shade each level's span (or, ``steady``, its steady window) from ``t0``; label them when asked."""
    for i, (name, start, end, window) in enumerate(spans):
        a, b = (window if steady and window else (start, end))
        ax.axvspan(a - t0, b - t0, color="0.85" if i % 2 == 0 else "0.92", zorder=0)
        if labels:
            ax.annotate(name, (a - t0, 1.0), xycoords=("data", "axes fraction"), fontsize=7, color="0.35",
                        xytext=(2, -10), textcoords="offset points")


def _server_metrics(result: RunResult, colors: dict[str, str], title: str) -> Figure | None:
    if not result.records or not result.records.metrics:
        return None
    series = {}
    for label in _labels(result):
        sessions = _sessions(result, label)
        recs = [r for r in result.records.metrics if r.get("backend") == label and r.get("session") in sessions]
        by_replica: dict[int, list] = {}
        for r in recs:
            by_replica.setdefault(int(r.get("replica") or 0), []).append(r)
        for replica, rr in sorted(by_replica.items()):
            points = sorted((p for p in points_from_records(rr) if p.error is None), key=lambda p: p.t)
            if points:
                name = label if len(by_replica) == 1 else f"{label} server {replica}"
                series[name] = (label, points)
    if not series:
        return None
    fig = _figure(FIGSIZE[0] * 1.4, FIGSIZE[1] * 1.6)
    axes = fig.subplots(3, 1, sharex=True)
    for name, (label, points) in series.items():
        t0 = points[0].t
        c = colors.get(label, "C0")
        ts = [p.t - t0 for p in points]
        for key, style, ax in (("running", "-", axes[0]), ("waiting", "--", axes[0])):
            pts = [(t, p.figures[key]) for t, p in zip(ts, points) if key in p.figures]
            if pts:
                ax.plot(*zip(*pts), style, color=c, label=f"{name} {key}")
        kv = [(t, 100.0 * p.figures["kv_cache_usage"]) for t, p in zip(ts, points) if "kv_cache_usage" in p.figures]
        if kv:
            axes[1].plot(*zip(*kv), "-", color=c, label=name)
        gen = [(t, p.figures["generation_tokens"]) for t, p in zip(ts, points) if "generation_tokens" in p.figures]
        rate = [((a[0] + b[0]) / 2, max(0.0, b[1] - a[1]) / (b[0] - a[0])) for a, b in zip(gen, gen[1:]) if b[0] > a[0]]
        if rate:
            axes[2].plot(*zip(*rate), "-", color=c, label=name)
        for ax in axes:
            _shade(ax, _spans(result, label), t0, steady=False, labels=ax is axes[0])
    axes[0].set_ylabel("requests")
    axes[1].set_ylabel("KV cache used %")
    axes[2].set_ylabel("generated tok/s (server)")
    axes[2].set_xlabel("seconds since the first scrape")
    for ax in axes:
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def _gpu_power(result: RunResult, colors: dict[str, str], title: str) -> Figure | None:
    if not result.records or not result.records.gpu:
        return None
    per_backend = {}
    for label in _labels(result):
        sessions = _sessions(result, label)
        samples = samples_from_records(r for r in result.records.gpu
                                       if r.get("backend") == label and r.get("session") in sessions)
        if samples:
            per_backend[label] = sorted(samples, key=lambda s: (s.t, s.gpu))
    if not per_backend:
        return None
    fig = _figure(FIGSIZE[0] * 1.4, FIGSIZE[1] * 1.3)
    power_ax, util_ax = fig.subplots(2, 1, sharex=True)
    styles = ("-", "--", ":", "-.")
    for label, samples in per_backend.items():
        t0 = samples[0].t
        c = colors.get(label, "C0")
        for k, gpu in enumerate(sorted({s.gpu for s in samples})):
            mine = [s for s in samples if s.gpu == gpu]
            pw = [(s.t - t0, s.power_w) for s in mine if s.power_w is not None]
            ut = [(s.t - t0, s.sm_util_pct) for s in mine if s.sm_util_pct is not None]
            style = styles[k % len(styles)]
            if pw:
                power_ax.plot(*zip(*pw), style, color=c, label=f"{label} GPU {gpu}")
            if ut:
                util_ax.plot(*zip(*ut), style, color=c, label=f"{label} GPU {gpu}")
        for ax in (power_ax, util_ax):
            _shade(ax, _spans(result, label), t0, steady=True, labels=ax is power_ax)
    power_ax.set_ylabel("power W")
    util_ax.set_ylabel("SM utilisation %")
    util_ax.set_xlabel("seconds since the first reading")
    for ax in (power_ax, util_ax):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def recommendations_html(result: RunResult) -> list[str]:
    rule = (result.analysis.get("recommendations") or {}).get("rule")
    out = ["<h2>Recommendations</h2>", '<ul class="recs">']
    out += [f"<li>{escape(line)}</li>" for line in recommendation_lines(result)]
    out.append("</ul>")
    if rule:
        out.append(f'<p class="note">Chosen among: {escape(rule)}.</p>')
    return out


def plots_html(result: RunResult, plots: list[Plot], missing: str | None) -> list[str]:
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


def knees_html(result: RunResult) -> list[str]:
    slo = dict(result.spec.scenario.slo)
    rows = []
    for label, a in (result.analysis.get("backends") or {}).items():
        rows.append([(label, ""), (_level_name(a["knee"]), ""), (fmt(a["knee_output_tok_s"]), "num"),
                     (fmt(a["knee_tpot_p50_ms"], 2), "num"),
                     (_level_name(a["max_level_meeting_slo"]) if slo else "no SLO given", "")])
    out = ["<h2>Knee and SLO</h2>",
           table_html("knees", [("backend", ""), ("knee", ""), ("output tok/s at the knee", "num"),
                            ("TPOT p50 ms at the knee", "num"), ("highest level meeting the SLO", "")], rows),
           "<ul>", f"<li>Knee rule: {escape(str(result.analysis.get('knee_rule')))}.</li>",
           f"<li>SLO rule: {escape(str(result.analysis.get('slo_rule')))}.</li>"]
    limits = ", ".join(f"{k} ≤ {v:g}" for k, v in slo.items()) or "none given (--slo)"
    out += [f"<li>SLO limits per request: {escape(limits)}.</li>", "</ul>"]
    return out


def _level_name(stage: str | None) -> str:
    return stage.removeprefix("load:") if stage else "–"


def levels_html(result: RunResult) -> list[str]:
    head = [(c.header, "num" if c.numeric else "") for c in LEVEL_COLUMNS]
    rows = [cells(LEVEL_COLUMNS, lv, "brackets") for lv in result.levels]
    sc = result.spec.scenario
    length = (f"{sc.duration_s:g} s" if sc.duration_s is not None
              else f"{sc.requests} requests" if sc.requests is not None else "measured")
    out = ["<h2>Levels</h2>",
           (f'<p class="note">One row per backend and level; each level {escape(length)} after its warm-up;'
            " greedy, output length forced; every request distinct. Shaded cells flag a problem: failed requests,"
            " or a client that fell behind its schedule.</p>"),
           f'<div class="wide">{table_html("levels", head, rows)}</div>']
    for lv in result.levels:
        if lv.fell_behind:
            out.append(f'<p class="warn"><strong>Warning:</strong> {escape(lv.backend)} {escape(lv.stage)}: the client'
                       f" fell behind the schedule (queue p99 {escape(fmt(lv.queue_ms.get('p99')))} ms); the level was"
                       " not driven at the asked rate.</p>")
    cols = telemetry_columns(result.levels)
    if cols:
        head = [(c.header, "num" if c.numeric else "") for c in cols]
        out += ["<h2>Server metrics and energy per level</h2>",
                ('<p class="note">From the server\'s own /metrics (gauges: mean · max over the level\'s scrapes;'
                 " counters: their increase over the level) and the GPUs' NVML readings (energy over each level's"
                 " steady window). Generated tokens: the server's counter against every token llmcompare received in"
                 " the level; a shaded cell is a mismatch.</p>"),
                f'<div class="wide">{table_html("telemetry", head, [cells(cols, lv) for lv in result.levels])}</div>']
    for kind, text in level_warnings(result):
        out.append(f'<p class="{"warn" if kind == "warning" else "note"}"><strong>{escape(kind.capitalize())}:</strong>'
                   f" {escape(text)}</p>")
    return out


