"""``report.html``: a run as one self-contained page, and the HTML toolkit its sections use.

The page needs nothing but its own file: CSS inline, no script, no web font, every plot a PNG embedded
as a ``data:`` URI (and also written under ``plots/`` beside it, for slides and issues). Opened
offline, it shows everything.

The page is the run's title, then each scenario's sections (:mod:`llmcompare.report.sections`: a load
run's recommendations, plots, knees and levels; a batch-1 run's summary, speed-ups and fidelity), then
the backends and the environment. Every figure comes from the :class:`~llmcompare.analysis.result.RunResult`,
so the page, the console, the CSV files and ``summary.md`` never disagree. Every string taken from the
run is escaped with :func:`html.escape`, and control characters (a server's terminal escapes) are
shown as ``\\xNN``. Without matplotlib the page is still written, with every table,
and says that the plots were left out.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcompare.report.base import Output, headline, result_sections, title
from llmcompare.report.columns import BACKEND, GPU_PEAK, LOAD_S, PEAK_RSS, PREFIX_CACHE, STATUS, Column
from llmcompare.sanitize import REPLACE, escape_controls

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from llmcompare.analysis.result import RunResult
    from llmcompare.report.sections import Section

FIGSIZE = (7.2, 4.4)
"""Inches at 100 dpi; one size, so that every plot's text comes out at one scale on the page."""

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

def figure(width: float, height: float) -> Figure:
    """A matplotlib figure on its own Agg canvas (pyplot's global state is never touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


class HtmlReport:
    def write(self, result: RunResult, out: Output, sections: list[Section]) -> list[Path]:
        return [write_html(result, sections)]


def write_html(result: RunResult, sections: list[Section] | None = None) -> Path:
    """Write ``report.html`` (and ``plots/*.png``); return the page's path."""
    d = result.run_dir
    sections = result_sections(result) if sections is None else sections
    plots = []
    for s in sections:
        try:
            plots += s.plots()
        except ImportError:
            pass  # the section says so on the page
    if plots:
        d.plots.mkdir(parents=True, exist_ok=True)
    for p in plots:
        (d.plots / f"{p.name}.png").write_bytes(p.png)
    d.html.write_text(page(result, sections), encoding="utf-8", errors=REPLACE)
    return d.html


def page(result: RunResult, sections: list[Section]) -> str:
    """The whole HTML5 document."""
    parts = opening(result, title(result), headline(result))
    for s in sections:
        parts += s.html()
    parts += backends_html(result)
    parts += environment_html(result)
    parts += ["</body>", "</html>", ""]
    return escape_controls("\n".join(parts))  # control characters are not HTML: shown as \xNN


def opening(result: RunResult, name: str, line: str) -> list[str]:
    """The document's head and the page's title block."""
    return ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(f'{name} · {line}')}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
            f"<h1>{escape(name)}</h1>", f'<p class="headline">{escape(line)}</p>',
            f'<p class="note">Run directory: <code>{escape(str(result.run_dir))}</code>.</p>']


def backends_html(result: RunResult) -> list[str]:
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
        rows.append(cells(cols, s) + [
            (", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items()) or "–", ""),
            (str(info.get("device") or "–"), ""),
            ("in-process" if caps.get("in_process", True) else "over HTTP", ""),
            (PREFIX_CACHE.get(caps.get("prefix_cache"), "unknown"), ""),
            (", ".join(f"{k}={v}" for k, v in (info.get("options") or {}).items()) or "defaults", ""),
            ("–" if price is None else f"${price:,.2f}", "num"),
            (str(info.get("python") or "–"), ""),
        ])
    return ["<h2>Backends</h2>", table_html("backends", head, rows)]


def environment_html(result: RunResult) -> list[str]:
    env = result.environment or {}
    rows = [[(key, ""), (value, "")] for key, value in flatten(env)]
    raw = json.dumps(env, indent=2, default=str, ensure_ascii=False)
    return ["<h2>Environment</h2>", table_html("environment", [("key", ""), ("value", "")], rows),
            f"<details><summary>Raw environment JSON</summary><pre>{escape(raw)}</pre></details>"]


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings and lists as ``a.b[0].c`` keys with scalar values, in the record's order."""
    if isinstance(value, dict):
        if not value:
            return [(prefix, "{}")] if prefix else []
        return [row for k, v in value.items() for row in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, (list, tuple)):
        if not value:
            return [(prefix, "[]")]
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return [(prefix, ", ".join(map(str, value)))]
        return [row for i, v in enumerate(value) for row in flatten(v, f"{prefix}[{i}]")]
    return [(prefix, "–" if value is None else str(value))]

def cells(columns: list[Column], row: Any, intervals: str | None = None) -> list[tuple[str, str]]:
    """One table row from shared columns: each cell's text (with its interval where asked and known),
    right-aligned when numeric, "bad" when the column flags it."""
    return [(c.cell(row, intervals), " ".join(filter(None, ("num" if c.numeric else "",
                                                 "bad" if c.bad is not None and c.bad(row) else ""))))
            for c in columns]


def table_html(table_id: str, head: list[tuple[str, str]], rows: list[list[tuple[str, str]]]) -> str:
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

