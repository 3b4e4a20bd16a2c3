"""Batch-1 latency (``llmcompare run``): one request at a time, a fixed prompt set, forced output length.

Per stage (one per ``--input-tokens`` length, or one for the prompts as they are): ``warmup``
requests (recorded with ``warmup=True``, excluded from the statistics; the first is the cold
request), then ``repeats`` passes over the prompts. Every request is handed the same prompt token ids,
asked for exactly ``max_new_tokens`` tokens, and its actual count is checked. Each finished request is
appended at once; a stage record closes each stage with its measured wall time.

Its result: one summary per backend and stage (with 95% bootstrap intervals over prompts), each
backend's speed against the baseline, paired by prompt (:mod:`llmcompare.analysis.baseline`), and, on
CUDA, each backend's % of the bandwidth floor (:mod:`llmcompare.hardware.roofline`) and its GPU energy
per output token over each stage's measured requests (NVML, :mod:`llmcompare.scenarios.telemetry`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from html import escape as h
from typing import Any, ClassVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from llmcompare.analysis import metrics
from llmcompare.analysis import telemetry as tele
from llmcompare.analysis.baseline import compare_summaries
from llmcompare.backend import clock
from llmcompare.errors import ConfigError, UserError
from llmcompare.hardware import roofline
from llmcompare.records import StageRecord
from llmcompare.records.header import StagePlan, scenario_of_stage
from llmcompare.report.columns import fmt, latency_columns, ratio, speedup, summary_notes, ttft_by_input_length
from llmcompare.report.html import cells, table_html
from llmcompare.report.sections import Section, md_cell
from llmcompare.scenarios.base import Analysis, Plan, Progress, Scenario
from llmcompare.scenarios.telemetry import GpuTelemetry

SYNTHETIC_AGREEMENT_NOTE = (
    "Random weights make near-ties between logits, so token agreement is not meaningful for a synthetic model."
)


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 1,2,4; got {text!r}") from None


@dataclass(frozen=True)
class LatencyConfig:
    """Batch 1: warm-up, then ``repeats`` passes over the prompts, one request at a time.

    With ``input_tokens`` every prompt is cut or repeated to each length in turn, and each length is a
    stage (``latency:in=256``), so prefill cost is compared as a curve. ``baseline`` is the backend label
    the others' speed is compared with (default: the first)."""

    kind: ClassVar[str] = "latency"
    max_new_tokens: int = 64
    repeats: int = 3
    warmup: int = 1
    input_tokens: tuple[int, ...] = ()
    baseline: str | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError("{max_new_tokens} must be at least 1, got {got}", got=self.max_new_tokens)
        if self.repeats < 1:
            raise ConfigError("{repeats} must be at least 1, got {got}", got=self.repeats)
        if self.warmup < 0:
            raise ConfigError("{warmup} must not be negative, got {got}", got=self.warmup)
        for n in self.input_tokens:
            if n < 1:
                raise ConfigError("{input_tokens} must be at least 1, got {got}", got=n)

    def stages(self) -> list[tuple[str, int | None]]:
        """``(stage name, input length or None)`` in run order."""
        if not self.input_tokens:
            return [("latency", None)]
        return [(f"latency:in={n}", n) for n in self.input_tokens]


@dataclass
class LatencyAnalysis(Analysis):
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    """Each backend against the baseline, stage by stage (:func:`llmcompare.analysis.baseline.compare_summaries`)."""
    prompts_per_stage: int | None = None
    """How many prompts each timed stage sends."""

    def to_dict(self) -> dict[str, Any]:
        return {"comparisons": self.comparisons}


class LatencyScenario(Scenario):
    name = "latency"
    Config = LatencyConfig
    title = "llmcompare report"

    # ---- configure ----
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--input-tokens", type=int_list, default=None, metavar="N[,N...]",
                            help="make every prompt exactly N tokens long; several lengths run as stages (TTFT against"
                                 " length)")
        parser.add_argument("--max-new-tokens", "-n", type=int, default=64, metavar="N",
                            help="tokens to generate, forced (default 64)")
        parser.add_argument("--repeats", "-r", type=int, default=3, help="passes over the prompt set (default 3)")
        parser.add_argument("--warmup", "-w", type=int, default=1,
                            help="warm-up requests per stage, excluded from statistics (default 1)")
        parser.add_argument("--baseline", default=None, help="backend the others' speed is compared with (default: the first)")

    def config_from_args(self, args: argparse.Namespace) -> LatencyConfig:
        return LatencyConfig(max_new_tokens=args.max_new_tokens, repeats=args.repeats, warmup=args.warmup,
                             input_tokens=tuple(args.input_tokens or ()), baseline=args.baseline)

    def prepare(self, config: LatencyConfig, spec, registry, model, options=()) -> LatencyConfig:
        if config.baseline is None:
            return config
        matches = ([r.label for r in spec.backends if r.label == config.baseline]
                   or [r.label for r in spec.backends if r.name == config.baseline])
        if len(matches) != 1:
            raise UserError(f"--baseline {config.baseline!r} must name exactly one of this run's backends"
                            f" ({', '.join(spec.labels)})")
        return replace(config, baseline=matches[0])

    # ---- plan ----
    def plan(self, config: LatencyConfig, ctx) -> Plan:
        plan = Plan()
        ctx.check_text_lengths()
        for stage, n in config.stages():
            prompts = ctx.exact(n) if n else ctx.natural()
            ctx.check_fits(prompts, config.max_new_tokens)
            plan.prompts += prompts
            plan.stages.append(StagePlan(stage, n, tuple(p.id for p in prompts)))
        return plan

    # ---- run ----
    def run(self, config: LatencyConfig, session, ctx, writer) -> None:
        gpu = GpuTelemetry.open(ctx, session, writer) if session.ok else None
        try:
            self._run(config, session, ctx, writer, gpu)
        finally:
            if gpu is not None:
                gpu.close()

    def _run(self, config: LatencyConfig, session, ctx, writer, gpu: GpuTelemetry | None) -> None:
        for plan in ctx.header.stages:
            if scenario_of_stage(plan.stage) != self.name:
                continue
            prompts = ctx.header.stage_prompts(plan)
            for i in range(config.warmup):
                writer.write(session.request(prompts[i % len(prompts)], config.max_new_tokens, stage=plan.stage,
                                             request_id=f"warmup/{i}", repeat=i, warmup=True))
            start = end = None
            if gpu is not None:
                gpu.begin(plan.stage)
            for rep in range(config.repeats):
                for p in prompts:
                    request_id = f"{p.id}/r{rep}"
                    if ctx.job.is_done(plan.stage, request_id):
                        continue
                    t = clock()
                    start = t if start is None else start
                    writer.write(session.request(p, config.max_new_tokens, stage=plan.stage, request_id=request_id,
                                                 repeat=rep))
                    end = clock()
            if gpu is not None:
                gpu.end()
            if start is not None:
                writer.write(StageRecord(
                    backend=ctx.backend.label, stage=plan.stage, session=session.id,
                    started_at=start + session.epoch_offset, wall_s=end - start,
                    params={"input_tokens": plan.input_tokens, "max_new_tokens": config.max_new_tokens,
                            "repeats": config.repeats},
                ))
                session.record.measured_wall_s += end - start

    def progress(self, config: LatencyConfig, header, records, label) -> Progress:
        stages = [s for s in header.stages if scenario_of_stage(s.stage) == self.name]
        names = {s.stage for s in stages}
        done = {(r.stage, r.request_id) for r in records.for_backend(label)
                if not r.warmup and r.error is None and r.stage in names}
        remaining = sum(len(s.prompt_ids) for s in stages) * config.repeats - len(done)
        return Progress(done, remaining, remaining == 0)

    # ---- analyse ----
    def analyse(self, config: LatencyConfig, header, records) -> LatencyAnalysis:
        spec = header.spec
        dup_count: dict[tuple[str, str], int] = {}
        for d in records.duplicates:
            dup_count[(d.backend, d.stage)] = dup_count.get((d.backend, d.stage), 0) + 1
        stage_names = [s.stage for s in header.stages if scenario_of_stage(s.stage) == self.name]
        summaries = [metrics.summarize(label, records.requests, records.backends, name, records.stages,
                                       dup_count.get((label, name), 0), intervals=True)
                     for name in stage_names for label in spec.labels]
        summaries.sort(key=lambda s: (spec.labels.index(s.backend), stage_names.index(s.stage)))
        comparisons = compare_summaries(spec.labels, records.requests, config.baseline, stage_names)
        by_key = {(c["backend"], c.get("stage")): c for c in comparisons}
        for s in summaries:
            c = by_key.get((s.backend, s.stage))
            if c is not None:
                s.agreement = c.get("agreement")
        roofline.annotate(summaries, spec, header.environment, records.requests, config.max_new_tokens)
        _energy(summaries, records)
        first = next((s for s in header.stages if scenario_of_stage(s.stage) == self.name), None)
        return LatencyAnalysis(summaries, comparisons, len(first.prompt_ids) if first else len(header.prompts))

    # ---- report ----
    def headline(self, config: LatencyConfig, result) -> str:
        model = result.environment.get("model", {}).get("name")
        n = result.prompts_per_stage or len(result.prompts) // max(1, len(result.stages))
        return (f"{model} · {n} prompts × {config.repeats} ·"
                f" {config.max_new_tokens} new tokens · batch 1 · {result.spec.device}")

    def sections(self, config: LatencyConfig, result) -> list[Section]:
        return [Intro(self, config, result), LatencySummary(self, config, result), SpeedUps(result),
                LatencyNotes(config, result)]


def _energy(summaries: list, records) -> None:
    """Each summary's GPU energy (``info["energy"]``) over its stage's measured requests, first hand-over
    to last token (the stage record's window), per verified output token; where GPUs were sampled."""
    if not records.gpu:
        return
    last = {(s.backend, s.stage): s for s in records.stages}
    for summary in summaries:
        stage = last.get((summary.backend, summary.stage))
        if stage is None:
            continue
        samples = tele.gpu_samples(records.gpu, stage.backend, stage.session)
        measured = [r for r in records.requests if r.backend == stage.backend and r.stage == stage.stage
                    and r.session == stage.session and not r.warmup]
        tokens = sum(metrics.verified_tokens(r) for r in measured)
        energy = tele.energy(samples, stage.started_at, stage.started_at + stage.wall_s, tokens)
        if energy is not None:
            summary.info["energy"] = energy


class Intro(Section):
    """What was run, in one sentence (Markdown; the console's table title and the page's headline say it)."""

    def __init__(self, scenario: LatencyScenario, config: LatencyConfig, result):
        c, model = config, result.environment.get("model", {})
        quant = ", " + model["quantization"] if model.get("quantization") else ""
        self.text = (f"Model **{model.get('name')}** ({model.get('kind')}{quant}), {scenario.headline(config, result)};"
                     f" greedy, {c.max_new_tokens} new tokens forced, {c.repeats} repeats, {c.warmup} warm-up"
                     " request(s) per stage excluded.")

    def console(self, console: Console) -> None:
        pass

    def markdown(self) -> list[str]:
        return [self.text]

    def html(self) -> list[str]:
        return []


class LatencySummary(Section):
    """The summary table (with intervals), and TTFT against input length when there are several."""

    def __init__(self, scenario: LatencyScenario, config: LatencyConfig, result):
        self.config, self.result = config, result
        self.headline = scenario.headline(config, result)

    def console(self, console: Console) -> None:
        t = RichTable(title=escape(f"llmcompare · {self.headline}"))
        cols = latency_columns(self.result.summaries, where="console")
        for col in cols:
            t.add_column(col.header, justify="right" if col.numeric else "left")
        for s in self.result.summaries:
            row = []
            for col in cols:
                text = escape(col.cell(s, intervals="pm"))
                if col.key == "status" and s.status == "ok":
                    text = f"[green]{text}"
                elif col.bad is not None and col.bad(s):
                    text = f"[red]{text}"
                row.append(text)
            t.add_row(*row)
        console.print(t)
        lengths, ttft = ttft_by_input_length(self.result.summaries)
        if len(lengths) > 1:
            t = RichTable(title="TTFT p50 ms against input length (prefill cost)")
            t.add_column("backend")
            for n in lengths:
                t.add_column(f"{n} tokens", justify="right")
            for label, row in ttft.items():
                t.add_row(escape(label), *[f"{row[n]:,.1f}" if row.get(n) is not None else "–" for n in lengths])
            console.print(t)

    def markdown(self) -> list[str]:
        cols = latency_columns(self.result.summaries)
        lines = ["| " + " | ".join(col.header for col in cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(md_cell(col.cell(s, intervals="brackets")) for col in cols) + " |"
                  for s in self.result.summaries]
        lengths, ttft = ttft_by_input_length(self.result.summaries)
        if len(lengths) > 1:
            lines += ["", "## TTFT p50 ms against input length (prefill cost)", "",
                      "| backend | " + " | ".join(f"{n} tokens" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
            lines += [f"| {md_cell(label)} | " + " | ".join(fmt(row.get(n)) for n in lengths) + " |"
                      for label, row in ttft.items()]
        return lines

    def html(self) -> list[str]:
        cols = latency_columns(self.result.summaries, where="html")
        head = [(col.header, "num" if col.numeric else "") for col in cols]
        rows = [cells(cols, s, "brackets") for s in self.result.summaries]
        return ["<h2>Batch 1</h2>",
                '<p class="note">Greedy, output length forced; warm-up excluded; brackets are 95% bootstrap intervals'
                " over prompts.</p>", f'<div class="wide">{table_html("summary", head, rows)}</div>']


class SpeedUps(Section):
    """Each backend against the baseline: paired speed-ups and ratios of medians, with intervals."""

    def __init__(self, result):
        self.result = result
        self.comparisons = result.comparisons

    def console(self, console: Console) -> None:
        for c in self.comparisons:
            stage = f" [{c['stage']}]" if len(self.result.stages) > 1 else ""
            console.print(escape(f"  {c['backend']} vs {c['baseline']}{stage}: TPOT speed-up, paired by prompt,"
                                 f" {speedup(c.get('speedup_tpot'))}; ratio of medians {ratio(c['tpot_ratio'])}"))

    def markdown(self) -> list[str]:
        if not self.comparisons:
            return []
        lines = [f"## Against {md_cell(self.comparisons[0]['baseline'])} (95% bootstrap intervals over prompts)", "",
                 "| backend | stage | speed-up TPOT, paired | speed-up e2e, paired | TPOT ratio of medians | TTFT ratio"
                 " | e2e ratio | token agreement | identical outputs |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for c in self.comparisons:
            a = c.get("agreement")
            agree = f"{a['token_match']:.1%} | {a['exact_prompts']}/{a['prompts']}" if a else "– | –"
            lines.append(f"| {md_cell(c['backend'])} | {md_cell(c['stage'])} | {speedup(c.get('speedup_tpot'))}"
                         f" | {speedup(c.get('speedup_e2e'))} | {ratio(c['tpot_ratio'])} | {ratio(c['ttft_ratio'])}"
                         f" | {ratio(c['e2e_ratio'])} | {agree} |")
        lines += ["", "Speed-up, paired: the geometric mean over prompts of baseline / backend (above 1: faster), each"
                  " prompt's figure the median of its repeats. Ratio of medians: backend / baseline (below 1: faster)."]
        return lines

    def html(self) -> list[str]:
        if not self.comparisons:
            return []
        rows = [[(c["backend"], ""), (c["stage"], ""), (speedup(c.get("speedup_tpot")), "num"),
                 (ratio(c["tpot_ratio"]), "num"), (ratio(c["ttft_ratio"]), "num"), (ratio(c["e2e_ratio"]), "num")]
                for c in self.comparisons]
        return [f"<h2>Against {h(self.comparisons[0]['baseline'])}</h2>",
                table_html("comparisons", [("backend", ""), ("stage", ""), ("speed-up, TPOT, paired by prompt", "num"),
                                           ("TPOT ratio of medians", "num"), ("TTFT ratio", "num"), ("e2e ratio", "num")],
                           rows)]


class LatencyNotes(Section):
    """The flags under the table (length mismatches, duplicates, approximate counts, floors) and the definitions."""

    def __init__(self, config: LatencyConfig, result):
        self.notes = summary_notes(result.summaries, config.max_new_tokens)
        for t in (result.records.telemetry if result.records else []):  # a GPU run whose energy could not be read
            if t.get("kind") == "gpu" and t.get("error"):
                self.notes.append(("note", f"{t.get('backend')}: GPU energy not measured: {t['error']}"))
        self.synthetic = bool(result.comparisons) and result.environment.get("model", {}).get("kind") == "synthetic"

    def console(self, console: Console) -> None:
        if self.synthetic:
            console.print(f"  note: {SYNTHETIC_AGREEMENT_NOTE}")
        for kind, text in self.notes:
            console.print(f"[yellow]{kind}:[/yellow] {escape(text)}")

    def markdown(self) -> list[str]:
        lines = [SYNTHETIC_AGREEMENT_NOTE, ""] if self.synthetic else []
        lines += ["Definitions: TTFT = first token time; TPOT = (e2e − TTFT)/(n − 1); tok/s per request = n/e2e;"
                  " output tok/s = output tokens / measured wall time. See docs/metrics.md."]
        lines += [f"**{kind.capitalize()}:** {text}." for kind, text in self.notes]
        return lines

    def html(self) -> list[str]:
        return [f'<p class="warn">{h(kind)}: {h(text)}</p>' for kind, text in self.notes]
