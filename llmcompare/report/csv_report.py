"""``requests.csv`` (one row per request), and every table a scenario's sections offer as CSV
(``levels.csv`` for a load run)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcompare.analysis.metrics import request_row
from llmcompare.records import RequestRecord, StageRecord
from llmcompare.sanitize import REPLACE, escape_controls

if TYPE_CHECKING:
    from llmcompare.analysis.result import RunResult
    from llmcompare.report.base import Output
    from llmcompare.report.sections import Section

CSV_FIELDS = [
    "backend", "stage", "request_id", "prompt_id", "repeat", "warmup", "input_tokens", "expected_output_tokens",
    "output_tokens", "length_ok", "count_source", "count_check", "engine_prompt_tokens", "engine_output_tokens",
    "scheduled_at", "sent_at", "queue_ms", "ttft_ms", "tpot_ms", "e2e_ms", "tok_s", "finish_reason", "error_kind",
    "error", "session", "superseded", "token_ids",
]
"""``count_check``: ``agree``, or ``disagree: WHY`` where the count's sources disagree (the request is
credited its verified tokens only), empty where nothing was cross-checked. ``session``: the worker run
that wrote the row. ``superseded``: true for a row a later attempt replaced, left out of every figure:
a load level's requests from an attempt that was interrupted and redone on ``--resume``, a request
recorded again (a failed try redone, a duplicate)."""


def count_check_cell(r: RequestRecord) -> str:
    check = r.count_check
    if not isinstance(check, dict):
        return ""
    verdict = str(check.get("verdict", ""))
    return f"{verdict}: {check['why']}" if check.get("why") else verdict


def superseded(records: list[RequestRecord], stages: list[StageRecord]) -> set[int]:
    """``id()`` of each request record a later attempt replaced: in a stage closed by a stage record
    (a load level), the records of any session but the last stage record's; elsewhere, each record of
    a request id other than the one the figures use (the first success, else the first record)."""
    final = {(s.backend, s.stage): s.session for s in stages}
    out: set[int] = set()
    chosen: dict[tuple, RequestRecord] = {}
    for r in records:
        session = final.get((r.backend, r.stage))
        if session is not None and r.session != session:
            out.add(id(r))
            continue
        if r.key not in chosen or (chosen[r.key].error is not None and r.error is None):
            if r.key in chosen:
                out.add(id(chosen[r.key]))
            chosen[r.key] = r
        else:
            out.add(id(r))
    return out


def csv_cell(value: Any) -> Any:
    """A cell: strings (from a server: an error, a finish reason) with control characters escaped."""
    return escape_controls(value, keep_newlines=False) if isinstance(value, str) else value


def write_csv(result: RunResult, path: Path) -> None:
    records = result.records
    replaced = superseded(result.requests, records.stages if records else [])
    with open(path, "w", newline="", encoding="utf-8", errors=REPLACE) as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in result.requests:
            row: dict[str, Any] = {k: getattr(r, k) for k in CSV_FIELDS if hasattr(r, k)}
            row.update(request_row(r))
            row["length_ok"] = r.length_ok
            row["queue_ms"] = r.queue_s * 1000.0
            row["count_check"] = count_check_cell(r)
            row["superseded"] = id(r) in replaced
            row["token_ids"] = " ".join(map(str, r.token_ids))
            w.writerow({k: csv_cell(v) for k, v in row.items()})


def write_table(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8", errors=REPLACE) as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: csv_cell(v) for k, v in row.items()})


class CsvReport:
    def write(self, result: RunResult, out: Output, sections: list[Section]) -> list[Path]:
        paths = [result.run_dir.requests_csv]
        write_csv(result, paths[0])
        for s in sections:
            for name, (fields, rows) in s.csv().items():
                path = result.run_dir.path / Path(name).name  # a plugin names a file, never a path
                write_table(path, fields, rows)
                paths.append(path)
        return paths
