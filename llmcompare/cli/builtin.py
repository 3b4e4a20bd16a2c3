"""The built-in commands, registered through the same hook as a plugin's (the commands that run
backends come from the scenarios that name one: ``run``, ``load``)."""

from __future__ import annotations

from llmcompare.hookspecs import hookimpl
from llmcompare.plugins.specs import CommandSpec


@hookimpl
def register_commands(register):
    register(CommandSpec("backends", "llmcompare.cli.backends", "list backends, their source, and whether they can run here"))
    register(CommandSpec("report", "llmcompare.cli.report",
                         "rebuild results.json, requests.csv, summary.md, report.html (and each scenario's files)"
                         " from a run directory"))
    register(CommandSpec("compare", "llmcompare.cli.compare", "compare two runs metric by metric, with confidence intervals"))
    register(CommandSpec("plan", "llmcompare.cli.plan",
                         "memory, KV-cache capacity and bandwidth floor of a model on an accelerator (no run)"))
    register(CommandSpec("env", "llmcompare.cli.env", "build and list per-backend Python environments (vLLM)"))
    register(CommandSpec("verify-backend", "llmcompare.cli.verify",
                         "run the conformance kit and a short comparison on one backend"))
    register(CommandSpec("study", "llmcompare.study.cli",
                         "which configuration should I deploy? a matrix of runs as one resumable study (plan, run,"
                         " report)"))
    register(CommandSpec("bandwidth", "llmcompare.cli.bandwidth",
                         "the GPU's copy bandwidth (measured once, cached), or a run's % of the decode floor"))
