"""The run directory: the one place that knows its paths, and its lock.

Everything a run writes lives under one directory::

    requests.jsonl        the durable truth (run, request, stage and backend records)
    run.json              the run record on its own (what --resume reads)
    results.json          summaries, levels, comparisons, environment
    requests.csv          one row per request
    levels.csv            one row per backend x load level
    summary.md            the Markdown report
    report.html           the self-contained HTML report, with plots/*.png beside it
    jobs/<label>.json     what each worker was asked to do
    logs/<label>.log      each worker's output (and a managed server's, <label>.server.log)
    .lock                 held by the process that runs it

A process that writes the run holds an exclusive ``flock`` on ``.lock`` for as long as it runs, so two
processes never write one run, and ``--resume`` of a run that a live process holds is refused.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from llmcompare.errors import UserError


def safe_name(label: str) -> str:
    """A label as a file name: ``transformers:fp16@static`` -> ``transformers_fp16@static``."""
    return re.sub(r"[^\w@.=-]", "_", label)


class RunDirLocked(UserError):
    pass


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fh = None

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    def __str__(self) -> str:
        return str(self.path)

    # ---- the files ----
    @property
    def requests(self) -> Path:
        return self.path / "requests.jsonl"

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def results_json(self) -> Path:
        return self.path / "results.json"

    @property
    def requests_csv(self) -> Path:
        return self.path / "requests.csv"

    @property
    def levels_csv(self) -> Path:
        return self.path / "levels.csv"

    @property
    def markdown(self) -> Path:
        return self.path / "summary.md"

    @property
    def html(self) -> Path:
        return self.path / "report.html"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def job(self, label: str) -> Path:
        return self.path / "jobs" / f"{safe_name(label)}.json"

    def log(self, label: str) -> Path:
        return self.logs / f"{safe_name(label)}.log"

    def exists(self) -> bool:
        return self.requests.exists()

    # ---- the lock ----
    def check_writable(self) -> None:
        """Before a run: refuse, in one line, an output path that cannot become a run directory (a
        file, a path under a file, a place this user cannot write), before anything is planned."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path} is a file, not a directory; pass --output a new directory for the run")
        parent = self.path
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise UserError(f"cannot create the run directory {self.path}: {parent} is a file, not a directory;"
                            " pass --output a directory you can write")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"cannot create the run directory {self.path}: {parent} is not writable;"
                            " pass --output a directory you can write")

    def lock(self) -> RunDir:
        """Take the run's lock or raise a one-line error naming the holder."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fh = open(self.path / ".lock", "a+", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot create the run directory {self.path}: {exc.strerror or exc};"
                            " pass --output a directory you can write") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RunDirLocked(
                f"{self.path} is in use by {holder}; wait for it to finish or stop it, then --resume {self.path}"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lock_fh = fh
        return self

    def unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> RunDir:
        return self.lock()

    def __exit__(self, *exc: object) -> None:
        self.unlock()
