"""The Ray executor: each cell a Ray task; the driver stays the single truth of the study directory.

A task asks for its cell's resources (``num_gpus`` for GPU cells, and one unit of the custom resource
``llmcompare-hw-<hardware name>``, which a node declares to offer that hardware), runs the cell with the
normal CLI in a subprocess on its node, into a fresh temporary directory, and returns the finished run
directory as the bytes of a gzipped tar (bounded: ``max_bytes``). The driver unpacks it into
``cells/<id>/``. A worker or node lost mid-cell makes Ray run the task again (``max_retries``), in a new
temporary directory: the lost attempt's records are never mixed with the rerun's, because only a
completed attempt is sent back. A partial cell left by an interrupted local run is sent along as a tar
and resumed with the CLI's ``--resume``.

Without ``--address`` a local Ray instance is started. Ray's servers listen on every interface (their
bind address is not configurable), so ``llmcompare study run --executor ray`` first re-executes itself in
a private network namespace whose only interface is the loopback (:mod:`llmcompare.runner.netns`:
``unshare(CLONE_NEWNET)``, or with a user namespace when not root); nothing it starts can be reached from
outside. Cells there reach only
127.0.0.1 (models must be local files or cached). ``--address`` joins a cluster you run: its network
is yours to secure, and every node needs llmcompare (and the engines) installed.

Ray is optional: it is imported only here, inside functions.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import io
import logging
import os
import shutil
import socket
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmcompare.errors import UserError
from llmcompare.runner import tempdirs
from llmcompare.runner.netns import in_private_network, run_in_private_network
from llmcompare.study.cellrun import CellProcess, Outcome, read_outcome

INSTALL = "pip install 'llmcompare[ray]'"
#: Variables a Ray worker sets for its tasks that would change how an engine runs (OMP_NUM_THREADS=1 for
#: a task of one CPU): a cell gets the driver's value, or none.
RAY_INJECTED = ("OMP_NUM_THREADS", "PYTHONBREAKPOINT")
RESOURCE_PREFIX = "llmcompare-hw-"
#: A cell's directory on its node while it runs: ``<tmp>/llmcompare-cell-<id>-XXXX``.
CELL_PREFIX = "llmcompare-cell-"
CPU_SLOT = "llmcompare-cpu-slot"


def rerun_in_private_network(python_args: list[str]) -> int:
    """Run ``python PYTHON_ARGS`` in a loopback-only network namespace; return its exit status."""
    return run_in_private_network([sys.executable, *python_args])


def check_installed() -> None:
    if importlib.util.find_spec("ray") is None:
        raise UserError(f"--executor ray needs Ray, which is not installed; install it with: {INSTALL}")


def _tar_dir(path: Path, extra: dict[str, Path] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(str(path), arcname="run")
        for name, p in (extra or {}).items():
            if p.exists():
                tf.add(str(p), arcname=name)
    return buf.getvalue()


def _untar(data: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        tf.extractall(dest, filter="data")


def _count_attempt(token: str, cell_id: str) -> int:
    """Attempts of this cell seen on this node (a counter file under the temp dir, under a lock)."""
    d = Path(tempfile.gettempdir()) / "llmcompare-study-attempts"
    d.mkdir(exist_ok=True)
    with open(d / f"{token}-{cell_id}", "a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        n = int(fh.read().strip() or 0) + 1
        fh.seek(0)
        fh.truncate()
        fh.write(str(n))
    return n


def run_cell_task(payload: dict[str, Any], partial: bytes | None) -> dict[str, Any]:
    """The body of a cell's Ray task (also callable without Ray): run the cell in a fresh temporary
    directory and return the finished run directory as tar bytes."""
    cid = payload["id"]
    attempt = _count_attempt(payload["token"], cid)
    notes = []
    want = payload.get("nice")
    if want is not None and os.getpriority(os.PRIO_PROCESS, 0) != want:
        # Ray runs its workers at niceness 15: on a shared CPU the cell would get less of it than under
        # the local executor. The cell runs at the driver's niceness instead (lowering needs root).
        try:
            os.setpriority(os.PRIO_PROCESS, 0, want)
        except OSError:
            notes.append(f"the cell ran at niceness {os.getpriority(os.PRIO_PROCESS, 0)} (Ray's workers'), not"
                         f" {want}: start the nodes with RAY_worker_niceness={want}")
    # this cell's directories from attempts whose worker was lost are removed first
    base = tempdirs.make(f"{CELL_PREFIX}{cid}-")
    try:
        cell_dir = base / "run"
        if partial:
            _untar(partial, base)
        (base / "cell.log").write_text("".join(f"note: {n}\n" for n in notes), encoding="utf-8")
        proc = CellProcess(cid, payload["argv"], cell_dir, base / "cell.log", dict(payload.get("env") or {}),
                           payload.get("timeout_s"))
        out = proc.run()
        out.attempts = attempt
        try:
            import ray

            out.node = ray.util.get_node_ip_address()
        except Exception:
            out.node = socket.gethostname()
        data = _tar_dir(cell_dir, {"cell.log": base / "cell.log"}) if cell_dir.exists() else b""
        if len(data) > payload["max_bytes"]:
            return {"outcome": Outcome("failed", f"the run directory is {len(data) / 2**20:,.1f} MiB compressed, over"
                                                 f" the {payload['max_bytes'] / 2**20:,.0f} MiB a task may send back",
                                       out.exit_code, out.wall_s, out.cli_wall_s, attempt, out.node).to_dict(),
                    "tar": b"", "pid": os.getpid()}
        return {"outcome": out.to_dict(), "tar": data, "pid": os.getpid(), "mode": proc.mode}
    finally:
        shutil.rmtree(base, ignore_errors=True)


class ClusterDevices:
    """Which hardware a Ray cluster offers: its nodes' ``llmcompare-hw-<name>`` resources."""

    def __init__(self, resources: dict[str, float]):
        self.resources = resources
        self.gpus: list = []

    def present(self, hw, need: int | None = None) -> bool:
        if self.resources.get(RESOURCE_PREFIX + hw.name, 0) <= 0:
            return False
        return not hw.is_gpu or self.resources.get("GPU", 0) >= (need or hw.count)

    def matching(self, hw) -> list:
        return []


class RayExecutor:
    def __init__(self, study, host, directory: Path, events, address: str | None = None, retries: int = 3,
                 max_bytes: int = 512 * 2**20):
        check_installed()
        import ray

        self.ray = ray
        self.directory = Path(directory)
        self.events = events
        self.retries = retries
        self.max_bytes = max_bytes
        self.token = hashlib.sha256(str(self.directory.resolve()).encode()).hexdigest()[:10]
        self.local = address is None
        self.refs: dict[Any, Any] = {}
        if address is None and not in_private_network():
            raise UserError("a local Ray instance listens on every interface: start it through llmcompare study run"
                            " --executor ray (which runs it in a loopback-only network namespace), or pass --address")
        if address is None:
            resources = {}
            for name, hw in study.hardware.items():
                if hw.is_gpu:
                    n = len(host.matching(hw))
                    if n:
                        resources[RESOURCE_PREFIX + name] = float(n)
                elif hw.device == "cpu":
                    resources[RESOURCE_PREFIX + name] = 1.0
            resources[CPU_SLOT] = 1.0  # CPU cells one at a time on this host, as the local executor runs them
            self._tmp = str(tempdirs.make(tempdirs.RAY_PREFIX))
            os.environ.setdefault("RAY_worker_niceness", str(os.getpriority(os.PRIO_PROCESS, 0)))
            ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=max(4, os.cpu_count() or 1),
                     num_gpus=len(host.gpus), resources=resources, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, _temp_dir=self._tmp)
        else:
            self._tmp = None
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        self.remote = ray.remote(run_cell_task)

    def devices(self) -> ClusterDevices:
        return ClusterDevices(self.ray.cluster_resources())

    def close(self) -> None:
        try:
            self.ray.shutdown(wait_for_processes=self._tmp is not None)  # a local instance's writers are gone
        finally:
            if self._tmp:
                tempdirs.remove(self._tmp)
                tempdirs.sweep(CELL_PREFIX)  # cells of tasks the shutdown cut short
                tempdirs.sweep(tempdirs.RAY_PREFIX)  # and what a killed run left, if its owner outlived our start

    def run(self, jobs: list, started: Callable, finished: Callable) -> None:
        ray = self.ray
        pending: dict[Any, Any] = {}
        for job in jobs:
            e = job.entry
            partial = None
            if (job.cell_dir / "requests.jsonl").exists():
                partial = _tar_dir(job.cell_dir)
            payload = {"id": e["id"], "argv": e["argv"], "timeout_s": job.timeout_s, "max_bytes": self.max_bytes,
                       "token": self.token, "nice": os.getpriority(os.PRIO_PROCESS, 0),
                       "env": {k: os.environ.get(k) for k in RAY_INJECTED}}
            opts: dict[str, Any] = {"max_retries": self.retries, "num_cpus": 1,
                                    "resources": {RESOURCE_PREFIX + e["hardware"]: 1}}
            if e.get("gpus"):
                opts["num_gpus"] = int(e["gpus"])
            elif self.local:
                opts["resources"][CPU_SLOT] = 1
            ref = self.remote.options(**opts).remote(payload, partial)
            pending[ref] = job
            started(job, {"executor": "ray", "devices": None})
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    job = pending.pop(ref)
                    finished(job, self._collect(ref, job))
        except KeyboardInterrupt:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
            for job in pending.values():
                finished(job, Outcome("interrupted", "interrupted; resumed by the next study run"))
            raise

    def _collect(self, ref, job) -> Outcome:
        ray = self.ray
        try:
            res = ray.get(ref)
        except Exception as exc:  # a task that failed after its retries: a failed row
            line = str(exc).strip().splitlines()
            return Outcome("failed", f"Ray task failed after {self.retries} retries: {type(exc).__name__}:"
                                     f" {line[-1] if line else ''}"[:500])
        out = Outcome(**res["outcome"])
        if res.get("tar"):
            incoming = self.directory / "cells" / f".incoming-{job.entry['id']}"
            shutil.rmtree(incoming, ignore_errors=True)
            _untar(res["tar"], incoming)
            if job.cell_dir.exists():
                shutil.rmtree(job.cell_dir)
            os.replace(incoming / "run", job.cell_dir)
            log = incoming / "cell.log"
            if log.exists():
                job.log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(job.log_path, "a", encoding="utf-8") as fh:
                    fh.write(f"== attempt {out.attempts} on {out.node}\n" + log.read_text(encoding="utf-8",
                                                                                      errors="replace"))
            shutil.rmtree(incoming, ignore_errors=True)
            read = read_outcome(job.cell_dir)
            if out.status == "done" and read != ("done", None):
                out.status, out.error = "failed", "the run directory came back without a results.json that is ok"
        return out
