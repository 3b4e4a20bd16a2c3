"""Load runs on the console: the per-level table, knees and the three recommendations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmcompare.report.base import headline
from llmcompare.report.columns import LEVEL_COLUMNS, fmt, telemetry_columns
from llmcompare.report.levels_files import level_warnings, recommendation_lines

if TYPE_CHECKING:
    from llmcompare.analysis.result import RunResult


def print_levels(console: Console, result: RunResult) -> None:
    t = Table(title=escape(f"llmcompare · {headline(result)}"))
    for col in LEVEL_COLUMNS:
        t.add_column(col.header, justify="right" if col.numeric else "left")
    for lv in result.levels:
        t.add_row(*[(f"[red]{escape(c.cell(lv))}" if c.bad is not None and c.bad(lv) else escape(c.cell(lv, "pm")))
                    for c in LEVEL_COLUMNS])
    console.print(t)
    cols = telemetry_columns(result.levels)
    if cols:
        t = Table(title="Server metrics (gauges mean · max; counters over the level) and GPU energy (steady window)")
        for col in cols:
            t.add_column(col.header, justify="right" if col.numeric else "left")
        for lv in result.levels:
            t.add_row(*[(f"[red]{escape(c.cell(lv))}" if c.bad is not None and c.bad(lv) else escape(c.cell(lv)))
                        for c in cols])
        console.print(t)
    for label, a in (result.analysis.get("backends") or {}).items():
        console.print(escape(f"  {label}: knee at {a['knee'] or '–'} ({fmt(a['knee_output_tok_s'])} output tok/s);"
                             f" highest level meeting the SLO: {a['max_level_meeting_slo'] or '–'}"))
    for line in recommendation_lines(result):
        console.print(escape(f"  {line}"))
    for lv in result.levels:
        if lv.fell_behind:
            console.print(f"[yellow]warning:[/yellow] {escape(lv.backend)} {escape(lv.stage)}: the client fell behind the"
                          " schedule; the level was not driven at the asked rate")
    for kind, text in level_warnings(result):
        console.print(f"[yellow]{kind}:[/yellow] {escape(text)}")
