"""``llmcompare compare RUN_A RUN_B [--fail-if tpot_p50>+5%]``: two runs metric by metric, with
confidence intervals; a regression gate for CI (exit 1)."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from llmcompare.analysis.comparison import Gate, compare_runs
from llmcompare.cli.common import console
from llmcompare.report.columns import ratio as fmt_ratio

HELP = "compare two runs metric by metric, with confidence intervals"
DESCRIPTION = '``llmcompare compare RUN_A RUN_B``: the same backends on two machines or versions, metric by metric.'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", help="the baseline run directory")
    p.add_argument("run_b", help="the run compared with it")
    p.add_argument("--fail-if", action="append", default=[], metavar="METRIC>+N%",
                   help="exit 1 when B is worse than A beyond the threshold with confidence (repeatable)")


def run(args: argparse.Namespace) -> int:
    gates = [Gate.parse(g) for g in args.fail_if]
    rows = compare_runs(args.run_a, args.run_b)
    t = Table(title=escape(f"llmcompare compare · B = {args.run_b} against A = {args.run_a}"))
    for col in ("backend", "stage", "metric", "B / A (95% CI)", "verdict"):
        t.add_column(col)
    failed = []
    for row in rows:
        t.add_row(*map(escape, (row["backend"], row["stage"], row["metric"], fmt_ratio(row["ratio"]), row["verdict"])))
        failed += [(g, row) for g in gates if g.metric == row["metric"] and g.fails(row["ratio"])]
    out = console()
    out.print(t)
    for gate, row in failed:
        out.print(escape(f"FAIL {gate}: {row['backend']} {row['stage']}: {fmt_ratio(row['ratio'])}"))
    if gates and not failed:
        out.print(escape(f"pass: no {', '.join(map(str, gates))} beyond its threshold with confidence"))
    return 1 if failed else 0
