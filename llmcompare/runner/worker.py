"""Worker entry point: ``python -m llmcompare.runner.worker JOB.json``. One backend, one process.

The parent (:mod:`llmcompare.runner.isolation`) starts one of these per backend, so an engine that crashes,
runs out of memory or hangs takes only its own process down. The worker dies with its parent: it asks
the kernel for SIGKILL when the parent goes (``PR_SET_PDEATHSIG``), and exits at once if the parent
is already gone, so a killed ``llmcompare`` never leaves a worker appending to the run.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

PARENT_ENV = "LLMCOMPARE_PARENT_PID"


def die_with_parent() -> None:
    """SIGKILL this process when the parent that started it dies (Linux), even by SIGKILL."""
    parent = os.environ.get(PARENT_ENV)
    if sys.platform.startswith("linux"):
        try:
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent and os.getppid() != int(parent):
        os._exit(3)  # the parent died before the request above took effect


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m llmcompare.runner.worker JOB.json", file=sys.stderr)
        return 2
    die_with_parent()
    from llmcompare.records import RecordWriter
    from llmcompare.records.rundir import RunDir
    from llmcompare.runner.session import BackendSession
    from llmcompare.scenarios import Context, Header, Job, driver_for

    job = Job.from_dict(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    run_dir = RunDir(job.run_dir)
    header = Header.read(run_dir)
    fidelity = driver_for("fidelity")
    if job.kind == "judge":  # the fidelity reference, under its own label so it is never taken for a backend
        assert header.spec.fidelity is not None and header.spec.fidelity.reference is not None
        request = replace(header.spec.fidelity.reference, label=job.label)
        steps = [fidelity.judge]
    else:
        request = header.spec.backend(job.label)
        steps = [driver_for(header.spec.scenario.kind).run]
        fid = header.spec.fidelity
        if fid is not None and fid.reference is not None and header.spec.scenario.kind == "latency":
            steps.append(fidelity.run)
    with RecordWriter(run_dir.requests) as writer:
        with BackendSession(request, header.model, device=header.spec.device,
                            trust_remote_code=header.spec.trust_remote_code, logs_dir=str(run_dir.logs),
                            writer=writer) as session:
            for step in steps:
                step(session, Context(job, header, request), writer)
    return 0 if session.record.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
