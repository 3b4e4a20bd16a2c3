"""Worker entry point: ``python -m llmcompare.runner.worker JOB.json``. One backend, one process.

The parent (:mod:`llmcompare.runner.isolation`) starts one of these per backend, so an engine that
crashes, runs out of memory or hangs takes only its own process down. The worker dies with its parent
(:func:`llmcompare.runner.parent.die_with_parent`), so a killed ``llmcompare`` never leaves a worker
appending to the run.

It loads the backend once (:class:`~llmcompare.runner.session.BackendSession`) and hands it to each
scenario of the run in order (``run``), or to one named step of one scenario (the fidelity judge).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llmcompare.plugins import get_registry
from llmcompare.records import BackendRecord, RecordWriter
from llmcompare.records.header import Header
from llmcompare.records.rundir import RunDir
from llmcompare.runner.job import Context, Job, take_secrets
from llmcompare.runner.parent import PARENT_ENV, die_with_parent
from llmcompare.runner.session import BackendSession

__all__ = ["PARENT_ENV", "die_with_parent", "main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m llmcompare.runner.worker JOB.json", file=sys.stderr)
        return 2
    die_with_parent()
    job = Job.from_dict(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    run_dir = RunDir(job.run_dir)
    header = Header.read(run_dir)
    registry = get_registry()
    request = (job.request or header.spec.backend(job.label)).with_secrets(take_secrets(job.label))
    if request.withheld:  # the parent checks this before it starts a worker (api.resume): a bug if seen here
        with RecordWriter(run_dir.requests) as writer:
            writer.write(BackendRecord(backend=job.label, name=request.name, variant=request.variant, status="failed",
                                       error=f"the options {', '.join(request.withheld)} held credentials, which are"
                                             " never written, and none were handed to this worker; pass them again"
                                             " with -o", options=request.public_options(), device=header.spec.device))
        return 1
    if job.step == "run":
        steps = [(registry.scenario(c.kind).run, c) for c in header.spec.scenarios]
    else:
        scenario = registry.scenario(job.scenario)
        steps = [(scenario.steps()[job.step], header.spec.config(job.scenario))]
    with RecordWriter(run_dir.requests) as writer:
        with BackendSession(request, header.model, device=header.spec.device,
                            trust_remote_code=header.spec.trust_remote_code, logs_dir=str(run_dir.logs),
                            writer=writer, prefix_cache=bool(header.workload.get("prefix_cache"))) as session:
            ctx = Context(job, header, request)
            for step, config in steps:
                step(config, session, ctx, writer)
    return 0 if session.record.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
