"""Load (``llmcompare load``): one backend at a time under closed-loop concurrency or open-loop arrival
rates, each level a stage (``load:c=4``, ``load:rate=2``), then the knee of each latency–throughput
curve, goodput under an SLO, cost per 1M tokens and the three answers (docs/load.md).

The request schedule is :mod:`llmcompare.scenarios.loadgen`; several client processes for one level
(``--clients N``, HTTP backends only) are :mod:`llmcompare.scenarios.clients`, Ray actors instead
(``--executor ray``) :mod:`llmcompare.scenarios.ray_clients`; the figures of each level are
:mod:`llmcompare.analysis.levels`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from html import escape as html_escape
from typing import Any

from rich.console import Console
from rich.markup import escape

from llmcompare.analysis import levels as levels_mod
from llmcompare.analysis import metrics
from llmcompare.config.spec import parse_slo
from llmcompare.errors import UserError
from llmcompare.records import StageRecord, read_records
from llmcompare.records.rundir import RunDir
from llmcompare.report import levels_html
from llmcompare.report.columns import summary_notes
from llmcompare.report.html import Plot
from llmcompare.report.levels_console import print_levels
from llmcompare.report.levels_files import LEVELS_CSV_FIELDS, level_row, markdown_levels
from llmcompare.report.sections import Section
from llmcompare.runner.job import Context
from llmcompare.runner.session import BackendSession
from llmcompare.scenarios import ray_clients
from llmcompare.scenarios.base import Analysis, Plan, Progress, Scenario
from llmcompare.scenarios.clients import run_shared
from llmcompare.scenarios.loadgen import (
    NONCE_TOKENS,
    SWEEP_MAX_CONCURRENCY,
    Level,
    LevelRun,
    LoadConfig,
    closed,
    drive,
    open_rate,
    parse_dist,
    planned_levels,
)

DEFINITIONS = ("Definitions: TTFT = first token time; TPOT = (e2e − TTFT)/(n − 1); output tok/s = output tokens / wall"
               " time of the level; under load TTFT, e2e and queue are counted from each request's scheduled send."
               " See docs/load.md and docs/metrics.md.")


def float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, e.g. 0.5,1,2; got {text!r}") from None


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 1,2,4; got {text!r}") from None


@dataclass
class LoadAnalysis(Analysis):
    levels: list[Any] = field(default_factory=list)
    """One :class:`llmcompare.analysis.levels.Level` per backend and level, in run order."""
    analysis: dict[str, Any] = field(default_factory=dict)
    """Knee, SLO-limited level per backend, and the three recommendations."""

    def to_dict(self) -> dict[str, Any]:
        return {"levels": [lv.to_dict() for lv in self.levels], "analysis": self.analysis}


class LoadScenario(Scenario):
    name = "load"
    Config = LoadConfig
    title = "llmcompare load report"

    # ---- configure ----
    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--concurrency", "-c", type=int_list, default=[], metavar="N[,N...]",
                       help="closed loop: keep N requests in flight, one level per N")
        p.add_argument("--rate", dest="rates", type=float_list, default=[], metavar="R[,R...]",
                       help="open loop: requests per second, one level per R")
        p.add_argument("--arrivals", default="constant", choices=LoadConfig.ARRIVALS,
                       help="open-loop arrivals (default constant)")
        p.add_argument("--seed", type=int, default=0, help="seed of Poisson arrivals and drawn lengths (default 0)")
        p.add_argument("--duration", dest="duration_s", type=float, default=None, metavar="SECONDS",
                       help="length of each level in seconds")
        p.add_argument("--requests", type=int, default=None, metavar="N", help="length of each level in requests")
        p.add_argument("--warmup", "-w", dest="warmup_requests", type=int, default=None, metavar="N",
                       help="warm-up requests before each level, excluded (default: the level's concurrency, 1 for rates)")
        p.add_argument("--sweep", action="store_true",
                       help="find the saturation rate (synchronous, then max throughput), then run rates spaced below it")
        p.add_argument("--sweep-levels", type=int, default=5, metavar="N",
                       help="rates a sweep runs below saturation (default 5)")
        p.add_argument("--input-tokens", type=int, default=None, metavar="N",
                       help="synthetic prompts of exactly N tokens (default: the prompt set, made distinct per request)")
        p.add_argument("--input-tokens-dist", default="fixed", metavar="fixed|uniform:LO-HI",
                       help="draw input lengths per request")
        p.add_argument("--max-new-tokens", "-n", type=int, default=64, metavar="N", help="tokens to generate, forced (default 64)")
        p.add_argument("--output-tokens-dist", default="fixed", metavar="fixed|uniform:LO-HI",
                       help="draw output lengths per request")
        p.add_argument("--slo", default=None, metavar="ttft_ms=500,tpot_ms=100",
                       help="per-request limits for goodput and the SLO answer")
        p.add_argument("--clients", type=int, default=1, metavar="N",
                       help="client processes that drive each level together (HTTP backends; default 1)")
        p.add_argument("--executor", default="local", choices=LoadConfig.EXECUTORS,
                       help="local: the --clients are processes on this machine; ray: N Ray actors, on other hosts"
                            " when a cluster is joined (pip install 'llmcompare[ray]')")
        p.add_argument("--address", default=None, metavar="ADDR",
                       help="with --executor ray: the Ray cluster to join (default: a local instance, inside a"
                            " loopback-only network namespace only)")
        p.add_argument("--request-timeout", dest="request_timeout_s", type=float, default=None, metavar="SECONDS",
                       help="per-request time limit under load")

    def config_from_args(self, args: argparse.Namespace) -> LoadConfig:
        return LoadConfig(
            concurrency=tuple(args.concurrency), rates=tuple(args.rates), arrivals=args.arrivals, seed=args.seed,
            duration_s=args.duration_s, requests=args.requests, warmup_requests=args.warmup_requests,
            max_new_tokens=args.max_new_tokens, output_tokens_dist=args.output_tokens_dist,
            input_tokens=args.input_tokens, input_tokens_dist=args.input_tokens_dist, sweep=args.sweep,
            sweep_levels=args.sweep_levels, slo=parse_slo(args.slo), clients=args.clients,
            request_timeout_s=args.request_timeout_s, executor=args.executor, address=args.address)

    def prepare(self, config: LoadConfig, spec, registry, model, options=()) -> LoadConfig:
        if config.clients > 1 or config.executor == "ray":
            where = "Ray actors" if config.executor == "ray" else "other processes"
            for r in spec.backends:
                if registry.get(r.name).capabilities.in_process:
                    raise UserError(f"--clients {config.clients} --executor {config.executor} needs backends reached"
                                    f" over HTTP; {r.label!r} runs in its worker process, which {where} cannot share"
                                    " (use --clients 1 --executor local for it)")
        if config.executor == "ray":
            ray_clients.check_installed()
            ray_clients.check_network(config.address)
        return config

    # ---- plan ----
    def plan(self, config: LoadConfig, ctx) -> Plan:
        """The prompt set as it is (each request gets a distinct random prefix), or none (synthetic
        prompts); and the ordinary token ids safe to draw prompts and prefixes from."""
        tokenizer = ctx.tokenizer
        if config.input_tokens is None:
            ctx.check_text_lengths()
        prompts = ctx.natural()
        limit = max(config.max_new_tokens, parse_dist(config.output_tokens_dist, "output_tokens_dist")[2])
        if config.input_tokens is not None:
            longest = max(config.input_tokens, parse_dist(config.input_tokens_dist, "input_tokens_dist")[2])
        else:
            longest = max((len(p.token_ids) for p in prompts), default=0) + NONCE_TOKENS
        if ctx.context_length is not None and longest + limit > ctx.context_length:
            raise UserError(
                f"the longest prompt is {longest:,} tokens; with {limit} new tokens that exceeds the model's context of"
                f" {ctx.context_length:,} tokens; shorten the prompts, lower --input-tokens or --max-new-tokens")
        nonce = tokenizer(" ".join(f"r{i}" for i in range(64)) + " alpha bravo charlie delta echo foxtrot golf hotel",
                          add_special_tokens=False)["input_ids"]
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        nonce_ids = sorted({int(i) for i in nonce} - special)
        return Plan(prompts=prompts, workload={
            "nonce_ids": nonce_ids, "nonce_text": {str(i): tokenizer.decode([i]) for i in nonce_ids},
            "context_length": ctx.context_length, "vocab_size": len(tokenizer)})

    # ---- run ----
    def run(self, config: LoadConfig, session: BackendSession, ctx: Context, writer) -> None:
        session.backend  # noqa: B018  (raises SessionFailed if the load failed)
        if config.sweep:
            self._sweep(config, session, ctx, writer)
            return
        for index, level in enumerate(planned_levels(config)):
            self._run_level(config, session, ctx, writer, level, index)

    def _run_level(self, config: LoadConfig, session: BackendSession, ctx: Context, writer, level: Level,
                   index: int) -> StageRecord | None:
        if ctx.job.is_done(level.stage):
            return None
        if config.executor == "ray":  # the level's clients on Ray actors (scenarios/ray_clients.py)
            lr = ray_clients.run_level(session, ctx, writer, level, index, config.clients, config.address)
        elif config.clients > 1:
            lr = session.run(run_shared(session, ctx, writer, level, index, config.clients))
        else:
            lr = LevelRun(session, ctx, level, index, writer.write)
            session.run(drive(lr))
        rec = lr.stage_record()
        writer.write(rec)
        session.record.measured_wall_s += rec.wall_s
        return rec

    def _sweep(self, config: LoadConfig, session: BackendSession, ctx: Context, writer) -> None:
        """GuideLLM's sweep: synchronous (one at a time), then throughput (many in flight), then
        ``sweep_levels`` constant or Poisson rates spaced evenly between the two measured request rates."""
        top = max(config.concurrency) if config.concurrency else SWEEP_MAX_CONCURRENCY
        rates = []
        for index, level in enumerate((closed(1), closed(top))):
            rec = (self._run_level(config, session, ctx, writer, level, index)
                   or _done_stage(ctx, level.stage))
            ok = rec.achieved["requests"] - rec.achieved["errors"] if rec else 0
            rates.append(ok / rec.wall_s if rec and rec.wall_s > 0 else 0.0)
        low, high = rates
        if high <= low or low <= 0:
            return  # no headroom to spread rates over; the two levels say so
        n = config.sweep_levels
        for k in range(1, n + 1):
            rate = low + (high - low) * k / (n + 1)
            self._run_level(config, session, ctx, writer, open_rate(round(rate, 3)), 2 + k)

    def progress(self, config: LoadConfig, header, records, label) -> Progress:
        levels = {(s.stage, "*") for s in records.stages if s.backend == label}
        return Progress(levels, None, True)  # a level is redone whole unless its stage record exists

    def stage_line(self, record: StageRecord) -> str | None:
        a = record.achieved
        return (f"{record.stage}: {a.get('requests', 0)} requests in {record.wall_s:.1f} s,"
                f" {a.get('output_tok_s', 0):,.1f} output tok/s, {a.get('errors', 0)} errors"
                + (" [client fell behind the schedule]" if a.get("fell_behind") else ""))

    # ---- analyse ----
    def analyse(self, config: LoadConfig, header, records) -> LoadAnalysis:
        spec = header.spec
        levels = levels_mod.build_levels(spec, records)
        analysis = levels_mod.analyse(spec, levels)
        summaries = []
        for label in spec.labels:
            dups = sum(1 for d in records.duplicates if d.backend == label)
            s = metrics.summarize(label, [r for r in records.requests if r.stage.startswith(self.name)],
                                  records.backends, None, None, dups, intervals=False)
            s.stage = self.name
            summaries.append(s)
        return LoadAnalysis(summaries, levels, analysis)

    # ---- report ----
    def headline(self, config: LoadConfig, result) -> str:
        model = result.environment.get("model", {}).get("name")
        levels = (f"concurrency {', '.join(map(str, config.concurrency))}" if config.concurrency
                  else f"{config.arrivals} arrivals at {', '.join(f'{r:g}' for r in config.rates)} req/s" if config.rates
                  else "sweep")
        return f"{model} · load · {levels} · {config.max_new_tokens} new tokens · {result.spec.device}"

    def sections(self, config: LoadConfig, result) -> list[Section]:
        return [Levels(result), LoadNotes(config, result)]


def _done_stage(ctx: Context, stage: str) -> StageRecord | None:
    """A level finished in an earlier run (resume): read its stage record back."""
    recs = read_records(RunDir(ctx.job.run_dir).requests)
    return next((s for s in reversed(recs.stages) if s.backend == ctx.backend.label and s.stage == stage), None)


class Levels(Section):
    """The per-level table, knees, SLO limits and the three answers; ``levels.csv``; the plots."""

    def __init__(self, result):
        self.result = result
        self._plots: list[Plot] | None = None
        self._missing: str | None = None

    def console(self, console: Console) -> None:
        print_levels(console, self.result)

    def markdown(self) -> list[str]:
        return markdown_levels(self.result)

    def plots(self) -> list[Plot]:
        if self._plots is None and self._missing is None:
            try:
                self._plots = levels_html.make_plots(self.result)
            except ImportError as exc:
                self._missing = str(exc)
        if self._missing is not None:
            raise ImportError(self._missing)
        return self._plots or []

    def html(self) -> list[str]:
        try:
            plots = self.plots()
        except ImportError:
            plots = []
        return (levels_html.recommendations_html(self.result) + levels_html.plots_html(self.result, plots, self._missing)
                + levels_html.knees_html(self.result) + levels_html.levels_html(self.result))

    def csv(self) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
        return {"levels.csv": (list(LEVELS_CSV_FIELDS), [level_row(lv) for lv in self.result.levels])}


class LoadNotes(Section):
    def __init__(self, config: LoadConfig, result):
        self.notes = summary_notes(result.summaries, config.max_new_tokens)

    def console(self, console: Console) -> None:
        for kind, text in self.notes:
            console.print(f"[yellow]{kind}:[/yellow] {escape(text)}")

    def markdown(self) -> list[str]:
        return [DEFINITIONS.replace(" See docs/load.md and docs/metrics.md.", " See docs/metrics.md.")] + [
            f"**{kind.capitalize()}:** {text}." for kind, text in self.notes]

    def html(self) -> list[str]:
        return [f'<p class="note">{html_escape(DEFINITIONS)}</p>'] + [
            f'<p class="warn">{html_escape(kind)}: {html_escape(text)}</p>' for kind, text in self.notes]

