"""``llmcompare``'s entry point: argument parsing and dispatch only; the work is in :mod:`llmcompare.api`
and the domain packages.

``llmcompare [run] --backend NAME[:VARIANT] ...``  compare backends at batch size 1 (the default command)
``llmcompare load --backend ... --concurrency 1,2,4``  throughput and latency under load
``llmcompare backends``                              list backends, where they come from, how to install
``llmcompare report RUN_DIR``                        rebuild the reports from a run's requests.jsonl

Every command is a plugin: the commands that run backends come from the scenarios that name one
(:class:`~llmcompare.plugins.ScenarioSpec` ``command``), the others from ``register_commands``
(:mod:`llmcompare.cli.builtin`), one module each. A command's module is imported only when it runs or
its flags are needed.

Exit status: 0 when every backend ran, 1 when one or more failed (their rows say why), 2 for bad
input (one line on stderr; ``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from llmcompare import __version__
from llmcompare.cli.common import add_run_flags, error_message
from llmcompare.errors import Interrupted, UserError
from llmcompare.plugins import Registry, get_registry
from llmcompare.plugins.specs import load_target
from llmcompare.sanitize import strip_controls

DEFAULT_COMMAND = "run"
SCENARIO_COMMAND = "llmcompare.cli.scenario:ScenarioCommand"
"""The command that runs a scenario; loaded by name, like every command, when it runs."""


def commands(registry: Registry) -> dict[str, tuple[str, Any]]:
    """Command name -> (help line, a loader of its object), scenario commands first."""
    out: dict[str, tuple[str, Any]] = {}
    for spec in registry.scenarios.values():
        if spec.command and spec.command not in out:
            out[spec.command] = (spec.help, lambda s=spec: load_target(SCENARIO_COMMAND, "the scenario command")(s, registry))
    for name, spec in registry.commands.items():
        out.setdefault(name, (spec.help, lambda n=name: registry.command(n)))
    return out


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only``, the flags of that command alone (the others list their help)."""
    registry = get_registry()
    parser = argparse.ArgumentParser(prog="llmcompare", description="Compare LLM inference backends fairly, side by side.")
    parser.add_argument("--version", action="version", version=f"llmcompare {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command")
    for name, (text, load) in commands(registry).items():
        help_line = text.replace("%", "%%")  # argparse formats help with %
        if only is not None and name != only:
            sub.add_parser(name, help=help_line)
            continue
        command = load()
        p = sub.add_parser(name, help=help_line,
                           description=getattr(command, "description", None) or getattr(command, "DESCRIPTION", None)
                           or help_line)
        command.add_arguments(p)
        p.set_defaults(_command=command)
    return parser


def _with_command(argv: list[str], names: set[str], takes_value: set[str]) -> list[str]:
    """Put the command first, or ``run`` when none is given. The command is the first word that is not
    an option nor an option's value, so ``--resume run``, ``-O report`` or ``--prompts backends`` are
    values, not commands."""
    debug = [a for a in argv if a == "--debug"]
    rest = [a for a in argv if a != "--debug"]
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "--":
            break
        if word.startswith("-") and len(word) > 1:
            i += 2 if (word in takes_value and "=" not in word) else 1
            continue
        if word in names:
            return debug + [word] + rest[:i] + rest[i + 1:]
        break
    if any(a in ("-h", "--help", "--version") for a in rest[:1]):
        return debug + rest
    return debug + [DEFAULT_COMMAND] + rest


def _run_flags_with_values() -> set[str]:
    """The flags shared by the commands that run backends that take a value (to tell values from commands)."""
    p = argparse.ArgumentParser(add_help=False)
    add_run_flags(p)
    return {s for a in p._actions for s in a.option_strings if a.nargs != 0}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = set(commands(get_registry()))
    argv = _with_command(argv, names, _run_flags_with_values())
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in names else "")
    args = parser.parse_args(argv)
    _sigterm_interrupts()
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args._command.run(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"llmcompare: error: {one_line(error_message(exc, parser))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"llmcompare: {interrupted_message(exc, args)}", file=sys.stderr)
        return 130


def one_line(text: str) -> str:
    """An error for the terminal: one line, no control characters (it may quote a file or a server)."""
    return strip_controls(str(text)).replace("\n", " ").replace("\t", " ")


def interrupted_message(exc: KeyboardInterrupt, args: argparse.Namespace) -> str:
    """What Ctrl-C or SIGTERM left: a run to ``--resume`` only where a run directory holds one."""
    where = exc.run_dir if isinstance(exc, Interrupted) else getattr(args, "resume", None)
    if where:
        return f"interrupted; finished requests are kept: continue with --resume {where}"
    if hasattr(args, "resume"):  # a command that runs backends, stopped before its run directory held a run
        return "interrupted before the run started; nothing was written, so there is nothing to resume"
    return "interrupted"


def _sigterm_interrupts() -> None:
    """SIGTERM (``timeout``, ``kill``, a job scheduler) ends the command like Ctrl-C does: the workers
    and their servers are stopped and waited for, and the run can be resumed. Python's default would end
    the process at once, leaving that to the workers' death signals."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    sys.exit(main())
