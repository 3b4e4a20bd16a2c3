"""``llmcompare study plan`` and ``study run``: plan the cells, run what is here, re-measure, report.

The driver is the single writer of the study directory::

    study.json        the manifest (atomically replaced; see manifest.py)
    study.yaml        the study file as given
    cells/<id>/       one ordinary llmcompare run directory per cell
    logs/<id>.log     each cell's CLI output, one "==" line per attempt
    study.md, study.html, cells.csv, plots/   the report (llmcompare study report DIR rebuilds it)

A run goes in phases: the matrix's cells (skipping finished ones and recorded failures, resuming
partial ones), then for load studies with an SLO up to ``confirm.rounds`` rounds of follow-up cells that
re-measure each deployment's highest level that meets the SLO, then the report. Ctrl-C or SIGTERM stops
the running cells (they keep their finished requests) and leaves the manifest consistent; kill -9 of
the driver takes its cells down with it (PR_SET_PDEATHSIG), and the next run resumes them.
"""

from __future__ import annotations

import dataclasses
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmcompare.errors import UserError
from llmcompare.study import analysis, rayexec, report
from llmcompare.study.cellrun import CellProcess, Outcome, read_outcome
from llmcompare.study.hardware import Hardware, HostDevices, detect
from llmcompare.study.manifest import FORMAT, DirLock, Manifest
from llmcompare.study.prune import Assessment, assess
from llmcompare.study.spec import (
    Cell,
    Study,
    cell_id,
    load_study,
    load_study_text,
    select,
    with_level,
    with_levels,
)

DEFAULT_ROOT = Path("llmcompare-results")


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
@dataclass
class Planned:
    cell: Cell
    assessment: Assessment

    @property
    def status(self) -> str:
        if self.assessment.pruned:
            return "pruned"
        if not self.assessment.present:
            return "not-run"
        return "pending"


def plan_cells(study: Study, host: HostDevices, no_prune: bool = False) -> list[Planned]:
    """Assess every cell; a cell that keeps only some of its levels gets an argv (and id) with those."""
    if no_prune:
        study.prune = False
    cache: dict = {}
    out = []
    for cell in study.cells:
        a = assess(study, cell, host, cache)
        if not a.pruned and cell.levels and a.kept_levels and a.kept_levels != cell.levels:
            cell = _with_levels(study, cell, a.kept_levels)
            a.cell_id = cell.id
        out.append(Planned(cell, a))
    return out


def _with_levels(study: Study, cell: Cell, levels: list[float]) -> Cell:
    argv = with_levels(cell.argv, cell.level_kind or "concurrency", levels)
    hw = study.hardware[cell.hardware]
    return dataclasses.replace(cell, argv=argv, levels=list(levels),
                               id=cell_id(argv, cell.model, hw, cell.repeat, cell.kind))


def entry_for(p: Planned, study: Study) -> dict[str, Any]:
    c, a = p.cell, p.assessment
    hw = study.hardware[c.hardware]
    return {**c.to_dict(), "status": p.status, "reasons": a.reasons, "notes": a.notes, "not_run": a.not_run,
            "plan": a.to_dict(), "price_per_hour": hw.price_per_hour, "error": None, "attempts": 0,
            "wall_s": None, "devices": None, "started": None, "ended": None}


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
@dataclass
class Job:
    entry: dict[str, Any]
    cell_dir: Path
    log_path: Path
    timeout_s: float | None
    hardware: dict[str, Any]


@dataclass
class RunOptions:
    output: str | None = None
    resume: str | None = None
    executor: str = "local"
    address: str | None = None
    no_prune: bool = False
    gpus: str | None = None
    ray_retries: int = 3
    ray_max_bytes: int = 512 * 2**20
    quiet: bool = False
    only: dict[str, set[str]] = field(default_factory=dict)
    """Run only the cells whose axes take these values (``--only AXIS=V1,V2``), and the steps they need."""


class Events:
    """What the driver tells the console: a line per cell start and end."""

    def __init__(self, out=None, quiet: bool = False):
        self.out = out or sys.stdout
        self.quiet = quiet
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        if not self.quiet:
            with self._lock:
                print(text, file=self.out, flush=True)


def study_dir_for(study: Study, opts: RunOptions) -> Path:
    if opts.resume:
        return Path(opts.resume)
    if opts.output:
        return Path(opts.output)
    return DEFAULT_ROOT / f"study-{study.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_for_resume(directory: Path) -> Study:
    src = directory / "study.yaml"
    if not src.exists():
        raise UserError(f"{directory} holds no study.yaml; pass the study file too: llmcompare study run STUDY.yaml"
                        f" --resume {directory}")
    return load_study_text(src.read_text(encoding="utf-8"), str(src))


def run_study(study_path: str | None, opts: RunOptions, events: Events | None = None) -> int:
    """``llmcompare study run``: returns 0 when every runnable cell finished, 1 when one failed, 130
    when interrupted."""
    events = events or Events(quiet=opts.quiet)
    if study_path is None and not opts.resume:
        raise UserError("pass a study file (llmcompare study run STUDY.yaml) or --resume DIR")
    if opts.executor not in ("local", "ray"):
        raise UserError(f"--executor {opts.executor!r}: use local or ray")
    if opts.address and opts.executor != "ray":
        raise UserError("--address joins a Ray cluster; pass --executor ray with it")
    study = load_study(study_path) if study_path else load_for_resume(Path(opts.resume))  # type: ignore[arg-type]
    directory = study_dir_for(study, opts)
    study = select(study, opts.only)
    if opts.executor == "ray":
        rayexec.check_installed()
        if opts.address is None and not rayexec.in_private_network():
            # a local Ray instance listens on every interface: run the whole study in a network namespace
            # whose only interface is the loopback (see rayexec)
            return rayexec.rerun_in_private_network(_rerun_args(study_path, opts, directory))
    host = detect(opts.gpus)
    with DirLock(directory):
        executor = _executor(opts, study, host, directory, events)
        interrupted = False
        prev = _sigterm_interrupts()
        try:
            where = executor.devices() if getattr(executor, "local", True) is False else host
            planned = plan_cells(study, where, opts.no_prune)
            manifest = _open_manifest(directory, study, study_path, planned, opts, events)
            try:
                blocked = _run_steps(manifest, directory, study, events, resume_failed=bool(opts.resume))
                _run_phase(manifest, directory, study, executor, events, resume_failed=bool(opts.resume),
                           blocked=blocked)
                if study.confirm["enabled"]:
                    for _ in range(study.confirm["rounds"]):
                        new = _confirm_cells(manifest, directory, study)
                        if not new:
                            break
                        _run_phase(manifest, directory, study, executor, events, resume_failed=bool(opts.resume),
                                   blocked=blocked)
            except KeyboardInterrupt:
                interrupted = True
        finally:
            executor.close()
            _restore_sigterm(prev)
        paths = report.write_all(directory, console=not opts.quiet)
        events.say("study: " + "  ·  ".join(str(p) for p in paths))
        if interrupted:
            print(f"llmcompare: study interrupted; finished cells are kept: continue with llmcompare study run"
                  f" --resume {directory}", file=sys.stderr)
            return 130
    failed = [c for c in manifest.cells if c["status"] == "failed"]
    steps_failed = [k for k, v in (manifest.data.get("steps") or {}).items() if v.get("status") == "failed"]
    return 1 if failed or steps_failed else 0


def _rerun_args(study_path: str | None, opts: RunOptions, directory: Path) -> list[str]:
    out = ["-m", "llmcompare.study", "run"]
    if study_path:
        out.append(str(study_path))
    out += ["--resume", str(directory)] if opts.resume else ["-O", str(directory)]
    if opts.gpus is not None:
        out += ["--gpus", opts.gpus]
    out += ["--executor", "ray", "--ray-retries", str(opts.ray_retries)]
    if opts.no_prune:
        out.append("--no-prune")
    if opts.quiet:
        out.append("-q")
    return out


def _open_manifest(directory: Path, study: Study, study_path: str | None, planned: list[Planned], opts: RunOptions,
                   events: Events) -> Manifest:
    existing: Manifest | None = None
    if (directory / "study.json").exists():
        existing = Manifest.read(directory)
        old_name = existing.data.get("study", {}).get("name")
        if old_name != study.name:
            raise UserError(f"{directory} holds study {old_name!r}, not {study.name!r}; pass another -O DIR")
        events.say(f"continuing study {study.name!r} in {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    if study_path:
        text = Path(study_path).read_text(encoding="utf-8")
        if not (directory / "study.yaml").exists() or (directory / "study.yaml").read_text(encoding="utf-8") != text:
            (directory / "study.yaml").write_text(text, encoding="utf-8")
    old = {c["id"]: c for c in existing.cells} if existing else {}
    cells = []
    for p in planned:
        entry = entry_for(p, study)
        prev = old.pop(p.cell.id, None)
        if prev is not None and entry["status"] == "pending":
            for k in ("status", "error", "attempts", "wall_s", "cli_wall_s", "devices", "started", "ended", "node",
                      "exit_code"):
                if k in prev:
                    entry[k] = prev[k]
        cells.append(entry)
    deployments = {c["deployment_id"] for c in cells}
    confirms = [c for c in old.values() if c.get("kind") == "confirm" and c["deployment_id"] in deployments]
    retired = [c for c in old.values() if c not in confirms]
    data = {"format": FORMAT, "study": study.resolved, "source": str(study_path or (directory / "study.yaml")),
            "executor": opts.executor, "host_gpus": [g.__dict__ for g in detect(opts.gpus).gpus],
            "cells": cells + confirms,
            "retired": (existing.data.get("retired", []) if existing else []) + [c["id"] for c in retired],
            "created": existing.data.get("created") if existing else time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    m = Manifest(directory, data)
    m.save()
    for c in cells:
        if c["status"] == "pruned":
            events.say(f"pruned   {c['id']}  {c['name']}: " + " | ".join(c["reasons"]))
        elif c["status"] == "not-run":
            events.say(f"not run  {c['id']}  {c['name']}: {c['not_run']}")
    return m


def _runnable(manifest: Manifest, directory: Path, resume_failed: bool) -> list[dict[str, Any]]:
    todo = []
    for c in manifest.cells:
        st = c["status"]
        cell_dir = directory / "cells" / c["id"]
        if st in ("pruned", "not-run"):
            continue
        if st == "done":
            if read_outcome(cell_dir) == ("done", None):
                continue
            st = "pending"  # its directory went missing: measure it
        if st == "failed" and not resume_failed:
            continue
        if st in ("running", "pending", "interrupted") and read_outcome(cell_dir) == ("done", None):
            manifest.update(c["id"], status="done", error=None)  # finished before its driver died
            continue
        todo.append(c)
    return todo


def _run_steps(manifest: Manifest, directory: Path, study: Study, events: Events, resume_failed: bool):
    """The study's steps (steps.py) that a runnable cell needs; returns a function naming the failed
    step a cell waits for (None: it may run)."""
    from llmcompare.study import steps

    if not study.steps:
        return lambda cell: None
    todo = _runnable(manifest, directory, resume_failed)

    def record(name: str, outcome: dict[str, Any]) -> None:
        data = dict(manifest.data.get("steps") or {})
        data[name] = outcome
        manifest.data["steps"] = data
        manifest.save()

    failed = steps.run_steps(study.steps, todo, directory / "logs", events.say, record)
    return lambda cell: steps.blocked_by(study.steps, failed, cell["backend"])


def _run_phase(manifest: Manifest, directory: Path, study: Study, executor, events: Events,
               resume_failed: bool, blocked=None) -> None:
    todo = _runnable(manifest, directory, resume_failed)
    if blocked is not None:
        waiting = [(c, blocked(c)) for c in todo]
        for c, step in waiting:
            if step:
                manifest.update(c["id"], error=f"waiting for step {step!r}, which did not finish; run the study again")
                events.say(f"waiting  {c['id']}  {c['name']}: step {step!r} did not finish")
        todo = [c for c, step in waiting if not step]
    if not todo:
        return
    jobs = [Job(c, directory / "cells" / c["id"], directory / "logs" / f"{c['id']}.log", study.timeout_s,
                study.hardware[c["hardware"]].to_dict()) for c in todo]

    def started(job: Job, info: dict[str, Any]) -> None:
        c = job.entry
        manifest.update(c["id"], status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        attempts=c.get("attempts", 0) + 1, **info)
        where = f" on GPUs {info['devices']}" if info.get("devices") else ""
        # a Ray task is handed over now and starts when the cluster has its resources
        verb = "queued" if info.get("executor") == "ray" else "start"
        events.say(f"{verb:<8} {c['id']}  {c['name']}{where}")

    def finished(job: Job, out: Outcome) -> None:
        c = job.entry
        status = "pending" if out.status == "interrupted" else out.status
        manifest.update(c["id"], status=status, error=out.error, exit_code=out.exit_code, wall_s=out.wall_s,
                        cli_wall_s=out.cli_wall_s, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        **({"node": out.node} if out.node else {}),
                        **({"ray_attempts": out.attempts} if out.node else {}))
        events.say(f"{out.status:<8} {c['id']}  {c['name']}  {out.wall_s:,.1f} s" + (f": {out.error}" if out.error else ""))

    executor.run(jobs, started, finished)


def _confirm_cells(manifest: Manifest, directory: Path, study: Study) -> list[dict[str, Any]]:
    """Follow-up cells: per load deployment, re-measure its highest level that meets the SLO (unless
    already re-measured). Deterministic from the finished cells, so a resumed study makes the same ones."""
    groups = analysis.build_groups(analysis.collect_points(manifest.cells, directory, study.slo), study.slo)
    new = []
    by_dep: dict[str, list[dict[str, Any]]] = {}
    for c in manifest.cells:
        by_dep.setdefault(c["deployment_id"], []).append(c)
    for dep, cells in by_dep.items():
        base = [c for c in cells if c.get("kind", "cell") == "cell" and c["status"] == "done" and c.get("level_kind")]
        if not base or any(c["status"] in ("pending", "running") for c in cells):
            continue
        rounds = sum(1 for c in cells if c.get("kind") == "confirm")
        if rounds >= study.confirm["rounds"]:
            continue
        target = analysis.confirm_target(groups, dep)
        if target is None:
            continue
        src = next((c for c in base if target.level in c["levels"]), base[0])
        argv = with_level(src["argv"], src["level_kind"], target.level, study.confirm.get("requests"))
        hw = study.hardware[src["hardware"]]
        cid = cell_id(argv, src["model"], hw, rounds, "confirm")
        if manifest.has(cid):
            continue
        entry = {**{k: src[k] for k in src}, "id": cid, "kind": "confirm", "repeat": rounds, "argv": argv,
                 "levels": [target.level], "confirm_of": dep, "status": "pending", "error": None, "attempts": 0,
                 "name": f"{src['deployment']} · re-measure {target.level_label}", "reasons": [], "started": None,
                 "ended": None, "wall_s": None}
        manifest.add(entry)
        new.append(entry)
    return new


def _executor(opts: RunOptions, study: Study, host: HostDevices, directory: Path, events: Events):
    if opts.executor == "ray":
        return rayexec.RayExecutor(study, host, directory, events, address=opts.address, retries=opts.ray_retries,
                           max_bytes=opts.ray_max_bytes)
    return LocalExecutor(host, events)


class _Interrupt(Exception):
    pass


#: How the driver was interrupted: "SIGTERM" (only the driver got it) or "SIGINT" (Ctrl-C at a terminal,
#: which its cells got too).
_INTERRUPT = {"by": "SIGINT"}


def _sigterm_interrupts():
    if threading.current_thread() is not threading.main_thread():
        return None
    _INTERRUPT["by"] = "SIGINT"

    def handler(signum, frame):
        _INTERRUPT["by"] = "SIGTERM"
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(prev) -> None:
    if prev is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, prev)


# ---------------------------------------------------------------------------------------------
# The local executor
# ---------------------------------------------------------------------------------------------
class LocalExecutor:
    """Cells one after another; on a host with GPUs, GPU cells side by side on disjoint
    ``CUDA_VISIBLE_DEVICES`` sets sized by each cell's GPU count. A CPU cell runs alone."""

    local = True

    def __init__(self, host: HostDevices, events: Events):
        self.host = host
        self.events = events
        self.running: dict[str, tuple[Job, CellProcess, threading.Thread, list[str]]] = {}

    def close(self) -> None:
        pass

    def run(self, jobs: list[Job], started: Callable, finished: Callable) -> None:
        pending = list(jobs)
        done_q: queue.Queue = queue.Queue()
        free = {g.id for g in self.host.gpus}
        order = [g.id for g in self.host.gpus]
        try:
            while pending or self.running:
                progressed = True
                while progressed:
                    progressed = False
                    for job in list(pending):
                        devices = self._fit(job, free, order)
                        if devices is None:
                            continue
                        pending.remove(job)
                        free -= set(devices)
                        self._start(job, devices, started, done_q)
                        progressed = True
                        if not devices:
                            break  # a CPU cell runs alone
                    if any(not d for _, _, _, d in self.running.values()):
                        break
                if not self.running:
                    if pending:  # nothing can ever fit (more GPUs than the host has): a failed row each
                        for job in pending:
                            finished(job, Outcome("failed", f"needs {job.entry['gpus']} GPUs; this host offers"
                                                            f" {len(self.host.gpus)}"))
                        pending.clear()
                    break
                while True:
                    try:
                        cid, out = done_q.get(timeout=0.5)
                        break
                    except queue.Empty:
                        continue
                job, proc, thread, devices = self.running.pop(cid)
                thread.join()
                free |= set(devices)
                finished(job, out)
        except KeyboardInterrupt:
            self._stop_all(done_q, finished)
            raise

    def _fit(self, job: Job, free: set[str], order: list[str]) -> list[str] | None:
        need = int(job.entry.get("gpus") or 0)
        if need == 0:
            return [] if not self.running else None
        if any(not d for _, _, _, d in self.running.values()):
            return None  # a CPU cell is running alone
        hw_name = job.hardware.get("accelerator")
        hw = Hardware.from_dict(job.hardware)
        kinds = {g.id for g in self.host.matching(hw)} if hw_name else set(order)
        avail = [g for g in order if g in free and g in kinds]
        return avail[:need] if len(avail) >= need else None

    def _start(self, job: Job, devices: list[str], started: Callable, done_q) -> None:
        env = {"CUDA_VISIBLE_DEVICES": ",".join(devices)} if devices else {}
        proc = CellProcess(job.entry["id"], job.entry["argv"], job.cell_dir, job.log_path, env, job.timeout_s)
        started(job, {"devices": ",".join(devices) or None, "executor": "local"})

        def body() -> None:
            try:
                out = proc.run()
            except BaseException as exc:  # reported as the cell's failure
                out = Outcome("failed", f"the driver could not run the cell: {exc}")
            done_q.put((job.entry["id"], out))

        t = threading.Thread(target=body, name=f"cell-{job.entry['id']}", daemon=True)
        self.running[job.entry["id"]] = (job, proc, t, devices)
        t.start()

    def _stop_all(self, done_q, finished: Callable) -> None:
        """Stop every running cell (they keep their finished requests) and record each as interrupted,
        or as what it reached if it finished meanwhile."""
        stoppers = []
        for job, proc, _, _ in list(self.running.values()):
            t = threading.Thread(target=_quiet_stop, args=(proc,), daemon=True)
            t.start()
            stoppers.append(t)
        for t in stoppers:
            t.join(timeout=130)
        results: dict[str, Outcome] = {}
        for _, (_, _, t, _) in list(self.running.items()):
            t.join(timeout=10)
        while not done_q.empty():
            k, o = done_q.get_nowait()
            results[k] = o
        for cid, (job, _, _, _) in list(self.running.items()):
            finished(job, results.get(cid) or Outcome("interrupted", "interrupted; resumed by the next study run"))
        self.running.clear()


def _quiet_stop(proc: CellProcess) -> None:
    try:
        proc.stopping = True
        if proc.proc is not None:
            try:  # Ctrl-C reached the cell too: give it a moment to stop on its own
                proc.proc.wait(timeout=5)
            except Exception:
                pass
            proc.stop(grace_s=100.0)
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------
# study plan
# ---------------------------------------------------------------------------------------------
def plan_study(study_path: str, gpus: str | None = None, no_prune: bool = False,
               only: dict[str, set[str]] | None = None) -> tuple[Study, list[Planned]]:
    study = select(load_study(study_path), only or {})
    return study, plan_cells(study, detect(gpus), no_prune)
