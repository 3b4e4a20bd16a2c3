"""The commands that run backends (``llmcompare run``, ``llmcompare load``, and a plugin scenario's):
one per scenario that names a command, with the scenarios that join it (fidelity joins ``run``)."""

from __future__ import annotations

import argparse
from typing import Any

from llmcompare import api
from llmcompare.cli.common import add_run_flags, console
from llmcompare.config.spec import parse_prices
from llmcompare.plugins import Registry, ScenarioSpec
from llmcompare.report.base import print_result, write_all
from llmcompare.report.console import RichProgress
from llmcompare.runner.interpreter import parse_overrides


class ScenarioCommand:
    """``llmcompare COMMAND``: the run flags, the main scenario's flags, and those of the scenarios that join it."""

    def __init__(self, spec: ScenarioSpec, registry: Registry):
        self.spec = spec
        self.registry = registry
        self.joined = [s for s in registry.scenarios.values() if spec.name in s.joins]
        self.help = spec.help
        self.description = spec.help

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_run_flags(parser)
        self.registry.scenario(self.spec.name).add_arguments(parser)
        for s in self.joined:
            self.registry.scenario(s.name).add_arguments(parser)

    def configs(self, args: argparse.Namespace) -> list[Any]:
        configs = [self.registry.scenario(self.spec.name).config_from_args(args)]
        configs += [self.registry.scenario(s.name).config_from_args(args) for s in self.joined]
        return [c for c in configs if c is not None]

    def run(self, args: argparse.Namespace) -> int:
        out = console()
        progress = RichProgress(out) if not args.quiet else None
        with progress or _Null():
            if args.resume:
                result = api.resume(args.resume, progress=progress, options=args.option)
            else:
                result = api.run(args.backend, self.configs(args), model=args.model, prompts=args.prompts,
                                 options=args.option, device=args.device, timeout_s=args.timeout_s,
                                 chat_template=args.chat_template, trust_remote_code=args.trust_remote_code,
                                 python=parse_overrides(args.python), prices=parse_prices(args.price_per_hour),
                                 output=args.output, progress=progress)
        print_result(out, result, write_all(result))
        return 1 if result.failed else 0


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None
