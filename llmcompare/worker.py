"""Worker entry point: ``python -m llmcompare.worker JOB.json``. One backend, one process.

The parent (:mod:`llmcompare.isolation`) starts one of these per backend, so an engine that crashes,
runs out of memory or hangs takes only its own process down.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .records import REQUESTS_FILE, RecordWriter
from .runner import Job, run_job


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m llmcompare.worker JOB.json", file=sys.stderr)
        return 2
    job = Job(**json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    with RecordWriter(Path(job.run_dir) / REQUESTS_FILE) as writer:
        record = run_job(job, writer)
    return 0 if record.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
