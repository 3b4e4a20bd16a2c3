"""Several client processes for one load level, when one process cannot keep up (``--clients N``).

Only a backend reached over HTTP can be shared: its ``client_config()`` says how another process
reaches the same server (a backend name and options, e.g. ``("openai", {"url": ..., "model": ...})``).
The worker starts N − 1 client processes (``python -m llmcompare.scenarios.clients``), each opens its own
session to that server and sends its share of the level (see :class:`~.load.LevelRun`); the worker
drives share 0 itself. Every process runs its share of the warm-up, then clients report ``ready``; the
worker then broadcasts one common start time on the machine's monotonic clock, and every client streams its request records back as JSON lines on
stdout. The worker stays the only writer of ``requests.jsonl``. Client processes die with the worker.

The records of every client carry the worker session's id (with the client's index in the request id),
so the level is one set of requests whatever the number of processes that sent them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from llmcompare.backend import clock
from llmcompare.config.spec import BackendRequest
from llmcompare.plugins import get_registry
from llmcompare.records import RecordWriter, RequestRecord
from llmcompare.records.header import Header
from llmcompare.records.rundir import RunDir
from llmcompare.runner.job import Context, Job
from llmcompare.runner.parent import PARENT_ENV, die_with_parent
from llmcompare.runner.session import BackendSession
from llmcompare.scenarios.loadgen import Level, LevelRun, drive

READY_TIMEOUT_S = 300.0
START_MARGIN_S = 0.2


class ClientFailed(RuntimeError):
    pass


async def run_shared(session: BackendSession, ctx: Context, writer: RecordWriter, level: Level, index: int,
                     clients: int, on_measured: Callable[[], Awaitable[Any]] | None = None) -> LevelRun:
    """Drive ``level`` from this process and ``clients - 1`` others; return this process's run with
    every client's records merged in (for the level's stage record). ``on_measured`` is awaited once
    every process finished its warm-up, before the common start."""
    target = getattr(session.backend, "client_config", lambda: None)()
    if target is None:
        raise ClientFailed(f"backend {ctx.backend.label!r} cannot be shared by several client processes"
                           " (it runs in this process, or balances its replicas here); run it with --clients 1")
    name, options = target
    lr = LevelRun(session, ctx, level, index, writer.write, share=(0, clients), on_measured=on_measured)
    env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
    procs = []
    for j in range(1, clients):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmcompare.scenarios.clients", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env, limit=2**24)
        job = {"run_dir": ctx.job.run_dir, "label": ctx.backend.label, "name": name, "options": options,
               "level": {"stage": level.stage, "concurrency": level.concurrency, "rate": level.rate},
               "index": index, "share": [j, clients], "session": session.id}
        proc.stdin.write((json.dumps(job) + "\n").encode())
        await proc.stdin.drain()
        procs.append(proc)
    try:
        await lr.warm_up()  # every process warms up before the common start is set
        for proc in procs:
            while True:  # the client's warm-up records come first, then "ready"
                line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
                if line.startswith(b'{"backend"'):
                    writer.write_line(line.decode())
                    continue
                msg = json.loads(line or b"{}")
                if msg.get("type") == "ready":
                    break
                raise ClientFailed(f"a client process failed to start: {msg.get('error') or 'no answer'}")
        t0 = clock() + START_MARGIN_S
        for proc in procs:
            proc.stdin.write((json.dumps({"start": t0}) + "\n").encode())
            await proc.stdin.drain()
        lr.t0 = t0

        async def follow(proc) -> tuple[int, list[bytes]]:
            """Pass request records through to the file as they come (parsed only after the level, so
            the worker's loop stays free while it is measured); return the client's peak in flight."""
            peak, lines = 0, []
            async for line in proc.stdout:
                if line.startswith(b'{"backend"'):  # a request record, as RequestRecord.to_dict writes it
                    writer.write_line(line.decode())
                    lines.append(line)
                    continue
                msg = json.loads(line)
                if msg.get("type") == "done":
                    peak = int(msg.get("max_in_flight", 0))
                elif msg.get("type") == "error":
                    raise ClientFailed(f"a client process failed: {msg.get('error')}")
            return peak, lines

        results = await asyncio.gather(drive(lr), *(follow(p) for p in procs))
        for peak, lines in results[1:]:
            lr.max_in_flight += peak
            recs = [RequestRecord.from_dict(json.loads(line)) for line in lines]
            lr.records += recs
            lr.measured += [rec for rec in recs if not rec.warmup]
        return lr
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


def _client_main() -> int:
    """One client process: read the job, open a session, say ready, wait for the start, send, report."""
    die_with_parent()
    job = json.loads(sys.stdin.readline())
    out = sys.stdout

    def send(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg, separators=(",", ":")) + "\n")
        out.flush()

    header = Header.read(RunDir(job["run_dir"]))
    spec = get_registry().get(job["name"])
    request = BackendRequest(job["label"], job["name"], None, spec.validate_options(job["options"]))
    with BackendSession(request, header.model, device=header.spec.device, raise_errors=True) as session:
        session.id = job["session"]
        j, k = job["share"]
        ctx = Context(Job(job["run_dir"], job["label"]), header, header.spec.backend(job["label"]))
        lv = job["level"]
        level = Level(lv["stage"], lv["concurrency"], lv["rate"])

        def emit(rec: RequestRecord) -> None:
            rec.request_id = f"{rec.request_id}@{j}"
            send(rec.to_dict())

        lr = LevelRun(session, ctx, level, job["index"], emit, share=(j, k))
        session.run(lr.warm_up())
        send({"type": "ready"})
        lr.t0 = float(json.loads(sys.stdin.readline())["start"])
        session.run(drive(lr))
        send({"type": "done", "max_in_flight": lr.max_in_flight})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_client_main())
    except Exception as exc:  # tell the worker why, on the channel it reads
        sys.stdout.write(json.dumps({"type": "error", "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        sys.stdout.flush()
        sys.exit(1)
