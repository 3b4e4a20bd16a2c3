"""``llmcompare study plan|run|report``: argument parsing and printing; the work is in driver.py.

The core registers the ``study`` command through its command-plugin hook with :func:`add_arguments`
and :func:`run`; ``python -m llmcompare.study ...`` works on its own (``__main__.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmcompare.errors import UserError
from llmcompare.study import report
from llmcompare.study.driver import RunOptions, plan_study, run_study
from llmcompare.study.spec import parse_only

DESCRIPTION = ("Which configuration should I deploy? A matrix of llmcompare runs (engines, options, models, hardware,"
               " load levels) as one resumable study, pruned by the plan's arithmetic before anything is measured,"
               " answered with the most cost-effective configuration that meets the SLO, the best latency and the"
               " best throughput (docs/studies.md).")

INTERRUPTED = "llmcompare: interrupted; finished cells are kept: continue with llmcompare study run --resume DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="study_command", metavar="plan|run|report")
    sub.required = True
    p = sub.add_parser("plan", help="the cells, the ones pruned and why, and the estimated time (runs nothing)",
                       description="Expand a study file into cells, check every argv with llmcompare's parser, prune"
                                   " what cannot fit or cannot meet the SLO, and estimate the time.")
    p.add_argument("study", metavar="STUDY.yaml")
    p.add_argument("--no-prune", action="store_true", help="keep the cells that planning would prune")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=VALUE[,VALUE]",
                   help="only the cells whose axis takes these values, e.g. backend=llamacpp:f16 (repeatable: all must match)")
    p.add_argument("--gpus", default=None, metavar="[NAME=]ID,...",
                   help="the GPUs this host offers (default: LLMCOMPARE_STUDY_GPUS, else nvidia-smi)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")

    r = sub.add_parser("run", help="run a study's cells (resumable) and write its report",
                       description="Run every cell that can run here, one llmcompare run directory per cell, skip"
                                   " finished ones, resume partial ones, then write the study report.")
    r.add_argument("study", metavar="STUDY.yaml", nargs="?", default=None,
                   help="the study file (optional with --resume: the copy in the study directory is used)")
    r.add_argument("--output", "-O", default=None, metavar="DIR",
                   help="the study directory (default llmcompare-results/study-<name>-<time>); an existing one"
                        " of the same study is continued")
    r.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the study in DIR, and rerun its failed cells")
    r.add_argument("--executor", default="local", choices=("local", "ray"),
                   help="local: cells on this host (GPU cells side by side on disjoint GPUs); ray: one Ray task"
                        " per cell (pip install 'llmcompare[ray]')")
    r.add_argument("--address", default=None, metavar="ADDR",
                   help="join this Ray cluster (default: start a local instance on the loopback only)")
    r.add_argument("--no-prune", action="store_true", help="run the cells that planning would prune")
    r.add_argument("--only", action="append", default=[], metavar="AXIS=VALUE[,VALUE]",
                   help="run only the cells whose axis takes these values, and the steps they need (repeatable)")
    r.add_argument("--gpus", default=None, metavar="[NAME=]ID,...",
                   help="the GPUs this host offers (default: LLMCOMPARE_STUDY_GPUS, else nvidia-smi)")
    r.add_argument("--ray-retries", type=int, default=3, metavar="N",
                   help="times a Ray task is rerun after its worker or node is lost (default 3)")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress lines")

    rep = sub.add_parser("report", help="rebuild the study report from the cells",
                         description="Rebuild study.md, study.html and cells.csv from study.json and the cells'"
                                     " run directories.")
    rep.add_argument("directory", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    try:
        if args.study_command == "plan":
            return _plan(args)
        if args.study_command == "run":
            return _run(args)
        if args.study_command == "report":
            return _report(args)
    except KeyboardInterrupt:  # before the driver took over its own Ctrl-C and SIGTERM
        print(INTERRUPTED, file=sys.stderr)
        return 130
    raise AssertionError(args.study_command)


def _run(args: argparse.Namespace) -> int:
    opts = RunOptions(output=args.output, resume=args.resume, executor=args.executor, address=args.address,
                      no_prune=args.no_prune, gpus=args.gpus, ray_retries=args.ray_retries, quiet=args.quiet,
                      only=parse_only(args.only))
    return run_study(args.study, opts)


def _report(args: argparse.Namespace) -> int:
    paths = report.write_all(Path(args.directory))
    print("study: " + "  ·  ".join(str(p) for p in paths))
    return 0


def _plan(args: argparse.Namespace) -> int:
    study, planned = plan_study(args.study, args.gpus, args.no_prune, parse_only(args.only))
    if args.json:
        print(json.dumps([{"id": p.cell.id, "name": p.cell.name, "status": p.status, "argv": p.cell.argv,
                           "hardware": p.cell.hardware, "gpus": p.cell.gpus, "reasons": p.assessment.reasons,
                           "notes": p.assessment.notes, "not_run": p.assessment.not_run,
                           "estimate_s": p.assessment.estimate_s} for p in planned], indent=1))
        return 0
    console = Console() if sys.stdout.isatty() else Console(width=200)
    t = Table(title=escape(f"study {study.name} · {study.scenario} · {len(planned)} cells"))
    for col in ("cell", "configuration", "repeat", "hardware", "levels", "status", "estimate", "argv"):
        t.add_column(col, overflow="fold")
    total = here = 0.0
    for p in planned:
        c, a = p.cell, p.assessment
        lv = ",".join(_n(x) for x in c.levels) if c.levels else "batch 1"
        est = f"{a.estimate_s / 60:,.1f} min" if a.estimate_s else "–"
        status = {"pending": "will run", "pruned": "pruned", "not-run": f"not run: {a.not_run}"}[p.status]
        t.add_row(*map(escape, (c.id, c.name, str(c.repeat), c.hardware, lv, status, est,
                                "llmcompare " + " ".join(c.argv))))
        if a.estimate_s and p.status != "pruned":
            total += a.estimate_s
            if p.status == "pending":
                here += a.estimate_s
    console.print(t)
    for step in study.steps:  # run before the cells, skipped when their output is cached (steps.py)
        who = f" (for {', '.join(step.needed_by)})" if step.needed_by else ""
        console.print(escape(f"step {step.name}{who}: {' '.join(step.argv)}"), soft_wrap=True)
    for p in planned:
        for why in p.assessment.reasons:
            console.print(escape(f"{'pruned' if p.status == 'pruned' else 'level dropped'}: {p.cell.name}: {why}"),
                          soft_wrap=True)
    notes = sorted({n for p in planned for n in p.assessment.notes})
    for n in notes:
        console.print(escape(f"note: {n}"), soft_wrap=True)
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.status] = counts.get(p.status, 0) + 1
    bases = sorted({p.assessment.estimate_basis for p in planned if p.assessment.estimate_basis})
    console.print(escape(f"{counts.get('pending', 0)} cells run here, {counts.get('pruned', 0)} pruned,"
                         f" {counts.get('not-run', 0)} need hardware that is not here; estimated time here"
                         f" {here / 60:,.1f} min (all runnable cells on their hardware: {total / 60:,.1f} min);"
                         f" basis: {'; '.join(bases) or '–'}"), soft_wrap=True)
    return 0


def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmcompare study", description=DESCRIPTION)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"llmcompare: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
