"""One subprocess per backend, with a timeout. A crash, an OOM kill or a hang becomes a failed row.

The parent never imports an engine. It writes the job as JSON, starts ``python -m llmcompare.runner.worker``
(under the backend's own interpreter when it has one) in a new process group, and follows
``requests.jsonl`` while it runs (which also drives progress). If the worker ends without writing its
``backend`` record, the parent writes a failed one that says why: the signal, the exit status or the
timeout, with the last line the worker printed. The worker dies with the parent (see
:mod:`llmcompare.runner.worker`), and the parent kills the worker's whole group on every way out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from llmcompare.config.spec import BackendRequest
from llmcompare.errors import OutputError
from llmcompare.hardware import cuda_compat
from llmcompare.plugins import get_registry
from llmcompare.records import BackendRecord, RecordWriter, RequestRecord, StageRecord, parse
from llmcompare.records.rundir import RunDir
from llmcompare.limits import safe_text
from llmcompare.redact import redact_mapping, redact_text, secret_values
from llmcompare.runner.job import SECRETS_ENV, Job, secrets_env
from llmcompare.runner.parent import PARENT_ENV
from llmcompare.servers import PIDS_ENV, wait_for_guards

POLL_S = 0.2
GUARD_WAIT_S = 80.0
"""How long a killed worker's managed servers get to stop: their graceful stop (``stop_timeout_s``,
10 s by default) plus a cleanup command's 60 s (``docker rm -f``), with room to spare."""


class _Follower:
    """Reads records appended to ``requests.jsonl`` since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.buffer = ""

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
            self.offset = fh.tell()
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split("\n")
        out = []
        for line in lines:
            try:
                d = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(d, dict):
                out.append(d)
        return out


def run_isolated(
    run_dir: RunDir,
    job: Job,
    request: BackendRequest,
    timeout_s: float,
    *,
    python: str | None = None,
    device: str = "cpu",
    on_record: Callable[[RequestRecord | StageRecord], None] | None = None,
) -> BackendRecord:
    """Run ``job`` in a worker process; return its backend record (a failed one if it wrote none)."""
    job_path = run_dir.job(job.label)
    log_path = run_dir.log(job.label)
    try:
        job.write(job_path)
        run_dir.logs.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")
    except OSError as exc:  # disk full, read-only: one line, and what was written stays
        error = OutputError.from_os(exc, exc.filename or run_dir.path, f"--resume {run_dir}")
        if error is None:
            raise
        raise error from None
    follower = _Follower(run_dir.requests)
    status: BackendRecord | None = None

    def drain() -> None:
        nonlocal status
        for d in follower.read():
            if d.get("backend") != job.label:
                continue
            rec = parse(d)
            if isinstance(rec, BackendRecord):
                status = rec
            elif isinstance(rec, (RequestRecord, StageRecord)) and on_record is not None:
                on_record(rec)

    guards = job_path.with_suffix(".servers")  # the worker's managed servers' guard pids (llmcompare.servers)
    guards.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{PARENT_ENV: str(os.getpid()), PIDS_ENV: str(guards)})
    env.pop(SECRETS_ENV, None)
    env.update(secrets_env(job.label, request))  # this worker's credentials: in its environment, never on disk
    env, alias = cuda_compat.worker_env(env)  # opt-in (LLMCOMPARE_CUBLAS12_ALIAS); read at process start
    with log:
        if alias is not None:
            log.write((cuda_compat.describe(alias) + "\n").encode())
            log.flush()
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "llmcompare.runner.worker", str(job_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        timed_out = False
        try:
            while proc.poll() is None:
                drain()
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(POLL_S)
        finally:
            _kill_group(proc)  # timeout, Ctrl-C, or a normal end: nothing of the worker's group survives
            killed = wait_for_guards(guards, GUARD_WAIT_S)  # nor its servers, which stop gracefully first
            if killed:
                log.write(f"llmcompare: server guard(s) {killed} still running after {GUARD_WAIT_S:g} s: killed\n".encode())
    drain()
    if status is not None and not timed_out:
        return status
    if timed_out:
        why = f"timed out after {timeout_s:g} s (the worker was killed; finished requests are kept)"
    elif proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        hint = " (possibly out of memory)" if sig == "SIGKILL" else _crash_hint(request.name)
        why = f"worker process died from {sig}{hint}"
    else:
        why = f"worker process exited with status {proc.returncode}"
    last = redact_text(safe_text(_last_line(log_path), 300), secret_values(dict(request.options)))
    failed = BackendRecord(backend=job.label, name=request.name, variant=request.variant, status="failed",
                           error=f"{why}{': ' + last if last else ''}", options=redact_mapping(request.public_options()),
                           python=python, device=device)
    with RecordWriter(run_dir.requests) as writer:
        writer.write(failed)
    return failed


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _crash_hint(name: str) -> str:
    """The backend's ``crash_hint``, as a parenthesis, or nothing."""
    try:
        hint = get_registry().get(name).crash_hint
    except Exception:  # an unknown or broken plugin: the row keeps the signal alone
        return ""
    return f" ({hint})" if hint else ""


def _last_line(path: Path, limit: int = 300) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:limit] if lines else ""
