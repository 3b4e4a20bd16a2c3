"""A run's results, rebuilt from ``requests.jsonl`` alone: :func:`load_result` → :class:`RunResult`.

Every scenario of the run analyses the records into its own part (an
:class:`~llmcompare.scenarios.base.Analysis`: summaries for the common table and its own figures), so
this module never branches on a scenario's kind. Every report (console, JSON, CSV, Markdown, HTML)
draws from this one object, so none of them recomputes a figure or disagrees with another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmcompare.analysis import metrics
from llmcompare.config.spec import RunSpec
from llmcompare.errors import UserError
from llmcompare.models.prompting import Prompt
from llmcompare.plugins import get_registry
from llmcompare.records import RequestRecord, RunRecords, read_records
from llmcompare.records.header import Header
from llmcompare.records.rundir import RunDir

#: Keys of ``results.json`` that belong to the run itself; a scenario's figures may not take them.
_CORE_KEYS = ("llmcompare_version", "run_dir", "spec", "environment", "prompts", "summaries", "scenarios",
              "duplicates", "unreadable_lines")


@dataclass
class RunResult:
    run_dir: RunDir
    spec: RunSpec
    environment: dict[str, Any]
    prompts: list[Prompt]
    summaries: list[metrics.Summary]
    """Every scenario's summaries in run order (batch 1: one per backend and stage; load: one per backend)."""
    requests: list[RequestRecord] = field(repr=False, default_factory=list)
    records: RunRecords | None = field(repr=False, default=None)
    analyses: dict[str, Any] = field(default_factory=dict)
    """Scenario name -> its :class:`~llmcompare.scenarios.base.Analysis`. Each analysis' fields read as
    attributes of the result: ``result.levels`` (load), ``result.comparisons`` (batch 1),
    ``result.fidelity`` (fidelity), and a plugin scenario's own."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for analysis in self.__dict__.get("analyses", {}).values():
            if name in getattr(analysis, "__dataclass_fields__", {}) or hasattr(type(analysis), name):
                return getattr(analysis, name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r} (scenarios of this run:"
                             f" {', '.join(self.__dict__.get('analyses', {})) or 'none'})")

    def summary(self, label: str, stage: str | None = None) -> metrics.Summary:
        return next(s for s in self.summaries if s.backend == label and (stage is None or s.stage == stage))

    @property
    def failed(self) -> list[metrics.Summary]:
        return [s for s in self.summaries if s.status != "ok"]

    @property
    def stages(self) -> list[str]:
        seen: dict[str, None] = {}
        for s in self.summaries:
            seen.setdefault(s.stage)
        return list(seen)

    @property
    def duplicates(self) -> list[RequestRecord]:
        return self.records.duplicates if self.records else []

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "llmcompare_version": self.environment.get("llmcompare"),
            "run_dir": str(self.run_dir),
            "spec": self.spec.to_dict(),
            "environment": self.environment,
            "prompts": [{"id": p.id, "category": p.category, "input_tokens": len(p.token_ids)} for p in self.prompts],
            "summaries": [s.to_dict() for s in self.summaries],
            "scenarios": list(self.analyses),
        }
        for name, analysis in self.analyses.items():
            for key, value in analysis.to_dict().items():
                if key in _CORE_KEYS or key in out:
                    raise ValueError(f"scenario {name!r} reports {key!r}, which another part of results.json holds")
                out[key] = value
        out["duplicates"] = [{"backend": r.backend, "stage": r.stage, "request_id": r.request_id}
                             for r in self.duplicates]
        out["unreadable_lines"] = [{"line": n, "why": why} for n, why in (self.records.skipped if self.records else [])]
        return out


def load_result(run_dir: str | Path | RunDir, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> RunResult:
    """Rebuild every scenario's figures from ``requests.jsonl`` (the durable truth).

    ``overrides`` changes scenario settings for this reading only, by scenario name, e.g.
    ``{"fidelity": {"near_tie_margin": 1.0}}`` judges the fidelity pass at another margin."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    records = read_records(rd.requests)
    if records.run is None and not rd.run_json.exists():
        raise UserError(f"{rd} holds no run record; pass the directory of a run")
    header = Header.from_dict(records.run) if records.run else Header.read(rd)
    if overrides:
        configs = tuple(replace(c, **overrides[c.kind]) if c.kind in overrides else c for c in header.spec.scenarios)
        header.spec = replace(header.spec, scenarios=configs)
    registry = get_registry()
    analyses: dict[str, Any] = {}
    summaries: list[metrics.Summary] = []
    for config in header.spec.scenarios:
        analysis = registry.scenario(config.kind).analyse(config, header, records)
        analyses[config.kind] = analysis
        summaries += analysis.summaries
    return RunResult(rd, header.spec, header.environment, header.prompts, summaries, records.requests, records,
                     analyses)
