"""One load level's clients on Ray actors (``llmcompare load --clients N --executor ray [--address ADDR]``).

The multi-host form of :mod:`llmcompare.scenarios.clients`, with the same share logic: actor ``j`` of
``N`` is a :class:`~llmcompare.scenarios.loadgen.LevelRun` with ``share=(j, N)``, so it sends request
indices ``i ≡ j (mod N)`` of the one seeded open-loop schedule, or its share of the users and requests
of a closed-loop level. The worker drives no requests itself: it coordinates and writes.

1. The worker starts N actors once per backend session (spread over the cluster's nodes:
   ``scheduling_strategy="SPREAD"``); each opens its own :class:`~llmcompare.runner.session.BackendSession`
   to the same server (the backend's ``client_config()``, as for ``--clients N`` processes) from the run
   header, which travels with the actor, not through the file system.
2. Per level, each actor runs its share of the warm-up and returns the records: that is the **start
   barrier** (the worker waits for every actor).
3. The worker picks one start time, ``time.time() + START_MARGIN_S``, and sends it to every actor; each
   turns it into a reading of its *own* monotonic clock (``clock() + start - time.time()``), so the
   start does not depend on how long the message took to arrive. On one host the actors start within
   microseconds of each other; across hosts, within the hosts' NTP offset.
4. Each actor times its requests on its own monotonic clock (TTFT, ITL and e2e are differences of its
   readings; ``scheduled_at`` and ``sent_at`` are that clock plus the actor's own Unix offset) and
   keeps the raw records; the worker drains them while the level runs and appends every one to
   ``requests.jsonl`` (it stays the only writer). The level's figures are then computed from those raw
   records exactly as for one process (percentiles from the records, never from histograms).

Records carry the worker session's id, and the actor's index in the request id (``...:000012@1``), so
the level is one set of requests whatever the number of actors. A local Ray instance is started only
inside a loopback-only network namespace (:mod:`llmcompare.runner.netns`); ``--address`` joins a cluster
whose network is yours to secure, and every node needs llmcompare and the backend's client installed
(and the model's tokenizer, for a backend that needs it).

Ray is optional: it is imported inside functions here and nowhere else in the load scenario.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from llmcompare.backend import clock
from llmcompare.config.spec import BackendRequest
from llmcompare.errors import UserError
from llmcompare.plugins import get_registry
from llmcompare.records import RecordWriter, RequestRecord, StageRecord
from llmcompare.records.header import Header
from llmcompare.runner import tempdirs
from llmcompare.runner.job import Context, Job
from llmcompare.runner.netns import in_private_network
from llmcompare.runner.session import BackendSession
from llmcompare.scenarios.clients import ClientFailed
from llmcompare.scenarios.loadgen import Level, LevelRun, drive

INSTALL = "pip install 'llmcompare[ray]'"
#: Seconds between the start time the worker picks and its sending: the time the message takes to reach
#: every actor (a late actor starts at once, and its open-loop requests show the lateness as queueing).
START_MARGIN_S = 0.5
#: How often the worker collects the records the actors have finished.
DRAIN_S = 0.5
READY_TIMEOUT_S = 600.0


def check_installed() -> None:
    """One line with the install command when Ray is missing (nothing else of Ray is imported here)."""
    if importlib.util.find_spec("ray") is None:
        raise UserError(f"--executor ray needs Ray, which is not installed; install it with: {INSTALL}")


def check_network(address: str | None) -> None:
    """A local Ray instance listens on every interface: refuse to start one outside a loopback-only
    network namespace."""
    if address is None and not in_private_network():
        raise UserError(
            "--executor ray without --address starts a local Ray instance, whose servers listen on every"
            " interface: join a Ray cluster you run with --address ADDR, or run the command in a loopback-only"
            " network namespace: python -m llmcompare.runner.netns llmcompare load ... (servers it drives must"
            " run inside it too)")


# ---------------------------------------------------------------------------------------------
# The actor (one per share; runs on any node of the cluster)
# ---------------------------------------------------------------------------------------------
class ClientActor:
    """Share ``j`` of ``k`` of every level of one backend session, from any node."""

    def __init__(self, job: dict[str, Any]):
        self.notes: list[str] = []
        want = job.get("nice")
        if want is not None and os.getpriority(os.PRIO_PROCESS, 0) != want:
            # Ray runs its workers at niceness 15; a client that gets less CPU than the server it times
            # sends late. Run at the worker's niceness (lowering it needs root).
            try:
                os.setpriority(os.PRIO_PROCESS, 0, want)
            except OSError:
                self.notes.append(f"the actor ran at niceness {os.getpriority(os.PRIO_PROCESS, 0)} (Ray's"
                                  f" workers'), not {want}: start the nodes with RAY_worker_niceness={want}")
        self.header = Header.from_dict(job["header"])
        self.j, self.k = job["share"]
        spec = get_registry().get(job["name"])
        request = BackendRequest(job["label"], job["name"], None, spec.validate_options(job["options"]))
        self.session = BackendSession(request, self.header.model, device=self.header.spec.device,
                                      raise_errors=True)
        self.session.__enter__()
        self.session.id = job["session"]
        self.ctx = Context(Job(job["run_dir"], job["label"]), self.header, self.header.spec.backend(job["label"]))
        self.lr: LevelRun | None = None
        self._out: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def where(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "notes": self.notes}

    def _emit(self, rec: RequestRecord) -> None:
        rec.request_id = f"{rec.request_id}@{self.j}"
        d = rec.to_dict()
        with self._lock:
            self._out.append(d)

    def drain(self) -> list[dict[str, Any]]:
        """The records finished since the last call, raw (``RequestRecord.to_dict``)."""
        with self._lock:
            out, self._out = self._out, []
        return out

    def warm_up(self, level: dict[str, Any], index: int) -> list[dict[str, Any]]:
        """Set up the level, run this share of its warm-up, and return the warm-up records: ready."""
        lv = Level(level["stage"], level["concurrency"], level["rate"])
        self.lr = LevelRun(self.session, self.ctx, lv, index, self._emit, share=(self.j, self.k))
        self.session.run(self.lr.warm_up())
        return self.drain()

    def run(self, start_unix: float) -> dict[str, Any]:
        """Run this share of the level from ``start_unix`` (a Unix time, turned into this process's own
        monotonic clock) and return its figures; the records go through :meth:`drain`."""
        lr = self.lr
        assert lr is not None, "warm_up first"
        now = clock()
        lr.t0 = now + (start_unix - time.time())
        late = max(0.0, now - lr.t0)
        self.session.run(drive(lr))
        return {"max_in_flight": lr.max_in_flight, "measured": len(lr.measured), "late_start_s": late,
                "host": socket.gethostname()}

    def close(self) -> None:
        self.session.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------------
# The worker's side
# ---------------------------------------------------------------------------------------------
@dataclass
class _Pool:
    ray: Any
    session_id: str
    actors: list[Any]
    hosts: list[str] = field(default_factory=list)
    temp_dir: str | None = None


_POOL: dict[str, _Pool] = {}
_ATEXIT: list[bool] = []


def _init_ray(address: str | None, clients: int) -> tuple[Any, str | None]:
    check_installed()
    check_network(address)
    import ray

    if ray.is_initialized():
        return ray, None
    if address is None:
        tmp = str(tempdirs.make(tempdirs.RAY_PREFIX))
        os.environ.setdefault("RAY_worker_niceness", str(os.getpriority(os.PRIO_PROCESS, 0)))
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, num_cpus=max(clients, os.cpu_count() or 1), _temp_dir=tmp)
        return ray, tmp
    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return ray, None


def _pool(session: BackendSession, ctx: Context, clients: int, address: str | None) -> _Pool:
    """The actors of this session (started on its first level, kept for the others)."""
    pool = _POOL.get("current")
    if pool is not None and pool.session_id == session.id and len(pool.actors) == clients:
        return pool
    if pool is not None:
        _close()
    target = getattr(session.backend, "client_config", lambda: None)()
    if target is None:
        raise ClientFailed(f"backend {ctx.backend.label!r} cannot be driven from Ray actors (it runs in this process,"
                           " or balances its replicas here); run it with --executor local --clients 1")
    name, options = target
    ray, tmp = _init_ray(address, clients)
    remote = ray.remote(ClientActor)
    header = ctx.header.to_dict()
    actors = [remote.options(num_cpus=1, max_concurrency=4, scheduling_strategy="SPREAD").remote(
        {"header": header, "run_dir": str(ctx.job.run_dir), "label": ctx.backend.label, "name": name,
         "options": options, "share": [j, clients], "session": session.id,
         "nice": os.getpriority(os.PRIO_PROCESS, 0)}) for j in range(clients)]
    try:
        where = ray.get([a.where.remote() for a in actors], timeout=READY_TIMEOUT_S)
    except Exception as exc:
        for a in actors:
            ray.kill(a)
        raise ClientFailed(f"a Ray client actor failed to start: {_one_line(exc)}") from None
    for note in sorted({n for w in where for n in w["notes"]}):
        print(f"note: {note}", file=sys.stderr)
    pool = _Pool(ray, session.id, actors, [w["host"] for w in where], tmp)
    _POOL["current"] = pool
    if not _ATEXIT:
        atexit.register(_close)
        _ATEXIT.append(True)
    return pool


def _close() -> None:
    pool = _POOL.pop("current", None)
    if pool is None:
        return
    ray = pool.ray
    try:
        ray.get([a.close.remote() for a in pool.actors], timeout=30)
    except Exception:
        pass
    for a in pool.actors:
        try:
            ray.kill(a)
        except Exception:
            pass
    ray.shutdown(wait_for_processes=pool.temp_dir is not None)  # a local instance's writers are gone
    if pool.temp_dir:
        tempdirs.remove(pool.temp_dir)
        tempdirs.sweep(tempdirs.RAY_PREFIX)  # what a killed run left, if its owner outlived our start


def _one_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]


class RayLevelRun(LevelRun):
    """The worker's view of a level its actors drove: their records merged, its stage record."""

    hosts: list[str]

    def stage_record(self) -> StageRecord:
        rec = super().stage_record()
        rec.params["executor"] = "ray"
        rec.params["hosts"] = sorted(set(self.hosts))
        return rec


def run_level(session: BackendSession, ctx: Context, writer: RecordWriter, level: Level, index: int, clients: int,
              address: str | None, on_measured: Callable[[], Awaitable[Any]] | None = None) -> LevelRun:
    """Drive ``level`` from ``clients`` Ray actors; write every record; return the level (for its stage
    record) with every actor's measured records merged in. ``on_measured`` is awaited once every actor
    finished its warm-up, before the common start."""
    pool = _pool(session, ctx, clients, address)
    ray = pool.ray
    lr = RayLevelRun(session, ctx, level, index, writer.write, share=(0, clients))
    lr.hosts = list(pool.hosts)

    def write(dicts: list[dict[str, Any]]) -> None:
        for d in dicts:
            rec = RequestRecord.from_dict(d)
            writer.write(rec)
            if not rec.warmup:
                lr.measured.append(rec)

    lv = {"stage": level.stage, "concurrency": level.concurrency, "rate": level.rate}
    try:
        for recs in ray.get([a.warm_up.remote(lv, index) for a in pool.actors], timeout=READY_TIMEOUT_S):
            write(recs)  # every actor has warmed up: the start barrier
        if on_measured is not None:
            session.run(on_measured())
        start_unix = time.time() + START_MARGIN_S
        lr.start = start_unix - session.epoch_offset  # the same instant on this process's clock
        runs = [a.run.remote(start_unix) for a in pool.actors]
        pending = list(runs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=DRAIN_S)
            for recs in ray.get([a.drain.remote() for a in pool.actors]):
                write(recs)
        results = ray.get(runs)
        for recs in ray.get([a.drain.remote() for a in pool.actors]):
            write(recs)
    except ClientFailed:
        raise
    except Exception as exc:  # an actor (or its node) lost mid-level: the level is redone whole on resume
        _close()
        raise ClientFailed(f"a Ray client actor failed: {_one_line(exc)}") from None
    lr.max_in_flight = sum(int(r["max_in_flight"]) for r in results)
    lr.hosts = [r["host"] for r in results]
    mine = sum(int(r["measured"]) for r in results)
    if mine != len(lr.measured):
        raise ClientFailed(f"the Ray actors measured {mine} requests but {len(lr.measured)} records came back")
    return lr
