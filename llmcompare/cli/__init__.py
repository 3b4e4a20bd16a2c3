"""Command line: argument parsing and printing only; the work is in :mod:`llmcompare.api`.

``llmcompare [run] --backend NAME[:VARIANT] ...``  compare backends at batch size 1 (the default command)
``llmcompare load --backend ... --concurrency 1,2,4``  throughput and latency under load
``llmcompare backends``                              list backends, where they come from, how to install
``llmcompare report RUN_DIR``                        rebuild the reports from a run's requests.jsonl

Exit status: 0 when every backend ran, 1 when one or more failed (their rows say why), 2 for bad
input (one line on stderr; ``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llmcompare import __version__

COMMANDS = ("run", "load", "backends", "report", "compare", "plan", "env", "verify-backend", "bandwidth")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 1,2,4; got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, e.g. 0.5,1,2; got {text!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    """Flags shared by every command that runs backends."""
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
    p.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS", help="per-backend time limit (default 3600)")
    p.add_argument("--output", "-O", default=None, metavar="DIR", help="run directory (default llmcompare-results/<time>)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue an interrupted run in DIR")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _run_parser(sub) -> None:
    from llmcompare.config.spec import FidelitySpec

    p = sub.add_parser("run", help="compare backends at batch size 1 (the default command)",
                       description="Time a fixed prompt set on each backend, at batch size 1, with a forced output length.")
    _common(p)
    p.add_argument("--input-tokens", type=_int_list, default=None, metavar="N[,N...]",
                   help="make every prompt exactly N tokens long; several lengths run as stages (TTFT against length)")
    p.add_argument("--max-new-tokens", "-n", type=int, default=64, metavar="N", help="tokens to generate, forced (default 64)")
    p.add_argument("--repeats", "-r", type=int, default=3, help="passes over the prompt set (default 3)")
    p.add_argument("--warmup", "-w", type=int, default=1, help="warm-up requests per stage, excluded from statistics (default 1)")
    p.add_argument("--baseline", default=None, help="backend the others' speed is compared with (default: the first)")
    f = p.add_argument_group("fidelity (does each backend still say the same thing? docs/fidelity.md)")
    f.add_argument("--no-fidelity", dest="fidelity", action="store_false",
                   help="skip the fidelity pass (greedy, natural stop, judged by a reference model)")
    f.add_argument("--reference", default=None, metavar="BACKEND",
                   help="the fidelity judge: one of this run's backends or any backend[:variant] (default: transformers"
                        " at the highest precision that fits)")
    f.add_argument("--fidelity-tokens", type=int, default=FidelitySpec.max_new_tokens, metavar="N",
                   help="most tokens per output in the fidelity pass, which stops at EOS (default %(default)s)")
    f.add_argument("--near-tie-margin", type=float, default=FidelitySpec.near_tie_margin, metavar="NATS",
                   help="a first divergence whose two tokens the reference scores within this many nats is a near-tie"
                        " (default %(default)s)")


def _load_parser(sub) -> None:
    p = sub.add_parser("load", help="throughput and latency under load: concurrency or arrival-rate levels",
                       description="Drive each backend at several concurrency levels (closed loop) or request rates"
                                   " (open loop, timed from the scheduled send), and find the knee, the SLO limit and"
                                   " the cost per 1M tokens.")
    _common(p)
    p.add_argument("--concurrency", "-c", type=_int_list, default=[], metavar="N[,N...]",
                   help="closed loop: keep N requests in flight, one level per N")
    p.add_argument("--rate", type=_float_list, default=[], metavar="R[,R...]", help="open loop: requests per second, one level per R")
    p.add_argument("--arrivals", default="constant", choices=("constant", "poisson"), help="open-loop arrivals (default constant)")
    p.add_argument("--seed", type=int, default=0, help="seed of Poisson arrivals and drawn lengths (default 0)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="length of each level in seconds")
    p.add_argument("--requests", type=int, default=None, metavar="N", help="length of each level in requests")
    p.add_argument("--warmup", "-w", type=int, default=None, metavar="N",
                   help="warm-up requests before each level, excluded (default: the level's concurrency, 1 for rates)")
    p.add_argument("--sweep", action="store_true",
                   help="find the saturation rate (synchronous, then max throughput), then run rates spaced below it")
    p.add_argument("--sweep-levels", type=int, default=5, metavar="N", help="rates a sweep runs below saturation (default 5)")
    p.add_argument("--input-tokens", type=int, default=None, metavar="N",
                   help="synthetic prompts of exactly N tokens (default: the prompt set, made distinct per request)")
    p.add_argument("--input-tokens-dist", default="fixed", metavar="fixed|uniform:LO-HI", help="draw input lengths per request")
    p.add_argument("--max-new-tokens", "-n", type=int, default=64, metavar="N", help="tokens to generate, forced (default 64)")
    p.add_argument("--output-tokens-dist", default="fixed", metavar="fixed|uniform:LO-HI", help="draw output lengths per request")
    p.add_argument("--slo", default=None, metavar="ttft_ms=500,tpot_ms=100", help="per-request limits for goodput and the SLO answer")
    p.add_argument("--price-per-hour", action="append", default=[], metavar="[BACKEND=]DOLLARS",
                   help="instance price for cost per 1M output tokens (global, or per backend; repeatable)")
    p.add_argument("--clients", type=int, default=1, metavar="N",
                   help="client processes that drive each level together (HTTP backends; default 1)")
    p.add_argument("--request-timeout", type=float, default=None, metavar="SECONDS", help="per-request time limit under load")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcompare", description="Compare LLM inference backends fairly, side by side.")
    parser.add_argument("--version", action="version", version=f"llmcompare {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command")
    _run_parser(sub)
    _load_parser(sub)
    sub.add_parser("backends", help="list backends, their source, and whether they can run here")
    rp = sub.add_parser("report", help="rebuild results.json, requests.csv, summary.md (and the load reports) from a run directory")
    rp.add_argument("run_dir")
    rp.add_argument("--near-tie-margin", type=float, default=None, metavar="NATS",
                    help="judge the fidelity pass's divergences at another margin (default: the run's)")
    for name in ("analysis.comparison", "hardware.plan", "envs", "cli.verify", "hardware.roofline"):
        try:
            module = __import__(f"llmcompare.{name}", fromlist=["add_parser"])
        except ImportError:
            continue
        module.add_parser(sub)
    return parser


def _with_command(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Put the command first, or ``run`` when none is given. The command is the first word that is not
    an option nor an option's value, so ``--resume run``, ``-O report`` or ``--prompts backends`` are
    values, not commands."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    takes_value = {s for p in sub.choices.values() for a in p._actions for s in a.option_strings if a.nargs != 0}
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
        if word in COMMANDS:
            return debug + [word] + rest[:i] + rest[i + 1:]
        break
    if any(a in ("-h", "--help", "--version") for a in rest[:1]):
        return debug + rest
    return debug + ["run"] + rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_with_command(list(sys.argv[1:] if argv is None else argv), parser))
    from llmcompare.errors import UserError

    _sigterm_interrupts()
    try:
        if args.command == "backends":
            return cmd_backends()
        if args.command == "report":
            return cmd_report(args.run_dir, args.near_tie_margin)
        if args.command == "plan":
            from llmcompare.hardware import plan

            return plan.run(args)
        if args.command == "bandwidth":
            from llmcompare.hardware import roofline

            return roofline.run(args)
        if args.command == "env":
            from llmcompare import envs

            return envs.run(args)
        if args.command == "compare":
            from llmcompare.analysis import comparison

            return comparison.run(args)
        if args.command == "verify-backend":
            from llmcompare.cli import verify

            return verify.run(args)
        return cmd_run(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"llmcompare: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("llmcompare: interrupted; finished requests are kept: continue with --resume RUN_DIR", file=sys.stderr)
        return 130


def _sigterm_interrupts() -> None:
    """SIGTERM (``timeout``, ``kill``, a job scheduler) ends the command like Ctrl-C does: the workers
    and their servers are stopped and waited for, and the run can be resumed. Python's default would end
    the process at once, leaving that to the workers' death signals."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _pythons(items: list[str]) -> dict[str, str]:
    from llmcompare.errors import UserError

    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--python {item!r} must look like NAME=PATH, e.g. vllm=~/venvs/vllm/bin/python")
        out[name] = path
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from llmcompare import api
    from llmcompare.report import write_all
    from llmcompare.report.console import RichProgress, print_result

    console = _console()
    progress = RichProgress(console) if not args.quiet else None
    common = dict(model=args.model, prompts=args.prompts, options=args.option, device=args.device,
                  timeout_s=args.timeout, chat_template=args.chat_template, trust_remote_code=args.trust_remote_code,
                  python=_pythons(args.python), output=args.output, progress=progress)
    with progress or _null():
        if args.resume:
            result = api.resume(args.resume, progress=progress)
        elif args.command == "load":
            result = api.load(
                args.backend, concurrency=args.concurrency, rates=args.rate, arrivals=args.arrivals, seed=args.seed,
                duration_s=args.duration, requests=args.requests, warmup=args.warmup, max_new_tokens=args.max_new_tokens,
                output_tokens_dist=args.output_tokens_dist, input_tokens=args.input_tokens,
                input_tokens_dist=args.input_tokens_dist, sweep=args.sweep, sweep_levels=args.sweep_levels,
                slo=args.slo, price_per_hour=args.price_per_hour, clients=args.clients,
                request_timeout_s=args.request_timeout, **common)
        else:
            result = api.compare(
                args.backend, input_tokens=args.input_tokens, max_new_tokens=args.max_new_tokens, repeats=args.repeats,
                warmup=args.warmup, baseline=args.baseline, fidelity=args.fidelity, reference=args.reference,
                fidelity_tokens=args.fidelity_tokens, near_tie_margin=args.near_tie_margin, **common)
    paths = write_all(result)
    print_result(console, result, paths)
    return 1 if result.failed else 0


def cmd_backends() -> int:
    from rich.markup import escape
    from rich.table import Table

    from llmcompare.plugins import get_registry

    try:
        from llmcompare.envs import managed_python
    except ImportError:
        def managed_python(name: str) -> None:
            return None

    reg = get_registry()
    t = Table(title="llmcompare backends")
    for col in ("backend", "source", "runs here", "devices · model formats", "concurrency", "variants"):
        t.add_column(col, overflow="fold")
    missing_engines = []
    for name in sorted(reg.backends):
        spec = reg.backends[name]
        caps = spec.capabilities
        missing = spec.missing_module()
        where = "yes" if missing is None else f"no (missing {missing})"
        if missing is not None and (managed := managed_python(name)):
            where = f"yes, in its environment ({managed})"
        elif missing is not None:
            missing_engines.append((name, spec.install))
        concurrency = ("many (async)" if caps.concurrent else "one at a time") + ("" if caps.in_process else ", over HTTP")
        t.add_row(*map(escape, (name, spec.source, where, f"{', '.join(caps.devices)} · {', '.join(caps.model_formats)}",
                                concurrency, ", ".join(spec.variants) or "–")))
    console = _console()
    console.print(t)
    if missing_engines:
        console.print("To install a backend that cannot run here:")
        for name, install in missing_engines:
            console.print(escape(f"  {name}: {install}"), soft_wrap=True)
    for err in reg.errors:
        console.print(f"[red]plugin {escape(err.plugin)} ({escape(err.source)}) failed to load:[/red] {escape(err.error)}")
    return 0


def cmd_report(run_dir: str, near_tie_margin: float | None = None) -> int:
    from llmcompare.analysis.result import load_result
    from llmcompare.errors import UserError
    from llmcompare.records.rundir import RunDir
    from llmcompare.report import write_all
    from llmcompare.report.console import print_result

    rd = RunDir(run_dir)
    if not rd.requests.exists():
        raise UserError(f"{run_dir} holds no requests.jsonl; pass the directory of a run")
    result = load_result(rd, near_tie_margin=near_tie_margin)
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
