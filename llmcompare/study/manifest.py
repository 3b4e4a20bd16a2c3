"""``study.json``: the study's manifest, the driver's single truth about its cells.

It holds the study file's resolved content and, per cell, its id, argv, where it runs and its status:

* ``pending``: not started;
* ``running``: a driver started it (if that driver is gone, its directory is resumed with the CLI's
  ``--resume``, which keeps every finished request);
* ``done``: ``results.json`` says every backend ran;
* ``failed``: the CLI said why (a failed backend, a bad argument, a timeout); a row with its error,
  rerun only on ``study run --resume``;
* ``pruned``: planning says it cannot fit or cannot meet the SLO (with the arithmetic);
* ``not-run``: its hardware is not here (planned and estimated only).

The file is replaced atomically (written beside, fsynced, renamed), so a driver killed at any moment
leaves either the old manifest or the new one, never half of one. A study directory is locked
(``flock`` on ``.study.lock``) by the driver that runs it.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from llmcompare.errors import UserError

FORMAT = 1
STATUSES = ("pending", "running", "done", "failed", "pruned", "not-run")


class StudyLocked(UserError):
    pass


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # the rename itself, durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class Manifest:
    """``study.json`` in memory; every change is written through at once (thread-safe)."""

    def __init__(self, directory: str | os.PathLike, data: dict[str, Any]):
        self.dir = Path(directory)
        self.data = data
        self._lock = threading.RLock()

    @property
    def path(self) -> Path:
        return self.dir / "study.json"

    @classmethod
    def read(cls, directory: str | os.PathLike) -> Manifest:
        d = Path(directory)
        p = d / "study.json"
        if not p.exists():
            raise UserError(f"{d} holds no study.json; pass the directory of a study (llmcompare study run writes one)")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{p} is not readable JSON ({exc}); it is written atomically, so this file was edited"
                            " by hand or the disk failed") from None
        if data.get("format") != FORMAT:
            raise UserError(f"{p} is a study manifest of format {data.get('format')!r}; this llmcompare reads {FORMAT}")
        return cls(d, data)

    @property
    def cells(self) -> list[dict[str, Any]]:
        return self.data["cells"]

    def cell(self, cell_id: str) -> dict[str, Any]:
        for c in self.cells:
            if c["id"] == cell_id:
                return c
        raise KeyError(cell_id)

    def has(self, cell_id: str) -> bool:
        return any(c["id"] == cell_id for c in self.cells)

    def save(self) -> None:
        with self._lock:
            self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            write_json_atomic(self.path, self.data)

    def update(self, cell_id: str, **changes: Any) -> None:
        with self._lock:
            self.cell(cell_id).update(changes)
            self.save()

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if not self.has(entry["id"]):
                self.cells.append(entry)
                self.save()


class DirLock:
    """An exclusive ``flock`` on ``DIR/.study.lock`` for as long as a driver runs the study."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self._fh = None

    def __enter__(self) -> DirLock:
        self.dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.dir / ".study.lock", "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise StudyLocked(f"{self.dir} is in use by {holder}; wait for it or stop it, then"
                              f" llmcompare study run --resume {self.dir}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def run_dir_locked(cell_dir: Path) -> bool:
    """Whether a process holds the llmcompare run directory's lock (a CLI still finishing a cell)."""
    lock = cell_dir / ".lock"
    if not lock.exists():
        return False
    with open(lock, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False
