"""What one worker is asked to do (:class:`Job`), and what a scenario's step receives beside the
backend session (:class:`Context`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmcompare.config.spec import BackendRequest, RunSpec
from llmcompare.records.header import Header


SECRETS_ENV = "LLMCOMPARE_SECRET_OPTIONS"
"""The channel of a worker's secret options: JSON of ``{label: {key: value}}``, set by
:mod:`llmcompare.runner.isolation` in that worker's environment only and removed by the worker as it
starts (so nothing it starts inherits it). The run header and the job file hold these options
redacted (:class:`~llmcompare.config.spec.BackendRequest`), so a credential is never written."""


def secrets_env(label: str, request: BackendRequest) -> dict[str, str]:
    """The environment entry that hands ``request``'s secret options to its worker (none: empty)."""
    secrets = request.secret_options()
    return {SECRETS_ENV: json.dumps({label: secrets})} if secrets else {}


def take_secrets(label: str, environ: Mapping[str, str] | None = None) -> dict:
    """In the worker: the secret options its parent handed to ``label``, removed from the environment."""
    raw = (os.environ if environ is None else environ).get(SECRETS_ENV)
    os.environ.pop(SECRETS_ENV, None)
    if not raw:
        return {}
    try:
        secrets = json.loads(raw)
    except ValueError:
        return {}
    mine = secrets.get(label) if isinstance(secrets, dict) else None
    return dict(mine) if isinstance(mine, dict) else {}


@dataclass
class Job:
    """What one worker is asked to do; crosses the process boundary as JSON."""

    run_dir: str
    label: str
    done: set[tuple[str, str]] = field(default_factory=set)
    """``(stage, request_id)`` of requests already recorded (``--resume``); a load level is done as a
    whole, its stage name alone (request id ``"*"``)."""
    step: str = "run"
    """``run``: one of the run's backends, through every scenario of the run in order. Any other name:
    that step of :attr:`scenario` alone (the fidelity judge is the fidelity scenario's ``judge`` step)."""
    scenario: str | None = None
    """The scenario whose :attr:`step` the worker runs, when the step is not ``run``."""
    request: BackendRequest | None = None
    """The backend to load when it is not one of the run's backends (the fidelity reference, under its
    own label): None means ``spec.backend(label)``."""

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "label": self.label, "done": sorted(list(x) for x in self.done),
                "step": self.step, "scenario": self.scenario,
                "request": self.request.to_dict() if self.request else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        req = d.get("request")
        return cls(d["run_dir"], d["label"], {tuple(x) for x in d.get("done") or []}, d.get("step", "run"),
                   d.get("scenario"), BackendRequest.from_dict(req) if req else None)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()), encoding="utf-8")

    def is_done(self, stage: str, request_id: str = "*") -> bool:
        return (stage, request_id) in self.done


@dataclass
class Context:
    """What a scenario's step receives beside the session: the job, the header and this backend's request."""

    job: Job
    header: Header
    backend: BackendRequest

    @property
    def spec(self) -> RunSpec:
        return self.header.spec
