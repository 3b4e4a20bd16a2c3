"""Command line: argument parsing and printing only; the work is in :mod:`llmcompare.api`.

``llmcompare [run] --backend NAME[:VARIANT] ...``  compare backends (the default command)
``llmcompare backends``                              list backends, where they come from, how to install
``llmcompare report RUN_DIR``                        rebuild the reports from a run's requests.jsonl

Exit status: 0 when every backend ran, 1 when one or more failed (their rows say why), 2 for bad
input (one line on stderr; ``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

COMMANDS = ("run", "backends", "report")


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="compare backends at batch size 1 (the default command)",
                       description="Time a fixed prompt set on each backend, at batch size 1, with a forced output length.")
    p.add_argument("--backend", "-b", action="append", default=[], metavar="NAME[:VARIANT][@LABEL]",
                   help="a backend to run (repeat for a side-by-side table), e.g. ctranslate2, transformers:bf16,"
                        " transformers:fp16@static (a label lets one variant run twice with other options)")
    p.add_argument("--model", "-m", default=None,
                   help="GGUF file, HF model directory, hub id, or synthetic:<shape> (default: SmolLM2-135M-Instruct)")
    p.add_argument("--prompts", "-p", default=None, help="built-in set name or a .jsonl/.yaml/.txt file (default: default)")
    p.add_argument("--input-tokens", type=int, default=None, metavar="N", help="make every prompt exactly N tokens long")
    p.add_argument("--max-new-tokens", "-n", type=int, default=64, metavar="N", help="tokens to generate, forced (default 64)")
    p.add_argument("--repeats", "-r", type=int, default=3, help="passes over the prompt set (default 3)")
    p.add_argument("--warmup", "-w", type=int, default=1, help="warm-up requests, excluded from statistics (default 1)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="[BACKEND.]KEY=VALUE",
                   help="engine-native setting, e.g. ctranslate2.intra_threads=2 (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--reference", default=None, help="backend the others are compared with (default: the first)")
    p.add_argument("--no-chat-template", dest="chat_template", action="store_false",
                   help="tokenize prompts as raw text instead of one chat turn")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    p.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS", help="per-backend time limit (default 3600)")
    p.add_argument("--output", "-O", default=None, metavar="DIR", help="run directory (default llmcompare-results/<time>)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue an interrupted run in DIR")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcompare", description="Compare LLM inference backends fairly, side by side.")
    parser.add_argument("--version", action="version", version=f"llmcompare {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command")
    _run_parser(sub)
    sub.add_parser("backends", help="list backends, their source, and whether they can run here")
    rp = sub.add_parser("report", help="rebuild results.json, requests.csv and summary.md from a run directory")
    rp.add_argument("run_dir")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    first = next((a for a in argv if not a.startswith("-")), None)
    if first not in COMMANDS and not any(a in ("-h", "--help", "--version") for a in argv[:1]):
        argv = [a for a in argv if a != "--debug"]
        argv.insert(0, "run")
        if debug:
            argv.insert(0, "--debug")
    args = build_parser().parse_args(argv)
    from .errors import UserError

    try:
        if args.command == "backends":
            return cmd_backends()
        if args.command == "report":
            return cmd_report(args.run_dir)
        return cmd_run(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"llmcompare: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("llmcompare: interrupted; finished requests are kept: continue with --resume RUN_DIR", file=sys.stderr)
        return 130


def cmd_run(args: argparse.Namespace) -> int:
    from . import api
    from .report import write_all
    from .report.console import RichProgress, print_result

    console = _console()
    progress = RichProgress(console) if not args.quiet else None
    with progress or _null():
        if args.resume:
            result = api.resume(args.resume, progress=progress)
        else:
            result = api.compare(
                args.backend, model=args.model, prompts=args.prompts, input_tokens=args.input_tokens,
                max_new_tokens=args.max_new_tokens, repeats=args.repeats, warmup=args.warmup, options=args.option,
                device=args.device, timeout_s=args.timeout, chat_template=args.chat_template, reference=args.reference,
                trust_remote_code=args.trust_remote_code, output=args.output, progress=progress,
            )
    paths = write_all(result)
    print_result(console, result, paths)
    return 1 if result.failed else 0


def cmd_backends() -> int:
    from rich.markup import escape
    from rich.table import Table

    from .plugins import get_registry

    reg = get_registry()
    t = Table(title="llmcompare backends")
    for col in ("backend", "source", "runs here", "variants", "install", "description"):
        t.add_column(col)
    for name in sorted(reg.backends):
        spec = reg.backends[name]
        missing = spec.missing_module()
        t.add_row(*map(escape, (name, spec.source, "yes" if missing is None else f"no (missing {missing})",
                  ", ".join(spec.variants) or "–", "–" if missing is None else spec.install, spec.description)))
    console = _console()
    console.print(t)
    for err in reg.errors:
        console.print(f"[red]plugin {escape(err.plugin)} ({escape(err.source)}) failed to load:[/red] {escape(err.error)}")
    return 0


def cmd_report(run_dir: str) -> int:
    from pathlib import Path

    from . import api
    from .errors import UserError
    from .report import write_all
    from .report.console import print_result

    if not (Path(run_dir) / "requests.jsonl").exists():
        raise UserError(f"{run_dir} holds no requests.jsonl; pass the directory of a run")
    result = api.load_result(run_dir)
    print_result(_console(), result, write_all(result))
    return 0


def _console():
    """A rich console; when output is not a terminal (CI logs, pipes) wide enough for the table."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


if __name__ == "__main__":
    sys.exit(main())
