"""A run's results, rebuilt from ``requests.jsonl`` alone: :func:`load_result` → :class:`RunResult`.

Every report (console, JSON, CSV, Markdown, HTML) draws from this one object, so none of them
recomputes a figure or disagrees with another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import metrics
from .drivers import Header
from .errors import UserError
from .prompting import Prompt
from .records import RequestRecord, RunRecords, read_records
from .rundir import RunDir
from .spec import LoadScenario, RunSpec


@dataclass
class RunResult:
    run_dir: RunDir
    spec: RunSpec
    environment: dict[str, Any]
    prompts: list[Prompt]
    summaries: list[metrics.Summary]
    """One per backend and stage, in run order (one per backend for a single-stage run)."""
    comparisons: list[dict[str, Any]]
    requests: list[RequestRecord] = field(repr=False, default_factory=list)
    records: RunRecords | None = field(repr=False, default=None)
    levels: list[Any] = field(default_factory=list)
    """Load levels (:class:`llmcompare.levels.Level`), one per backend and level, for load runs."""
    analysis: dict[str, Any] = field(default_factory=dict)
    """Load runs: knee, SLO-limited level and the three recommendations per backend."""

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
        return {
            "llmcompare_version": self.environment.get("llmcompare"),
            "run_dir": str(self.run_dir),
            "spec": self.spec.to_dict(),
            "environment": self.environment,
            "prompts": [{"id": p.id, "category": p.category, "input_tokens": len(p.token_ids)} for p in self.prompts],
            "summaries": [s.to_dict() for s in self.summaries],
            "comparisons": self.comparisons,
            "levels": [lv.to_dict() for lv in self.levels],
            "analysis": self.analysis,
            "duplicates": [{"backend": r.backend, "stage": r.stage, "request_id": r.request_id} for r in self.duplicates],
        }


def load_result(run_dir: str | Path | RunDir) -> RunResult:
    """Rebuild every summary, level and comparison from ``requests.jsonl`` (the durable truth)."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    records = read_records(rd.requests)
    if records.run is None:
        if not rd.run_json.exists():
            raise UserError(f"{rd} holds no run record; pass the directory of a run")
    header = Header.from_dict(records.run) if records.run else Header.read(rd)
    spec = header.spec
    dup_count: dict[tuple[str, str], int] = {}
    for d in records.duplicates:
        dup_count[(d.backend, d.stage)] = dup_count.get((d.backend, d.stage), 0) + 1
    summaries = []
    levels: list[Any] = []
    analysis: dict[str, Any] = {}
    if isinstance(spec.scenario, LoadScenario):
        from . import levels as levels_mod

        levels = levels_mod.build_levels(spec, records)
        analysis = levels_mod.analyse(spec, levels)
        for label in spec.labels:
            summaries.append(metrics.summarize(label, [r for r in records.requests if r.stage.startswith("load")],
                                               records.backends, None, None,
                                               sum(v for (b, _), v in dup_count.items() if b == label)))
            summaries[-1].stage = "load"
    else:
        stage_names = [s.stage for s in header.stages]
        for name in stage_names:
            for label in spec.labels:
                summaries.append(metrics.summarize(label, records.requests, records.backends, name, records.stages,
                                                   dup_count.get((label, name), 0)))
        summaries.sort(key=lambda s: (spec.labels.index(s.backend), stage_names.index(s.stage)))
    comparisons = compare_summaries(spec.labels, records.requests, spec.reference,
                                    [s.stage for s in header.stages] if not levels else [])
    by_key = {(c["backend"], c.get("stage")): c for c in comparisons}
    for s in summaries:
        c = by_key.get((s.backend, s.stage))
        if c is not None:
            s.agreement = c.get("agreement")
    return RunResult(rd, spec, header.environment, header.prompts, summaries, comparisons, records.requests, records,
                     levels, analysis)


def compare_summaries(labels: list[str], requests: list[RequestRecord], reference: str | None,
                      stages: list[str]) -> list[dict[str, Any]]:
    """Each backend against the reference (default: the first one), stage by stage: ratios of medians
    with bootstrap CIs, and greedy-token agreement."""
    if len(labels) < 2:
        return []
    ref = reference or labels[0]
    out = []
    for stage in stages:
        by = {label: [r for r in requests if r.backend == label and r.stage == stage and not r.warmup
                      and r.error is None] for label in labels}

        def series(label: str, key: str) -> list[float]:
            return [v for r in by[label] if (v := metrics.request_row(r)[key]) is not None]

        for label in labels:
            if label == ref or not by[label] or not by[ref]:
                continue
            out.append({
                "backend": label,
                "reference": ref,
                "stage": stage,
                "tpot_ratio": metrics.bootstrap_ratio(series(ref, "tpot_ms"), series(label, "tpot_ms")),
                "ttft_ratio": metrics.bootstrap_ratio(series(ref, "ttft_ms"), series(label, "ttft_ms")),
                "e2e_ratio": metrics.bootstrap_ratio(series(ref, "e2e_ms"), series(label, "e2e_ms")),
                "agreement": metrics.agreement(by[ref], by[label]),
            })
    return out
