"""``requests.csv`` (one row per request), and every table a scenario's sections offer as CSV
(``levels.csv`` for a load run)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcompare.analysis.metrics import request_row

if TYPE_CHECKING:
    from llmcompare.analysis.result import RunResult
    from llmcompare.report.base import Output
    from llmcompare.report.sections import Section

CSV_FIELDS = [
    "backend", "stage", "request_id", "prompt_id", "repeat", "warmup", "input_tokens", "expected_output_tokens",
    "output_tokens", "length_ok", "count_source", "engine_prompt_tokens", "engine_output_tokens", "scheduled_at",
    "sent_at", "queue_ms", "ttft_ms", "tpot_ms", "e2e_ms", "tok_s", "finish_reason", "error_kind", "error", "token_ids",
]


def write_csv(result: RunResult, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in result.requests:
            row: dict[str, Any] = {k: getattr(r, k) for k in CSV_FIELDS if hasattr(r, k)}
            row.update(request_row(r))
            row["length_ok"] = r.length_ok
            row["queue_ms"] = r.queue_s * 1000.0
            row["token_ids"] = " ".join(map(str, r.token_ids))
            w.writerow(row)


def write_table(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow(row)


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
