"""``llmcompare backends``: what can run here and where, what to install for the rest, and the plugins
that failed to load."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from llmcompare.cli.common import console
from llmcompare.envs import managed_python
from llmcompare.plugins import get_registry

HELP = "list backends, their source, and whether they can run here"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
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
    out = console()
    out.print(t)
    if missing_engines:
        out.print("To install a backend that cannot run here:")
        for name, install in missing_engines:
            out.print(escape(f"  {name}: {install}"), soft_wrap=True)
    for kind, table in (("scenarios", reg.scenarios), ("reports", reg.reports), ("commands", reg.commands)):
        plugged = sorted(f"{n} ({s.source})" for n, s in table.items() if s.source != "built-in")
        if plugged:
            out.print(escape(f"{kind} from plugins: {', '.join(plugged)}"))
    for err in reg.errors:
        out.print(f"[red]plugin {escape(err.plugin)} ({escape(err.source)}) failed to load:[/red] {escape(err.error)}")
    return 0
