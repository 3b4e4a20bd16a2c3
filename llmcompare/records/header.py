"""The run header: what the parent decided before any backend ran (spec, model, environment, prompts,
stages, workload facts). Written to ``run.json`` and as the first record of ``requests.jsonl``; read
back by every worker, by ``--resume`` and by the reports, so no field is copied by hand on the way."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmcompare.config.spec import RunSpec
from llmcompare.models import ResolvedModel
from llmcompare.models.prompting import Prompt
from llmcompare.records.rundir import RunDir


def scenario_of_stage(stage: str) -> str:
    """The scenario a stage belongs to: stages are named ``SCENARIO`` or ``SCENARIO:detail``
    (``load:c=4`` -> ``load``)."""
    return stage.partition(":")[0]


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
    """Facts the scenarios planned for the workers: e.g. ``nonce_ids`` (ordinary token ids safe to
    prepend), ``vocab_size``, ``context_length``, and each scenario's own keys."""

    def to_dict(self) -> dict[str, Any]:
        return {"type": "run", "spec": self.spec.to_dict(), "model": self.model.to_dict(),
                "environment": self.environment, "prompts": [p.to_dict() for p in self.prompts],
                "stages": [s.to_dict() for s in self.stages], "workload": self.workload}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Header:
        prompts = [Prompt.from_dict(p) for p in d["prompts"]]
        if "stages" in d:
            stages = [StagePlan.from_dict(s) for s in d["stages"]]
        else:  # a run of llmcompare 0.1's first release: batch 1 over the prompts, one stage
            stages = [StagePlan("latency", None, tuple(p.id for p in prompts))]
        return cls(RunSpec.from_dict(d["spec"]), ResolvedModel.from_dict(d["model"]), d.get("environment") or {},
                   prompts, stages, d.get("workload") or {})

    @classmethod
    def read(cls, run_dir: RunDir) -> Header:
        return cls.from_dict(json.loads(run_dir.run_json.read_text(encoding="utf-8")))

    def stage_prompts(self, plan: StagePlan) -> list[Prompt]:
        by_id = {p.id: p for p in self.prompts}
        return [by_id[i] for i in plan.prompt_ids]
