"""``llmcompare report RUN_DIR``: rebuild every report from a run's ``requests.jsonl`` alone."""

from __future__ import annotations

import argparse
import sys

from llmcompare.analysis.result import load_result
from llmcompare.cli.common import console
from llmcompare.errors import UserError
from llmcompare.plugins import get_registry
from llmcompare.records.rundir import RunDir
from llmcompare.report.base import print_result, write_all

HELP = "rebuild results.json, requests.csv, summary.md, report.html (and each scenario's files) from a run directory"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    registry = get_registry()
    for name in registry.scenarios:  # each scenario's settings that can change when the reports are rebuilt
        registry.scenario(name).add_report_arguments(p)


def run(args: argparse.Namespace) -> int:
    rd = RunDir(args.run_dir)
    if not rd.requests.exists():
        raise UserError(f"{args.run_dir} holds no requests.jsonl; pass the directory of a run")
    registry = get_registry()
    overrides = {name: registry.scenario(name).report_overrides(args) for name in registry.scenarios}
    result = load_result(rd, overrides={k: v for k, v in overrides.items() if v})
    if result.records is not None and (skipped := result.records.skipped_summary()):
        print(f"llmcompare: warning: {skipped}; the reports use the rest", file=sys.stderr)
    print_result(console(), result, write_all(result))
    return 0
