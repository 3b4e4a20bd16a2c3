"""Drivers (scenarios): what a worker does with one loaded backend.

A driver is one module with ``run(session, job, writer)``: it takes a :class:`~llmcompare.runner.session.
BackendSession`, sends requests on its schedule and appends a record for each one. It never loads or
unloads the backend (the session does) and never branches on a backend's name (it reads
capabilities). :data:`DRIVERS` maps a scenario kind to its module. A latency run's workers also run
the ``fidelity`` driver after the timed pass (when the spec has one), and one last worker, a job of
kind ``judge``, loads the fidelity reference and judges every backend's outputs
(:mod:`llmcompare.scenarios.fidelity`).

The worker receives a :class:`Job`: the run directory, the backend's label and the requests already
done. Everything else (the typed spec, the model, the prompts and stages) it reads from the run's
header, the same object the parent wrote, so no field is copied by hand on the way.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmcompare.config.spec import BackendRequest, RunSpec
from llmcompare.models import ResolvedModel
from llmcompare.models.prompting import Prompt
from llmcompare.records.rundir import RunDir

DRIVERS = {"latency": "llmcompare.scenarios.latency", "load": "llmcompare.scenarios.loadgen",
           "fidelity": "llmcompare.scenarios.fidelity"}


@dataclass(frozen=True)
class StagePlan:
    """A stage the parent planned: its name, the input length it stands for and its prompts."""

    stage: str
    input_tokens: int | None
    prompt_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "input_tokens": self.input_tokens, "prompt_ids": list(self.prompt_ids)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StagePlan:
        return cls(d["stage"], d.get("input_tokens"), tuple(d["prompt_ids"]))


@dataclass
class Header:
    """The run record: what the parent decided, read back by workers, resume and reports."""

    spec: RunSpec
    model: ResolvedModel
    environment: dict[str, Any]
    prompts: list[Prompt]
    stages: list[StagePlan]
    workload: dict[str, Any] = field(default_factory=dict)
    """Facts the load driver needs to make every request distinct: ``nonce_ids`` (ordinary token ids
    safe to prepend), ``vocab_ids`` (a range of ids for synthetic prompts), ``context_length``."""

    def to_dict(self) -> dict[str, Any]:
        return {"type": "run", "spec": self.spec.to_dict(), "model": self.model.to_dict(),
                "environment": self.environment, "prompts": [p.to_dict() for p in self.prompts],
                "stages": [s.to_dict() for s in self.stages], "workload": self.workload}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Header:
        prompts = [Prompt.from_dict(p) for p in d["prompts"]]
        stages = [StagePlan.from_dict(s) for s in d.get("stages") or []] or [
            StagePlan("latency", None, tuple(p.id for p in prompts))]
        return cls(RunSpec.from_dict(d["spec"]), ResolvedModel.from_dict(d["model"]), d.get("environment") or {},
                   prompts, stages, d.get("workload") or {})

    @classmethod
    def read(cls, run_dir: RunDir) -> Header:
        return cls.from_dict(json.loads(run_dir.run_json.read_text(encoding="utf-8")))

    def stage_prompts(self, plan: StagePlan) -> list[Prompt]:
        by_id = {p.id: p for p in self.prompts}
        return [by_id[i] for i in plan.prompt_ids]


@dataclass
class Job:
    """What one worker is asked to do; crosses the process boundary as JSON."""

    run_dir: str
    label: str
    done: set[tuple[str, str]] = field(default_factory=set)
    """``(stage, request_id)`` of requests already recorded (``--resume``); a load level is done as a
    whole, its stage name alone (request id ``"*"``)."""
    kind: str = "backend"
    """``backend``: one of the run's backends, its scenario (then the fidelity pass); ``judge``: the
    fidelity reference, whose label is ``judge:<reference label>``."""

    JUDGE_PREFIX = "judge:"

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "label": self.label, "done": sorted(list(x) for x in self.done),
                "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(d["run_dir"], d["label"], {tuple(x) for x in d.get("done") or []}, d.get("kind", "backend"))

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()), encoding="utf-8")

    def is_done(self, stage: str, request_id: str = "*") -> bool:
        return (stage, request_id) in self.done


@dataclass
class Context:
    """What a driver receives beside the session: the job, the header and this backend's request."""

    job: Job
    header: Header
    backend: BackendRequest

    @property
    def spec(self) -> RunSpec:
        return self.header.spec


def driver_for(kind: str):
    return importlib.import_module(DRIVERS[kind])
