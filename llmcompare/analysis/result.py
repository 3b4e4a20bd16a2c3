"""A run's results, rebuilt from ``requests.jsonl`` alone: :func:`load_result` → :class:`RunResult`.

Every report (console, JSON, CSV, Markdown, HTML) draws from this one object, so none of them
recomputes a figure or disagrees with another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmcompare.analysis import metrics, statistics
from llmcompare.config.spec import LoadScenario, RunSpec
from llmcompare.errors import UserError
from llmcompare.models.prompting import Prompt
from llmcompare.records import RequestRecord, RunRecords, read_records
from llmcompare.records.rundir import RunDir
from llmcompare.scenarios import Header


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
    """Load levels (:class:`llmcompare.analysis.levels.Level`), one per backend and level, for load runs."""
    analysis: dict[str, Any] = field(default_factory=dict)
    """Load runs: knee, SLO-limited level and the three recommendations per backend."""
    fidelity: list[Any] = field(default_factory=list)
    """Latency runs with the fidelity pass: one :class:`llmcompare.analysis.fidelity.FidelitySummary` per backend."""
    fidelity_reference_perplexity: float | None = None
    prompts_per_stage: int | None = None
    """How many prompts each timed stage sends (the fidelity pass may add the uncut prompts)."""

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
            "fidelity": {"spec": self.spec.fidelity.to_dict() if self.spec.fidelity else None,
                         "reference_perplexity": self.fidelity_reference_perplexity,
                         "backends": [f.to_dict() for f in self.fidelity]},
            "duplicates": [{"backend": r.backend, "stage": r.stage, "request_id": r.request_id} for r in self.duplicates],
        }


def load_result(run_dir: str | Path | RunDir, near_tie_margin: float | None = None) -> RunResult:
    """Rebuild every summary, level and comparison from ``requests.jsonl`` (the durable truth).
    ``near_tie_margin`` judges the fidelity pass at another margin than the run's."""
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
        from llmcompare.analysis import levels as levels_mod

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
    comparisons = compare_summaries(spec.labels, records.requests, spec.baseline,
                                    [s.stage for s in header.stages] if not levels else [])
    by_key = {(c["backend"], c.get("stage")): c for c in comparisons}
    for s in summaries:
        c = by_key.get((s.backend, s.stage))
        if c is not None:
            s.agreement = c.get("agreement")
    fid, ref_ppl = [], None
    if spec.fidelity is not None and not levels:
        from dataclasses import replace

        from llmcompare.analysis import fidelity

        if near_tie_margin is not None:  # another margin, applied to the same raw facts
            spec = replace(spec, fidelity=replace(spec.fidelity, near_tie_margin=near_tie_margin))
        fid = fidelity.summarize(records, spec.fidelity, spec.labels)
        ref_ppl = fidelity.reference_perplexity(records, spec.fidelity)
    result = RunResult(rd, spec, header.environment, header.prompts, summaries, comparisons, records.requests, records,
                       levels, analysis, fid, ref_ppl,
                       len(header.stages[0].prompt_ids) if header.stages else len(header.prompts))
    from llmcompare.hardware import roofline

    roofline.annotate(result)  # % of the decode floor, for CUDA runs whose environment has a bandwidth
    return result


def compare_summaries(labels: list[str], requests: list[RequestRecord], reference: str | None,
                      stages: list[str]) -> list[dict[str, Any]]:
    """Each backend against the reference (default: the first one), stage by stage, one dict each:

    * ``tpot_ratio``, ``ttft_ratio``, ``e2e_ratio``: ``median(backend) / median(reference)`` over
      requests, unpaired, with a bootstrap interval that resamples prompts on each side
      (:func:`llmcompare.analysis.statistics.bootstrap_ratio`; below 1 is faster);
    * ``speedup_tpot``, ``speedup_ttft``, ``speedup_e2e``: the speed-up paired by prompt, the
      geometric mean of per-prompt ``reference / backend`` (above 1 is faster), with its interval
      and verdict (:func:`llmcompare.analysis.statistics.paired_speedup`); the sharper test of the two;
    * ``agreement``: greedy-token agreement (:func:`llmcompare.analysis.metrics.agreement`).
    """
    if len(labels) < 2:
        return []
    ref = reference or labels[0]
    out = []
    for stage in stages:
        measured = {label: [r for r in requests if r.backend == label and r.stage == stage and not r.warmup]
                    for label in labels}
        ok = {label: [r for r in rs if r.error is None] for label, rs in measured.items()}

        for label in labels:
            if label == ref or not ok[label] or not ok[ref]:
                continue
            out.append({
                "backend": label,
                "baseline": ref,
                "stage": stage,
                "tpot_ratio": _ratio(ok[ref], ok[label], "tpot_ms"),
                "ttft_ratio": _ratio(ok[ref], ok[label], "ttft_ms"),
                "e2e_ratio": _ratio(ok[ref], ok[label], "e2e_ms"),
                "speedup_tpot": statistics.paired_speedup(measured[ref], measured[label], "tpot_ms"),
                "speedup_ttft": statistics.paired_speedup(measured[ref], measured[label], "ttft_ms"),
                "speedup_e2e": statistics.paired_speedup(measured[ref], measured[label], "e2e_ms"),
                "agreement": metrics.agreement(ok[ref], ok[label]),
            })
    return out


def _ratio(base: list[RequestRecord], other: list[RequestRecord], key: str) -> dict[str, Any] | None:
    """``median(other) / median(base)`` of a :func:`metrics.request_row` figure, resampling prompts."""
    return statistics.bootstrap_ratio([metrics.request_row(r)[key] for r in base],
                                      [metrics.request_row(r)[key] for r in other],
                                      clusters_a=[r.prompt_id for r in base], clusters_b=[r.prompt_id for r in other])
