"""A third-party scenario, as a plugin author writes one: a prefill-only sweep (TTFT against input length,
one output token per request), one module and one ``register(...)`` call. The tests install it through
an entry point and run it with no change to llmcompare."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, ClassVar

from llmcompare import ScenarioSpec, hookimpl
from llmcompare.analysis.metrics import summarize
from llmcompare.records.header import StagePlan, scenario_of_stage
from llmcompare.report.sections import Table
from llmcompare.scenarios.base import Analysis, Plan, Progress, Scenario

LLMCOMPARE_API = "1.1"


@dataclass(frozen=True)
class PrefillConfig:
    kind: ClassVar[str] = "prefill"
    lengths: tuple[int, ...] = (16, 64)
    repeats: int = 2
    prompts: int = 2


@dataclass
class PrefillAnalysis(Analysis):
    prefill_points: list[dict[str, Any]] = field(default_factory=list)


class PrefillScenario(Scenario):
    name = "prefill"
    Config = PrefillConfig

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--lengths", default="16,64", help="input lengths, comma separated")
        parser.add_argument("--repeats", type=int, default=2, help="requests per prompt and length")

    def config_from_args(self, args: argparse.Namespace) -> PrefillConfig:
        return PrefillConfig(tuple(int(x) for x in args.lengths.split(",")), args.repeats)

    def plan(self, config: PrefillConfig, ctx) -> Plan:
        plan = Plan()
        for n in config.lengths:
            prompts = ctx.exact(n)[:config.prompts]
            plan.prompts += prompts
            plan.stages.append(StagePlan(f"prefill:in={n}", n, tuple(p.id for p in prompts)))
        return plan

    def run(self, config: PrefillConfig, session, ctx, writer) -> None:
        for stage in ctx.header.stages:
            if scenario_of_stage(stage.stage) != self.name:
                continue
            for rep in range(config.repeats):
                for p in ctx.header.stage_prompts(stage):
                    if not ctx.job.is_done(stage.stage, f"{p.id}/r{rep}"):
                        writer.write(session.request(p, 1, stage=stage.stage, request_id=f"{p.id}/r{rep}", repeat=rep))

    def progress(self, config: PrefillConfig, header, records, label) -> Progress:
        stages = [s for s in header.stages if scenario_of_stage(s.stage) == self.name]
        done = {(r.stage, r.request_id) for r in records.for_backend(label) if r.error is None and r.stage.startswith("prefill")}
        remaining = sum(len(s.prompt_ids) for s in stages) * config.repeats - len(done)
        return Progress(done, remaining, remaining == 0)

    def analyse(self, config: PrefillConfig, header, records) -> PrefillAnalysis:
        summaries, points = [], []
        for stage in (s for s in header.stages if scenario_of_stage(s.stage) == self.name):
            for label in header.spec.labels:
                s = summarize(label, records.requests, records.backends, stage.stage, records.stages, intervals=True)
                summaries.append(s)
                points.append({"backend": label, "input_tokens": stage.input_tokens, "ttft_p50_ms": s.ttft_ms.get("p50")})
        return PrefillAnalysis(summaries, points)

    def headline(self, config: PrefillConfig, result) -> str:
        return f"prefill sweep · {', '.join(map(str, config.lengths))} input tokens · {result.spec.device}"

    def sections(self, config: PrefillConfig, result) -> list:
        rows = [[p["backend"], str(p["input_tokens"]), f"{p['ttft_p50_ms']:.3f}"] for p in result.prefill_points]
        return [Table(title="Prefill: TTFT against input length", headers=["backend", "input tokens", "TTFT p50 ms"],
                      rows=rows, numeric=[False, True, True], csv_name="prefill.csv", html_id="prefill")]


@hookimpl
def register_scenarios(register):
    register(ScenarioSpec("prefill", "prefill_scenario:PrefillScenario", "TTFT against input length, one output token",
                          command="prefill"))
