"""What several commands share: the flags of every command that runs backends, the console, the
exit-status conventions."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from llmcompare.errors import ConfigError
from llmcompare.report.console import SafeConsole


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by every command that runs backends (each scenario adds its own)."""
    p.add_argument("--backend", "-b", action="append", default=[], metavar="NAME[:VARIANT][@LABEL]",
                   help="a backend to run (repeat for a side-by-side table), e.g. ctranslate2, transformers:bf16,"
                        " transformers:fp16@static (a label lets one variant run twice with other options)")
    p.add_argument("--model", "-m", default=None,
                   help="GGUF file, HF model directory, hub id, or synthetic:<shape> (default: SmolLM2-135M-Instruct)")
    p.add_argument("--prompts", "-p", default=None, help="built-in set name or a .jsonl/.yaml/.txt file (default: default)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="[BACKEND.]KEY=VALUE",
                   help="engine-native setting, e.g. ctranslate2.intra_threads=2 (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--no-chat-template", dest="chat_template", action="store_false",
                   help="tokenize prompts as raw text instead of one chat turn")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    p.add_argument("--python", action="append", default=[], metavar="NAME=PATH",
                   help="run backend NAME's worker under this interpreter (its own environment)")
    p.add_argument("--timeout", dest="timeout_s", type=float, default=3600.0, metavar="SECONDS",
                   help="per-backend time limit (default 3600)")
    p.add_argument("--price-per-hour", action="append", default=[], metavar="[BACKEND=]DOLLARS",
                   help="instance price for cost per 1M output tokens (global, or per backend; repeatable)")
    p.add_argument("--output", "-O", default=None, metavar="DIR", help="run directory (default llmcompare-results/<time>)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue an interrupted run in DIR")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def console() -> Console:
    """A rich console that renders data safely (:class:`~llmcompare.report.console.SafeConsole`); when
    output is not a terminal (CI logs, pipes) wide enough for the table."""
    return SafeConsole() if sys.stdout.isatty() else SafeConsole(width=200)


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each destination's longest flag (``max_new_tokens`` -> ``--max-new-tokens``), to show a
    :class:`~llmcompare.errors.ConfigError` in the CLI's words."""
    out: dict[str, str] = {}
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += list(action.choices.values())
            elif action.option_strings:
                out.setdefault(action.dest, max(action.option_strings, key=len))
    return out


def error_message(exc: Exception, parser: argparse.ArgumentParser) -> str:
    return exc.render(flag_names(parser)) if isinstance(exc, ConfigError) else str(exc)
