"""The console: rich progress bars while running, and the comparison table at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..api import Progress as ProgressCallbacks
from .files import SYNTHETIC_AGREEMENT_NOTE, agreement_pct, fmt, mib, ratio

if TYPE_CHECKING:
    from ..api import RunResult
    from ..records import BackendRecord, RequestRecord


class RichProgress(ProgressCallbacks):
    """One bar per backend, advanced as records land in requests.jsonl."""

    def __init__(self, console: Console):
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

    def backend_started(self, label: str, total: int) -> None:
        self.tasks[label] = self.progress.add_task(escape(label), total=total, status="loading…")

    def request_done(self, label: str, record: RequestRecord) -> None:
        task = self.tasks[label]
        if record.warmup:
            self.progress.update(task, status="warming up")
            return
        status = "" if record.length_ok else f"[red]{escape(record.error or 'length mismatch')}"
        self.progress.update(task, advance=1, status=status)

    def backend_done(self, label: str, record: BackendRecord) -> None:
        status = "[green]done" if record.status == "ok" else f"[red]failed: {escape(record.error or '')}"
        self.progress.update(self.tasks[label], status=status)


def table(result: RunResult) -> Table:
    spec = result.spec
    t = Table(title=f"llmcompare · {result.environment.get('model', {}).get('name')} · {len(result.prompts)} prompts ×"
                    f" {spec['repeats']} · {spec['max_new_tokens']} new tokens · batch 1 · {spec['device']}")
    gpu = any(s.gpu_peak_bytes for s in result.summaries)
    cols = ["backend", "status", "n", "TTFT p50 ms", "TPOT p50 ms", "TPOT p90 ms", "e2e p50 ms", "tok/s",
            "load s", "peak RSS"] + (["GPU peak"] if gpu else []) + ["length ok", "agreement"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("backend", "status") else "right")
    for s in result.summaries:
        ok_len = s.n_length_ok
        t.add_row(
            escape(s.backend),
            "[green]ok" if s.status == "ok" else f"[red]failed[/red]: {escape(s.error or '')}",
            str(s.n_requests), fmt(s.ttft_ms["p50"]), fmt(s.tpot_ms["p50"], 2), fmt(s.tpot_ms["p90"], 2),
            fmt(s.e2e_ms["p50"]), fmt(s.throughput_tok_s), fmt(s.load_s, 2), mib(s.peak_rss_bytes),
            *([mib(s.gpu_peak_bytes)] if gpu else []),
            f"{ok_len}/{s.n_requests}" if ok_len == s.n_requests else f"[red]{ok_len}/{s.n_requests}",
            agreement_pct(s),
        )
    return t


def print_result(console: Console, result: RunResult, paths: dict) -> None:
    console.print(table(result))
    for c in result.comparisons:
        console.print(escape(f"  {c['backend']} vs {c['reference']}: TPOT {ratio(c['tpot_ratio'])}"))
    if result.comparisons and result.environment.get("model", {}).get("kind") == "synthetic":
        console.print(f"  note: {SYNTHETIC_AGREEMENT_NOTE}")
    for s in result.summaries:
        if s.n_length_mismatch:
            console.print(f"[yellow]warning:[/yellow] {escape(s.backend)}: {s.n_length_mismatch} request(s) did not produce"
                          f" exactly {spec_tokens(result)} tokens (flagged in the results, not averaged away)")
    console.print(escape(f"results: {paths['json']}  ·  {paths['csv']}  ·  {paths['markdown']}  ·  {result.run_dir / 'requests.jsonl'}"))


def spec_tokens(result: RunResult) -> int:
    return result.spec["max_new_tokens"]
