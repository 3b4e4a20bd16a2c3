"""The durable truth of a run: ``requests.jsonl``, one JSON object per line, appended as work finishes.

Three record types share the file:

* ``request``: one generation (prompt id, repeat, warm-up flag, token ids, token timestamps, counts);
* ``backend``: one per worker run of a backend (status, error, load time, memory, versions);
* ``run``: written once by the parent with the spec and the environment.

Every number in a report can be recomputed from this file. A run that was killed half-way leaves at
worst one truncated last line, which :func:`read_records` skips.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REQUESTS_FILE = "requests.jsonl"


@dataclass
class RequestRecord:
    backend: str
    prompt_id: str
    repeat: int
    warmup: bool
    input_tokens: int
    expected_output_tokens: int
    output_tokens: int
    ttft_s: float | None
    e2e_s: float | None
    token_times_s: list[float] = field(default_factory=list)
    """Seconds from hand-over to each token's arrival; tokens of one chunk share a value."""
    token_ids: list[int] = field(default_factory=list)
    engine_prompt_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    type: str = "request"

    @property
    def length_ok(self) -> bool:
        return self.error is None and self.output_tokens == self.expected_output_tokens

    @property
    def key(self) -> tuple[str, str, int, bool]:
        return (self.backend, self.prompt_id, self.repeat, self.warmup)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["length_ok"] = self.length_ok
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestRecord:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)


@dataclass
class BackendRecord:
    backend: str
    name: str
    variant: str | None
    status: str  # "ok" | "failed"
    error: str | None = None
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)
    load_s: float | None = None
    measured_wall_s: float = 0.0
    """Wall time of this worker's measured (non-warm-up) requests, first hand-over to last token."""
    peak_rss_bytes: int | None = None
    rss_after_load_bytes: int | None = None
    gpu_peak_bytes: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    type: str = "backend"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackendRecord:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)


class RecordWriter:
    """Appends records and flushes each one at once, so a crash loses nothing that finished."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        if self._ends_mid_line():
            self._fh.write("\n")  # a writer killed mid-line: start on a fresh line, lose nothing after
            self._fh.flush()

    def _ends_mid_line(self) -> bool:
        if self.path.stat().st_size == 0:
            return False
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"

    def write(self, record: RequestRecord | BackendRecord | dict[str, Any]) -> None:
        data = record if isinstance(record, dict) else record.to_dict()
        self._fh.write(json.dumps(data, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_raw(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return
    with open(p, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash


def read_records(path: str | os.PathLike) -> tuple[list[RequestRecord], list[BackendRecord], list[dict[str, Any]]]:
    """All request, backend and run records in file order."""
    reqs, backs, runs = [], [], []
    for d in iter_raw(path):
        kind = d.get("type")
        if kind == "request":
            reqs.append(RequestRecord.from_dict(d))
        elif kind == "backend":
            backs.append(BackendRecord.from_dict(d))
        elif kind == "run":
            runs.append(d)
    return reqs, backs, runs
