"""Run one cell: the llmcompare CLI in a subprocess, into an ordinary run directory.

``python -m llmcompare COMMAND ...argv -O CELL_DIR`` for a fresh cell, ``python -m llmcompare COMMAND
--resume CELL_DIR`` for one a killed driver left half-written (the CLI keeps its finished requests). The
subprocess asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``, set by a two-line
launcher before it execs the CLI), so a driver killed with ``kill -9`` never leaves a cell running on its
own: the CLI takes SIGTERM as Ctrl-C, stops its workers and servers, keeps what finished and releases
the run directory's lock. Its environment carries ``LLMCOMPARE_STUDY_CELL=<id>``.

The outcome is read from the run directory afterwards (``results.json``: every backend ``ok``, or the
failed rows' errors), never from the CLI's console output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmcompare.study.manifest import run_dir_locked

CELL_ENV = "LLMCOMPARE_STUDY_CELL"
#: The launcher: die with the parent (SIGTERM, so the CLI cleans up), then become the CLI.
LAUNCHER = (
    "import ctypes,os,signal,sys\n"
    "try:\n ctypes.CDLL(None,use_errno=True).prctl(1,signal.SIGTERM,0,0,0)\nexcept Exception:\n pass\n"
    "os.getppid()==int(sys.argv[1]) or os._exit(3)\n"
    "os.execv(sys.executable,[sys.executable,'-m','llmcompare',*sys.argv[2:]])\n"
)
LOCK_WAIT_S = 120.0


@dataclass
class Outcome:
    """How a cell's CLI run ended."""

    status: str                 # done, failed, interrupted
    error: str | None = None
    exit_code: int | None = None
    wall_s: float = 0.0
    cli_wall_s: float = 0.0     # the subprocess alone
    attempts: int = 1
    node: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_outcome(cell_dir: Path) -> tuple[str, str | None] | None:
    """``("done", None)`` when results.json says every backend ran, ``("failed", why)`` when one failed,
    None when there is no (readable) results.json."""
    p = cell_dir / "results.json"
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    summaries = data.get("summaries") or []
    if not summaries:
        return None
    bad = [s for s in summaries if s.get("status") != "ok"]
    if not bad:
        return "done", None
    return "failed", "; ".join(f"{s.get('backend')}: {s.get('error') or s.get('status')}" for s in bad)


def command_for(argv: list[str], cell_dir: Path) -> tuple[list[str], str]:
    """The CLI arguments for a cell (after ``python -m llmcompare``) and whether it is fresh or resumed.

    A directory with a ``requests.jsonl`` is resumed (its finished requests are kept); one without is
    empty of measurements (a driver killed before the CLI wrote its header) and is started afresh."""
    if (cell_dir / "requests.jsonl").exists() and (cell_dir / "run.json").exists():
        return [argv[0], "--resume", str(cell_dir), "-q"], "resume"
    if cell_dir.exists():
        shutil.rmtree(cell_dir)
    return [*argv, "-O", str(cell_dir)], "fresh"


def wait_unlocked(cell_dir: Path, timeout: float = LOCK_WAIT_S) -> bool:
    """Wait for a CLI that is still finishing this cell (its parent died) to release the run's lock."""
    deadline = time.monotonic() + timeout
    while run_dir_locked(cell_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


class CellProcess:
    """One CLI subprocess for one cell (local executor and Ray task alike)."""

    def __init__(self, cell_id: str, argv: list[str], cell_dir: Path, log_path: Path,
                 env: dict[str, str | None] | None = None, timeout_s: float | None = None):
        self.cell_id = cell_id
        self.argv = argv
        self.cell_dir = Path(cell_dir)
        self.log_path = Path(log_path)
        self.env = env or {}
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self.mode = "fresh"

    def run(self) -> Outcome:
        t0 = time.monotonic()
        if (self.cell_dir / ".lock").exists() and not wait_unlocked(self.cell_dir):
            return Outcome("failed", f"{self.cell_dir} is still locked by another process after {LOCK_WAIT_S:g} s",
                           wall_s=time.monotonic() - t0)
        args, self.mode = command_for(self.argv, self.cell_dir)
        self.cell_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for k, v in self.env.items():  # None: the variable is removed (one a Ray worker injected)
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        env[CELL_ENV] = self.cell_id
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {self.mode}: llmcompare {' '.join(args)}"
                      f"{' CUDA_VISIBLE_DEVICES=' + env['CUDA_VISIBLE_DEVICES'] if 'CUDA_VISIBLE_DEVICES' in self.env else ''}\n")
            log.flush()
            t1 = time.monotonic()
            self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(os.getpid()), *args], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            timed_out = False
            try:
                rc = self.proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                rc = self.stop()
            except BaseException:
                self.stop()
                raise
            cli_wall = time.monotonic() - t1
        return self._outcome(rc, timed_out, time.monotonic() - t0, cli_wall)

    def stop(self, grace_s: float = 100.0) -> int:
        """SIGTERM (the CLI stops its workers and keeps what finished), then SIGKILL after ``grace_s``."""
        self.stopping = True
        p = self.proc
        if p is None:
            return -1
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                return p.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                p.kill()
        return p.wait()

    def _outcome(self, rc: int, timed_out: bool, wall: float, cli_wall: float) -> Outcome:
        read = read_outcome(self.cell_dir)
        if timed_out:
            return Outcome("failed", f"timed out after {self.timeout_s:g} s (finished requests kept; rerun with"
                                     " study run --resume)", rc, wall, cli_wall)
        if self.stopping or rc in (130, -signal.SIGTERM, -signal.SIGINT):
            if read and read[0] == "done":
                return Outcome("done", None, rc, wall, cli_wall)
            return Outcome("interrupted", "interrupted; resumed by the next study run", rc, wall, cli_wall)
        if rc == 0 and read and read[0] == "done":
            return Outcome("done", None, rc, wall, cli_wall)
        if read and read[0] == "failed":
            return Outcome("failed", read[1], rc, wall, cli_wall)
        return Outcome("failed", last_error(self.log_path) or f"the CLI exited with status {rc}", rc, wall, cli_wall)


def last_error(log_path: Path) -> str | None:
    """The CLI's one-line error (``llmcompare: error: ...``) or the last line of the cell's log."""
    try:
        lines = [ln.rstrip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return None
    attempt = max((i for i, ln in enumerate(lines) if ln.startswith("== ")), default=-1)
    lines = [ln for ln in lines[attempt + 1:] if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("llmcompare: error:"):
            return ln[len("llmcompare: error:"):].strip()
    return lines[-1][-300:] if lines else None
