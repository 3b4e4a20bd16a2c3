"""The console: rich progress bars while running, and the comparison table at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmcompare.api import Progress as ProgressCallbacks
from llmcompare.report.columns import latency_columns, ratio, speedup, summary_notes, ttft_by_input_length
from llmcompare.report.fidelity import FIDELITY_COLUMNS, reference_line, verdict_lines
from llmcompare.report.files import SYNTHETIC_AGREEMENT_NOTE, headline

if TYPE_CHECKING:
    from llmcompare.analysis.result import RunResult
    from llmcompare.records import BackendRecord, RequestRecord, StageRecord


class RichProgress(ProgressCallbacks):
    """One bar per backend, advanced as records land in requests.jsonl; load levels print as they end."""

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

    def backend_started(self, label: str, total: int | None) -> None:
        self.tasks[label] = self.progress.add_task(escape(label), total=total, status="loading…")

    def request_done(self, label: str, record: RequestRecord) -> None:
        task = self.tasks[label]
        if record.stage == "fidelity:reference":  # the judge: its own answers, then the judging
            self.progress.update(task, advance=1, status="reference answers, then judging")
            return
        if record.stage.startswith("fidelity"):
            self.progress.update(task, status=f"fidelity pass: {escape(record.prompt_id)}")
            return
        if record.warmup:
            self.progress.update(task, status=f"warming up {escape(record.stage)}")
            return
        status = escape(record.stage) if record.length_ok else f"[red]{escape(record.error or 'length mismatch')}"
        self.progress.update(task, advance=1, status=status)

    def stage_done(self, label: str, record: StageRecord) -> None:
        if not record.stage.startswith("load"):
            return
        a = record.achieved
        self.progress.console.print(escape(
            f"  {label} {record.stage}: {a.get('requests', 0)} requests in {record.wall_s:.1f} s,"
            f" {a.get('output_tok_s', 0):,.1f} output tok/s, {a.get('errors', 0)} errors"
            + (" [client fell behind the schedule]" if a.get("fell_behind") else "")))

    def backend_done(self, label: str, record: BackendRecord) -> None:
        status = "[green]done" if record.status == "ok" else f"[red]failed: {escape(record.error or '')}"
        self.progress.update(self.tasks[label], status=status)


def table(result: RunResult) -> Table:
    t = Table(title=escape(f"llmcompare · {headline(result)}"))
    cols = latency_columns(result.summaries, where="console")
    for col in cols:
        t.add_column(col.header, justify="right" if col.numeric else "left")
    for s in result.summaries:
        cells = []
        for col in cols:
            text = escape(col.cell(s, intervals="pm"))
            if col.key == "status" and s.status == "ok":
                text = f"[green]{text}"
            elif col.bad is not None and col.bad(s):
                text = f"[red]{text}"
            cells.append(text)
        t.add_row(*cells)
    return t


def print_fidelity(console: Console, result: RunResult) -> None:
    """The fidelity table, then one line per backend: speed against the baseline, fidelity against the
    reference."""
    if result.fidelity and any(f.prompts for f in result.fidelity):
        t = Table(title="Fidelity against the reference (greedy, natural stop; docs/fidelity.md)")
        for col in FIDELITY_COLUMNS:
            t.add_column(col.header, justify="right" if col.numeric else "left")
        for f in result.fidelity:
            t.add_row(*[f"[red]{escape(c.cell(f))}" if c.bad is not None and c.bad(f) else escape(c.cell(f))
                        for c in FIDELITY_COLUMNS])
        console.print(t)
    console.print(escape(reference_line(result)))
    for line in verdict_lines(result):
        console.print(escape(f"  {line}"))


def print_result(console: Console, result: RunResult, paths: dict) -> None:
    if result.levels:
        from llmcompare.report.levels_console import print_levels

        print_levels(console, result)
    else:
        console.print(table(result))
        lengths, ttft = ttft_by_input_length(result.summaries)
        if len(lengths) > 1:
            t = Table(title="TTFT p50 ms against input length (prefill cost)")
            t.add_column("backend")
            for n in lengths:
                t.add_column(f"{n} tokens", justify="right")
            for label, row in ttft.items():
                t.add_row(escape(label), *[f"{row[n]:,.1f}" if row.get(n) is not None else "–" for n in lengths])
            console.print(t)
    for c in result.comparisons:
        stage = f" [{c['stage']}]" if len(result.stages) > 1 else ""
        console.print(escape(f"  {c['backend']} vs {c['baseline']}{stage}: TPOT speed-up, paired by prompt,"
                             f" {speedup(c.get('speedup_tpot'))}; ratio of medians {ratio(c['tpot_ratio'])}"))
    if result.spec.fidelity is not None:
        print_fidelity(console, result)
    if result.comparisons and result.environment.get("model", {}).get("kind") == "synthetic":
        console.print(f"  note: {SYNTHETIC_AGREEMENT_NOTE}")
    for kind, text in summary_notes(result.summaries, result.spec.scenario.max_new_tokens):
        console.print(f"[yellow]{kind}:[/yellow] {escape(text)}")
    console.print(escape("results: " + "  ·  ".join(str(p) for p in paths.values())))
