"""The study report: console (rich), ``study.md``, ``study.html`` (self-contained, plots as data URIs),
``cells.csv``. Rebuilt from ``study.json`` and the cells' run directories alone (``llmcompare study
report DIR``). Every string that came from a run or the study file is escaped for the format it lands in.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmcompare.report.html import figure, png
from llmcompare.study import analysis
from llmcompare.study.manifest import Manifest


# ---------------------------------------------------------------------------------------------
# The model of the report
# ---------------------------------------------------------------------------------------------
def build(directory: Path) -> dict[str, Any]:
    m = Manifest.read(directory)
    study = m.data["study"]
    slo = study.get("slo") or {}
    points = analysis.collect_points(m.cells, directory, slo)
    groups = analysis.build_groups(points, slo)
    return {
        "manifest": m, "study": study, "slo": slo, "points": points, "groups": groups,
        "answers": analysis.answers(groups, slo),
        "max_load": analysis.deployment_max_load(groups) if slo else {},
        "pareto_gpu": analysis.pareto(groups, "gpu"), "pareto_dollar": analysis.pareto(groups, "dollar"),
    }


def write_all(directory: str | Path, console: bool = True) -> list[Path]:
    directory = Path(directory)
    r = build(directory)
    paths = [_write_csv(directory, r), _write_md(directory, r), _write_html(directory, r)]
    if console:
        print_console(r)
    return paths


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------
def fnum(v: float | None, digits: int = 1) -> str:
    if v == math.inf:
        return "∞"
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:,.{digits}f}"


def fest(e: dict[str, Any] | analysis.Estimate | None, digits: int = 1, money: bool = False) -> str:
    if e is None:
        return "–"
    if isinstance(e, analysis.Estimate):
        e = e.to_dict()
    v = e.get("value")
    if v is None:
        return "–"
    pre = "$" if money else ""
    s = f"{pre}{fnum(v, digits)}"
    lo, hi = e.get("lo"), e.get("hi")
    if lo is not None and hi is not None:
        s += f" [{pre}{fnum(lo, digits)}, {pre}{fnum(hi, digits)}]"
    return s


def md(text: Any) -> str:
    """Text from a run or the study file, safe in a Markdown table cell."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    s = s.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([|*_`\[\]#~$])", r"\\\1", s)


def h(text: Any) -> str:
    return html.escape(str(text), quote=True)


ANSWER_COLUMNS = ("deployment", "load", "ms/token (median)", "tok/s", "$/h", "minutes / 1M tokens", "$ / 1M tokens",
                  "SLO met")


def answer_rows(r: dict[str, Any]) -> list[tuple[str, str, list[list[str]], str]]:
    """(title, rule, rows, note) per answer; rows are the winner then its ties, each ANSWER_COLUMNS."""
    out = []
    for key, a in r["answers"].items():
        rows = []
        for i, f in enumerate([a["winner"], *a["ties"]] if a["winner"] else []):
            rows.append([("tie: " if i else "") + f["deployment"], f["level"], fest(f["ms_per_token"], 2),
                         fest(f["tok_s"], 1), ("$" + fnum(f["price_per_hour"], 3)) if f["price_per_hour"] else "–",
                         fnum(f["minutes_per_1m_tokens"], 1), fest(f["cost_per_1m_tokens"], 2, money=True),
                         "–" if f["slo_attainment"] is None else f"{f['slo_attainment'] * 100:.0f}%"])
        note = a["note"]
        if len(rows) > 1:
            note = (note + "; " if note else "") + "the intervals overlap: a tie, both are named"
        out.append((a["title"], a["rule"], rows, note))
    return out


def _level_str(levels: list[float] | None, kind: str | None) -> str:
    if not levels:
        return "batch 1"
    vals = ",".join(str(int(x)) if float(x).is_integer() else str(x) for x in levels)
    return ("c=" if kind != "rate" else "rate=") + vals


def cell_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per cell and level measured; one row per cell not measured (with why)."""
    by_cell: dict[str, list[analysis.Point]] = {}
    for p in r["points"]:
        by_cell.setdefault(p.cell_id, []).append(p)
    rows = []
    for c in r["manifest"].cells:
        base = {"id": c["id"], "kind": c.get("kind", "cell"), "name": c["name"], "deployment": c["deployment"],
                "hardware": c["hardware"], "repeat": c.get("repeat", 0), "status": c["status"],
                "price_per_hour": c.get("price_per_hour")}
        pts = by_cell.get(c["id"])
        if not pts:
            why = c.get("error") or " | ".join(c.get("reasons") or []) or c.get("not_run") or ""
            rows.append({**base, "level": _level_str(c.get("levels"), c.get("level_kind")), "why": why})
            continue
        for p in pts:
            g = next((g for g in r["groups"] if g.deployment_id == p.deployment_id and g.level == p.level
                      and g.level_kind == p.level_kind), None)
            cost = p.price / (p.tok_s * 3600) * 1e6 if p.price and p.tok_s else None
            rows.append({**base, "level": analysis.Group(p.deployment_id, "", "", p.level_kind, p.level, [], None, 1)
                        .level_label, "ms_per_token": p.tpot_p50, "ms_per_token_lo": p.tpot_lo,
                         "ms_per_token_hi": p.tpot_hi, "ttft_p50_ms": p.ttft_p50, "tok_s": p.tok_s,
                         "cost_per_1m_tokens": cost, "minutes_per_1m_tokens": 1e6 / p.tok_s / 60 if p.tok_s else None,
                         "requests": p.requests, "errors": p.errors, "slo_attainment": p.attainment,
                         "meets_slo": p.meets, "slo_margin": p.margin,
                         "fitted_margin": g.fitted_margin if g else None, "eligible": g.eligible if g else None,
                         "why": (g.why_not if g else "") or (c.get("error") or "")})
    return rows


CSV_FIELDS = ("id", "kind", "name", "deployment", "hardware", "repeat", "status", "level", "ms_per_token",
              "ms_per_token_lo", "ms_per_token_hi", "ttft_p50_ms", "tok_s", "price_per_hour", "cost_per_1m_tokens",
              "minutes_per_1m_tokens", "requests", "errors", "slo_attainment", "meets_slo", "slo_margin",
              "fitted_margin", "eligible", "why")


def _write_csv(directory: Path, r: dict[str, Any]) -> Path:
    p = directory / "cells.csv"
    with open(p, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in cell_rows(r):
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    return p


def _counts(r: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in r["manifest"].cells:
        out[c["status"]] = out.get(c["status"], 0) + 1
    return out


def _slo_text(slo: dict[str, float]) -> str:
    return ", ".join(f"{k} ≤ {v:g}" for k, v in slo.items()) or "none"


def _max_load_rows(r: dict[str, Any]) -> list[list[str]]:
    rows = []
    deps: dict[str, list[analysis.Group]] = {}
    for g in r["groups"]:
        deps.setdefault(g.deployment_id, []).append(g)
    for dep, gs in deps.items():
        top = r["max_load"].get(dep)
        margins = ", ".join(f"{g.level_label}: {fnum(_mean_margin(g), 2)}→{fnum(g.fitted_margin, 2)}" for g in gs)
        state = "–"
        if top is not None:
            state = {True: "re-measured, met", False: "re-measured, missed", None: "not re-measured"}[top.confirmed]
        rows.append([gs[0].deployment, top.level_label if top else "none", state, margins])
    return rows


def _mean_margin(g: analysis.Group) -> float | None:
    vals = [p.margin for p in g.points if p.margin is not None]
    return sum(vals) / len(vals) if vals else None


def _pareto_rows(front: list[analysis.Group], per: str) -> list[list[str]]:
    rows = []
    for g in front:
        y = (g.tok_s.value * 3600 / g.price if g.price else None) if per == "dollar" else g.tok_s.value / max(1, g.gpus)
        rows.append([g.deployment, g.level_label, fnum(g.tpot.value, 2), fnum(y, 0 if per == "dollar" else 1),
                     "yes" if g.eligible else ("–" if g.meets is None else "no")])
    return rows


def _planned_rows(r: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in r["manifest"].cells:
        if c["status"] != "not-run":
            continue
        plan = c.get("plan") or {}
        lv = plan.get("levels") or []
        bounds = "; ".join(f"{_level_str([x['level']], c.get('level_kind'))}: ≥ {fnum(x.get('floor_tpot_ms'), 1)} ms/token,"
                           f" ≤ {fnum(x.get('bound_tok_s'), 0)} tok/s" for x in lv if x.get("floor_tpot_ms") is not None)
        rows.append([c["name"], c.get("not_run") or "", bounds or "–",
                     f"{plan['estimate_s'] / 60:,.1f} min" if plan.get("estimate_s") else "–"])
    return rows


def _pruned_rows(r: dict[str, Any]) -> list[list[str]]:
    return [[c["name"], " | ".join(c.get("reasons") or [])] for c in r["manifest"].cells if c["status"] == "pruned"]


def _dropped_level_rows(r: dict[str, Any]) -> list[list[str]]:
    return [[c["name"], " | ".join(c.get("reasons") or [])] for c in r["manifest"].cells
            if c["status"] not in ("pruned",) and c.get("reasons")]


def _failed_rows(r: dict[str, Any]) -> list[list[str]]:
    return [[c["id"], c["name"], c.get("error") or "failed"] for c in r["manifest"].cells if c["status"] == "failed"]


def _headline_rows(r: dict[str, Any]) -> list[list[str]]:
    out = []
    for row in cell_rows(r):
        if "tok_s" not in row:
            continue
        ci = ""
        if row.get("ms_per_token_lo") is not None:
            ci = f" [{fnum(row['ms_per_token_lo'], 2)}, {fnum(row['ms_per_token_hi'], 2)}]"
        out.append([row["id"], row["name"], row["level"], fnum(row["ms_per_token"], 2) + ci, fnum(row["ttft_p50_ms"], 1),
                    fnum(row["tok_s"], 1), ("$" + fnum(row["cost_per_1m_tokens"], 2)) if row["cost_per_1m_tokens"] else "–",
                    "–" if row["slo_attainment"] is None else f"{row['slo_attainment'] * 100:.0f}%",
                    {True: "yes", False: "no", None: "–"}[row["eligible"]], row["why"]])
    return out


HEADLINE_COLUMNS = ("cell", "configuration", "load", "ms/token p50 [95% CI]", "TTFT p50 ms", "tok/s", "$ / 1M",
                    "SLO met by", "eligible", "why not")

RULES = [
    "A level meets the SLO when at least 90% of its measured requests are within every limit (TTFT and e2e"
    " counted from the scheduled send).",
    "The highest load that meets the SLO is read from a monotone (isotonic, pool-adjacent-violators) fit of"
    " each deployment's SLO margins over load, margin = min over limits of 1 − p90/limit, then re-measured by"
    " a follow-up cell; a level is eligible only if its pooled measurements meet the SLO, the fit is ≥ 0 there,"
    " and any re-measurement met it too.",
    "Each answer compares every deployment's best eligible level; intervals are 95% (t over repeats, or the"
    " level's bootstrap over requests for latency with one measurement); overlapping intervals are a tie.",
    "Cost per 1M output tokens = $/h ÷ (output tok/s × 3600) × 1e6; minutes per 1M = 1e6 / tok/s / 60. Output"
    " tokens only, prompt tokens not counted.",
]


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------
def _md_table(cols, rows) -> list[str]:
    out = ["| " + " | ".join(md(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(md(x) for x in row) + " |" for row in rows]
    return out


def _write_md(directory: Path, r: dict[str, Any]) -> Path:
    s = r["study"]
    counts = _counts(r)
    lines = [f"# Study {md(s['name'])}", ""]
    if s.get("description"):
        lines += [md(s["description"]), ""]
    lines += [f"Scenario `{md(s['scenario'])}` · model {md(s.get('model') or 'default')} · SLO {md(_slo_text(r['slo']))}"
              f" · cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), ""]
    lines += ["## The answer", ""]
    for title, rule, rows, note in answer_rows(r):
        lines += [f"### {md(title)}", "", f"{md(rule)}.", ""]
        if rows:
            lines += _md_table(ANSWER_COLUMNS, rows)
        if note:
            lines += ["", f"_{md(note)}_"]
        lines.append("")
    if r["slo"]:
        lines += ["## Highest load that meets the SLO", "",
                  *_md_table(("deployment", "highest eligible level", "re-measured", "margin measured→fitted per level"),
                             _max_load_rows(r)), ""]
    lines += ["## Pareto frontier", "", "Latency per user (median ms/token, lower is better) against throughput per"
              " GPU and per dollar (higher is better); a point is on the frontier when no other is better on both.", ""]
    lines += ["Per GPU:", "", *_md_table(("deployment", "load", "ms/token", "tok/s per GPU", "meets SLO"),
                                         _pareto_rows(r["pareto_gpu"], "gpu")), ""]
    if r["pareto_dollar"]:
        lines += ["Per dollar:", "", *_md_table(("deployment", "load", "ms/token", "tokens per $", "meets SLO"),
                                                _pareto_rows(r["pareto_dollar"], "dollar")), ""]
    lines += ["## Every cell", "", *_md_table(HEADLINE_COLUMNS, _headline_rows(r)), ""]
    if (rows := _failed_rows(r)):
        lines += ["## Failed cells", "", *_md_table(("cell", "configuration", "error"), rows), ""]
    if (rows := _pruned_rows(r)):
        lines += ["## Pruned before measuring", "", *_md_table(("configuration", "why (the plan's arithmetic)"), rows), ""]
    if (rows := _dropped_level_rows(r)):
        lines += ["## Levels dropped before measuring", "", *_md_table(("configuration", "why"), rows), ""]
    if (rows := _planned_rows(r)):
        lines += ["## Planned, not run (hardware not here)", "",
                  "Roofline bounds, not measurements: no engine goes below the floor or above the bound.", "",
                  *_md_table(("configuration", "not run", "roofline per level", "estimated time"), rows), ""]
    lines += ["## How to read this", "", *[f"- {md(x)}" for x in RULES], ""]
    p = directory / "study.md"
    p.write_text("\n".join(lines), encoding="utf-8")
    return p


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------
def _h_table(cols, rows) -> str:
    head = "".join(f"<th>{h(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{h(x)}</td>" for x in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(fig) -> str:
    return "data:image/png;base64," + base64.b64encode(png(fig)).decode("ascii")


def _axes(width: float = 7.5, height: float = 4.5):
    """One plot on its own Agg canvas (the core's :func:`llmcompare.report.html.figure`: pyplot's global
    state is never touched)."""
    fig = figure(width, height)
    return fig, fig.add_subplot()


def plots(r: dict[str, Any], directory: Path | None = None) -> list[tuple[str, str]]:
    out = []
    groups = [g for g in r["groups"] if g.tpot.value is not None and g.tok_s.value is not None]
    if not groups:
        return out
    deps: dict[str, list[analysis.Group]] = {}
    for g in groups:
        deps.setdefault(g.deployment, []).append(g)
    for per, front in (("gpu", r["pareto_gpu"]), ("dollar", r["pareto_dollar"])):
        if per == "dollar" and not front:
            continue
        fig, ax = _axes()
        for i, (dep, gs) in enumerate(sorted(deps.items())):
            xs = [g.tpot.value for g in gs]
            ys = [(g.tok_s.value * 3600 / g.price if g.price else math.nan) if per == "dollar"
                  else g.tok_s.value / max(1, g.gpus) for g in gs]
            ax.scatter(xs, ys, label=dep[:60], marker="o", s=30)
            for g, x, y in zip(gs, xs, ys):
                if not g.eligible and r["slo"]:
                    ax.scatter([x], [y], marker="x", color="black", s=40)
        fx = [g.tpot.value for g in front]
        fy = [(g.tok_s.value * 3600 / g.price) if per == "dollar" else g.tok_s.value / max(1, g.gpus) for g in front]
        ax.plot(fx, fy, color="grey", linestyle="--", marker="s", markersize=11, markerfacecolor="none",
                label="Pareto frontier")  # a frontier of one point is its marker
        if "tpot_ms" in r["slo"]:
            ax.axvline(r["slo"]["tpot_ms"], color="red", linestyle=":", label="SLO tpot_ms")
        ax.set_xlabel("latency per user: median ms/token (lower is better)")
        ax.set_ylabel("output tok/s per GPU" if per == "gpu" else "output tokens per dollar")
        ax.set_title(f"Throughput per {'GPU' if per == 'gpu' else 'dollar'} against latency (x: misses the SLO)")
        ax.legend(fontsize=7, loc="best")
        out.append((f"pareto-{per}", _png(fig)))
    fig, ax = _axes()
    for dep, gs in sorted(deps.items()):
        gs = sorted(gs, key=lambda g: g.level)
        ax.plot([g.level for g in gs], [g.tok_s.value for g in gs], marker="o", label=dep[:60])
    levels = sorted({g.level for g in groups})
    if len(levels) <= 12 and all(float(x).is_integer() for x in levels):
        ax.set_xticks(levels)  # concurrency 1, 2: no tick at 1.5
    ax.set_xlabel("load level (concurrency, or rate)")
    ax.set_ylabel("output tok/s")
    ax.set_title("Throughput against load")
    ax.legend(fontsize=7, loc="best")
    out.append(("throughput", _png(fig)))
    if directory is not None:
        (directory / "plots").mkdir(exist_ok=True)
        for name, uri in out:
            (directory / "plots" / f"{name}.png").write_bytes(base64.b64decode(uri.split(",", 1)[1]))
    return out


CSS = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:0.5em 0 1.5em}"
       "td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:left}th{background:#f3f3f3}"
       ".note{color:#555;font-style:italic}img{max-width:100%}")


def _write_html(directory: Path, r: dict[str, Any]) -> Path:
    s = r["study"]
    counts = _counts(r)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Study {h(s['name'])}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>Study {h(s['name'])}</h1>"]
    if s.get("description"):
        parts.append(f"<p>{h(s['description'])}</p>")
    parts.append(f"<p>Scenario <code>{h(s['scenario'])}</code> · model {h(s.get('model') or 'default')} · SLO"
                 f" {h(_slo_text(r['slo']))} · cells: {h(', '.join(f'{v} {k}' for k, v in sorted(counts.items())))}</p>")
    parts.append("<h2>The answer</h2>")
    for title, rule, rows, note in answer_rows(r):
        parts.append(f"<h3>{h(title)}</h3><p>{h(rule)}.</p>")
        if rows:
            parts.append(_h_table(ANSWER_COLUMNS, rows))
        if note:
            parts.append(f"<p class='note'>{h(note)}</p>")
    if r["slo"]:
        parts += ["<h2>Highest load that meets the SLO</h2>",
                  _h_table(("deployment", "highest eligible level", "re-measured", "margin measured→fitted per level"),
                           _max_load_rows(r))]
    parts.append("<h2>Pareto frontier</h2>")
    for name, uri in plots(r, directory):
        parts.append(f"<img alt='{h(name)}' src='{uri}'>")
    parts.append(_h_table(("deployment", "load", "ms/token", "tok/s per GPU", "meets SLO"),
                          _pareto_rows(r["pareto_gpu"], "gpu")))
    if r["pareto_dollar"]:
        parts.append(_h_table(("deployment", "load", "ms/token", "tokens per $", "meets SLO"),
                              _pareto_rows(r["pareto_dollar"], "dollar")))
    parts += ["<h2>Every cell</h2>", _h_table(HEADLINE_COLUMNS, _headline_rows(r))]
    for title, cols, rows in (("Failed cells", ("cell", "configuration", "error"), _failed_rows(r)),
                              ("Pruned before measuring", ("configuration", "why (the plan's arithmetic)"), _pruned_rows(r)),
                              ("Levels dropped before measuring", ("configuration", "why"), _dropped_level_rows(r)),
                              ("Planned, not run (hardware not here)",
                               ("configuration", "not run", "roofline per level", "estimated time"), _planned_rows(r))):
        if rows:
            parts += [f"<h2>{h(title)}</h2>", _h_table(cols, rows)]
    parts += ["<h2>How to read this</h2><ul>", *[f"<li>{h(x)}</li>" for x in RULES], "</ul></body></html>"]
    p = directory / "study.html"
    p.write_text("".join(parts), encoding="utf-8")
    return p


# ---------------------------------------------------------------------------------------------
# Console
# ---------------------------------------------------------------------------------------------
def print_console(r: dict[str, Any], console=None) -> None:
    console = console or (Console() if sys.stdout.isatty() else Console(width=200))
    s = r["study"]
    t = Table(title=escape(f"study {s['name']} · every cell"))
    for c in HEADLINE_COLUMNS:
        t.add_column(c, overflow="fold")
    for row in _headline_rows(r):
        t.add_row(*map(escape, row))
    console.print(t)
    for title, rule, rows, note in answer_rows(r):
        if not rows:
            console.print(escape(f"{title}: none ({note})"))
            continue
        w = rows[0]
        line = (f"{title}: {w[0]} at {w[1]}: {w[2]} ms/token, {w[3]} tok/s, {w[4]}/h, {w[5]} min and {w[6]} per 1M"
                f" tokens")
        for tie in rows[1:]:
            line += f"; {tie[0]} at {tie[1]} ({tie[2]} ms/token, {tie[3]} tok/s, {tie[6]} per 1M)"
        console.print(escape(line), soft_wrap=True)
    counts = _counts(r)
    console.print(escape("cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))))
