"""The console: rich progress bars while running, and each scenario's sections at the end."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmcompare.plugins import get_registry
from llmcompare.records.header import scenario_of_stage
from llmcompare.runner.progress import ProgressCallbacks
from llmcompare.sanitize import strip_controls

if TYPE_CHECKING:
    from llmcompare.analysis.result import RunResult
    from llmcompare.records import BackendRecord, RequestRecord, StageRecord
    from llmcompare.report.base import Output
    from llmcompare.report.sections import Section


class SafeConsole(Console):
    """A console for text that may come from a server or a file: every string it renders (what is
    printed, table cells and titles) loses its control characters, terminal escapes included
    (:func:`llmcompare.sanitize.strip_controls`), and ``:name:`` is never an emoji. Rich markup in
    data is escaped by the writers (``rich.markup.escape``), which keep their own markup."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("emoji", False)
        super().__init__(*args, **kwargs)

    def render_str(self, text: str, **kwargs):  # every str renderable passes here
        return super().render_str(strip_controls(text), **kwargs)


class RichProgress(ProgressCallbacks):
    """One bar per backend, advanced as records land in requests.jsonl; each record's scenario says how
    far it advances the bar and what to show (:meth:`~llmcompare.scenarios.base.Scenario.describe`)."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=console, transient=False,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @staticmethod
    def _scenario(stage: str):
        registry = get_registry()
        name = scenario_of_stage(stage)
        return registry.scenario(name) if name in registry.scenarios else None

    def backend_started(self, label: str, total: int | None) -> None:
        self.tasks[label] = self.progress.add_task(escape(strip_controls(label)), total=total, status="loading…")

    def request_done(self, label: str, record: RequestRecord) -> None:
        scenario = self._scenario(record.stage)
        advance, status = scenario.describe(record) if scenario else (0, record.stage)
        bad = not record.warmup and advance and not record.length_ok
        status = escape(strip_controls(status))
        self.progress.update(self.tasks[label], advance=advance, status=f"[red]{status}" if bad else status)

    def stage_done(self, label: str, record: StageRecord) -> None:
        scenario = self._scenario(record.stage)
        line = scenario.stage_line(record) if scenario else None
        if line:
            self.progress.console.print(escape(strip_controls(f"  {label} {line}")))

    def backend_done(self, label: str, record: BackendRecord) -> None:
        status = "[green]done" if record.status == "ok" else f"[red]failed: {escape(strip_controls(record.error or ''))}"
        self.progress.update(self.tasks[label], status=status)


class ConsoleReport:
    """Prints each scenario's sections and where the files are (needs ``out.console``)."""

    console_only = True

    def write(self, result: RunResult, out: Output, sections: list[Section]) -> list[Path]:
        console = out.console or SafeConsole()
        for s in sections:
            s.console(console)
        if out.paths:
            console.print(escape("results: " + "  ·  ".join(str(p) for p in out.paths.values())))
        return []
