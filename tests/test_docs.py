"""The docs say what the code does: hooks, CLI flags, formulas, and the README's commands."""

import argparse
import inspect
import re
from pathlib import Path

from llmcompare import hookspecs
from llmcompare.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent


def read(path):
    return (ROOT / path).read_text(encoding="utf-8")


def test_every_hookspec_is_documented_with_its_signature():
    docs = read("docs/plugins.md")
    specs = [f for name, f in vars(hookspecs).items() if callable(f) and name.startswith("register_")]
    assert specs
    for f in specs:
        assert f"def {f.__name__}{inspect.signature(f)}:" in docs, f.__name__
        assert f.__doc__ and ":param register:" in f.__doc__


def _long_flags(parser):
    """Every --flag of a parser and of its subcommands, at any depth (``study run --executor``)."""
    out = []
    for a in parser._actions:
        out += [s for s in a.option_strings if s.startswith("--")]
        if isinstance(a, argparse._SubParsersAction):
            for p in a.choices.values():
                out += _long_flags(p)
    return out


def test_every_cli_flag_is_documented():
    docs = read("docs/cli.md")
    flags = _long_flags(build_parser())
    assert "--ray-retries" in flags  # a flag of a subcommand of a command (study run)
    missing = sorted({f for f in flags if f not in docs and f != "--help"})
    assert not missing, missing


def test_metric_formulas_are_published():
    docs = read("docs/metrics.md")
    for formula in ("(e2e − TTFT) / (n − 1)", "n / e2e", "$/h ÷ (tok/s × 3600) × 1e6", "r = q/100 · (m − 1)"):
        assert formula in docs, formula


def test_ci_runs_the_readme_test_command():
    readme, ci = read("README.md"), read(".ci/run")
    commands = re.findall(r"^(?:\$ )?((?:[A-Z_]+=\"[^\"]*\" )*python -m pip install .+)$", readme, re.M)
    assert len(commands) >= 2, commands
    test_cmd = next(c for c in commands if "pytest" in c)
    assert test_cmd in ci
    main_cmd = next(c for c in commands if "llmcompare --backend ctranslate2" in c)
    assert "-c constraints.txt" in main_cmd and "default-model" in main_cmd
