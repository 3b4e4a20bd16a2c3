"""The Python API: build a run from backends and scenarios, execute it backend by backend in workers,
and read the results back.

:func:`compare` runs the batch-1 latency scenario (and the fidelity pass), :func:`load` the load
scenario, :func:`run` any registered scenarios; all build a typed :class:`~llmcompare.config.spec.RunSpec`
and hand it to :func:`start`, which asks each scenario to plan, runs one worker per backend through
every scenario, lets each scenario finish (the fidelity judge), and reads the result back. It does
what the CLI does, minus argument parsing and printing::

    import llmcompare
    result = llmcompare.compare(["ctranslate2", "llamacpp"], max_new_tokens=64, repeats=3)
    for s in result.summaries:
        print(s.backend, s.status, s.tpot_ms["p50"])
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmcompare.analysis.result import RunResult, load_result
from llmcompare.config.spec import RunSpec, parse_backends, parse_prices, parse_slo, resume_secrets
from llmcompare.errors import Interrupted, OutputError, UserError
from llmcompare.hardware import environment
from llmcompare.models import ResolvedModel, resolve_model
from llmcompare.models.prompting import read_prompts
from llmcompare.plugins import get_registry
from llmcompare.records import RecordWriter, RequestRecord, read_records
from llmcompare.records.header import Header
from llmcompare.records.rundir import RunDir
from llmcompare.runner.interpreter import worker_python
from llmcompare.runner.isolation import run_isolated
from llmcompare.runner.job import Job
from llmcompare.runner.progress import ProgressCallbacks
from llmcompare.scenarios.base import PlanContext, Runner
from llmcompare.scenarios.fidelity import FidelityConfig
from llmcompare.scenarios.latency import LatencyConfig
from llmcompare.scenarios.loadgen import LoadConfig

__all__ = ["compare", "load", "run", "build_spec", "start", "resume", "load_result", "RunResult", "ProgressCallbacks"]

Progress = ProgressCallbacks  # the name 0.1 exported


def compare(
    backends: Sequence[str],
    *,
    model: str | None = None,
    prompts: str | None = None,
    input_tokens: int | Sequence[int] | None = None,
    max_new_tokens: int = 64,
    repeats: int = 3,
    warmup: int = 1,
    options: Sequence[str] = (),
    device: str = "cpu",
    timeout_s: float = 3600.0,
    chat_template: bool = True,
    baseline: str | None = None,
    fidelity: bool = True,
    reference: str | None = None,
    fidelity_tokens: int = FidelityConfig.max_new_tokens,
    near_tie_margin: float = FidelityConfig.near_tie_margin,
    trust_remote_code: bool = False,
    python: dict[str, str] | None = None,
    output: str | Path | None = None,
    progress: ProgressCallbacks | None = None,
) -> RunResult:
    """Run ``backends`` at batch size 1 on one model and prompt set; return summaries and comparisons.

    ``input_tokens`` (one length or several) makes every prompt exactly that long, one stage per
    length. ``baseline`` is the backend the others' speed is compared with (default: the first).
    With ``fidelity`` (on by default) every backend also answers each prompt greedily with natural
    stopping, up to ``fidelity_tokens``, and ``reference`` (default: the highest precision of a backend
    offering itself as the reference that fits) judges the outputs (docs/fidelity.md). Raises
    :class:`~llmcompare.UserError` for bad input before anything runs. A backend that fails at run time
    becomes a failed summary; the others still run. Results are written under ``output`` (default
    ``llmcompare-results/<timestamp>``) as they happen.
    """
    lengths = () if input_tokens is None else (
        (int(input_tokens),) if isinstance(input_tokens, int) else tuple(int(n) for n in input_tokens))
    configs: list[Any] = [LatencyConfig(max_new_tokens=max_new_tokens, repeats=repeats, warmup=warmup,
                                        input_tokens=lengths, baseline=baseline)]
    if fidelity:
        configs.append(FidelityConfig(max_new_tokens=fidelity_tokens, near_tie_margin=near_tie_margin, _asked=reference))
    return run(backends, configs, model=model, prompts=prompts, options=options, device=device, timeout_s=timeout_s,
               chat_template=chat_template, trust_remote_code=trust_remote_code, python=python, output=output,
               progress=progress)


def load(
    backends: Sequence[str],
    *,
    concurrency: Sequence[int] = (),
    rates: Sequence[float] = (),
    arrivals: str = "constant",
    seed: int = 0,
    duration_s: float | None = None,
    requests: int | None = None,
    warmup: int | None = None,
    max_new_tokens: int = 64,
    output_tokens_dist: str = "auto",
    input_tokens: int | None = None,
    input_tokens_dist: str = "fixed",
    dataset: str | None = None,
    num_prompts: int | None = None,
    multi_turn: bool = False,
    shared_prefix_tokens: int | None = None,
    prefix_groups: int = 1,
    metrics_interval_s: float = 1.0,
    sweep: bool = False,
    sweep_levels: int = 5,
    slo: str | dict[str, float] | None = None,
    price_per_hour: Sequence[str] | None = None,
    request_timeout_s: float | None = None,
    clients: int = 1,
    executor: str = "local",
    address: str | None = None,
    model: str | None = None,
    prompts: str | None = None,
    options: Sequence[str] = (),
    device: str = "cpu",
    timeout_s: float = 3600.0,
    chat_template: bool = True,
    trust_remote_code: bool = False,
    python: dict[str, str] | None = None,
    output: str | Path | None = None,
    progress: ProgressCallbacks | None = None,
) -> RunResult:
    """Drive ``backends`` under load: closed-loop ``concurrency`` levels or open-loop ``rates``
    (requests/s, ``arrivals`` constant or poisson), each level for ``duration_s`` or ``requests``.
    ``dataset`` (``"sharegpt"`` or a conversation file), ``multi_turn`` and ``shared_prefix_tokens``
    with ``prefix_groups`` choose the workload (docs/workloads.md); ``output_tokens_dist="auto"`` is the
    dataset's reply lengths with a dataset, else ``max_new_tokens``. ``clients``
    processes (``executor="local"``) or Ray actors (``executor="ray"``, ``address`` a cluster) drive each level."""
    config = LoadConfig(
        concurrency=tuple(int(c) for c in concurrency), rates=tuple(float(r) for r in rates), arrivals=arrivals,
        seed=seed, duration_s=duration_s, requests=requests, warmup_requests=warmup, max_new_tokens=max_new_tokens,
        output_tokens_dist=output_tokens_dist, input_tokens=input_tokens, input_tokens_dist=input_tokens_dist,
        sweep=sweep, sweep_levels=sweep_levels, slo=slo if isinstance(slo, dict) else parse_slo(slo), clients=clients,
        request_timeout_s=request_timeout_s, dataset=dataset, num_prompts=num_prompts, multi_turn=multi_turn,
        shared_prefix_tokens=shared_prefix_tokens, prefix_groups=prefix_groups, metrics_interval_s=metrics_interval_s,
        executor=executor, address=address,
    )
    return run(backends, [config], model=model, prompts=prompts, options=options, device=device, timeout_s=timeout_s,
               chat_template=chat_template, trust_remote_code=trust_remote_code, python=python,
               prices=parse_prices(price_per_hour or ()), output=output, progress=progress)


def run(backends: Sequence[str], scenarios: Sequence[Any], *, output: str | Path | None = None,
        progress: ProgressCallbacks | None = None, **settings: Any) -> RunResult:
    """Run ``backends`` through ``scenarios`` (their configs, the main one first: any registered
    scenario's); ``settings`` are :func:`build_spec`'s."""
    return start(build_spec(backends, scenarios, **settings), output=output, progress=progress)


def build_spec(backends: Sequence[str], scenarios: Sequence[Any], *, options: Sequence[str] = (),
               model: str | None = None, prompts: str | None = None, device: str = "cpu", timeout_s: float = 3600.0,
               chat_template: bool = True, trust_remote_code: bool = False, python: dict[str, str] | None = None,
               prices: dict[str, float] | None = None) -> RunSpec:
    """Validate backends, options and prices, and let each scenario prepare its config against the
    run's backends and model (before anything runs). Raises :class:`~llmcompare.UserError`."""
    if not scenarios:
        raise UserError("a run needs at least one scenario")
    registry = get_registry()
    requests = parse_backends(registry, backends, options, device)
    labels = {r.label for r in requests} | {r.name for r in requests} | {"*"}
    for key in (prices or {}):
        if key not in labels:
            raise UserError(f"--price-per-hour names {key!r}, which is not a backend of this run")
    spec = RunSpec(backends=requests, scenarios=tuple(scenarios), model=model, prompts=prompts, device=device,
                   timeout_s=timeout_s, chat_template=chat_template, trust_remote_code=trust_remote_code,
                   prices=prices or {}, python=dict(python or {}))
    resolved = resolve_model(spec.model)
    prepared = tuple(registry.scenario(c.kind).prepare(c, spec, registry, resolved, options) for c in spec.scenarios)
    return replace(spec, scenarios=prepared)


def _check_formats(spec: RunSpec, resolved: ResolvedModel) -> None:
    registry = get_registry()
    for r in spec.backends:
        backend = registry.get(r.name)
        formats = backend.capabilities.model_formats
        if "any" not in formats and not set(formats) & set(resolved.formats):
            raise UserError(
                f"backend {r.label!r} loads {'/'.join(formats)} models, but {resolved.ref!r} is {resolved.kind!r};"
                f" pass a suitable --model (e.g. a .gguf file for llamacpp)"
            )
        needs = dict(backend.capabilities.variant_formats).get(resolved.kind)
        if needs and not r.variant:
            raise UserError(f"backend {r.label!r} needs a variant for the {resolved.kind} model {resolved.ref!r}:"
                            f" {', '.join(f'{r.name}:{v}' for v in backend.variants)}")
        if needs is False and r.variant:
            raise UserError(f"backend {r.label!r} runs the {resolved.kind} model {resolved.ref!r} as it is;"
                            f" drop the variant ({r.name}, not {r.name}:{r.variant})")


def _check_extra_backends(spec: RunSpec, resolved: ResolvedModel) -> None:
    """Backends a scenario loads beside the run's (the fidelity reference): loadable and installed,
    checked now rather than after the timed pass."""
    registry = get_registry()
    for config in spec.scenarios:
        for ref in registry.scenario(config.kind).backends_to_install(config):
            formats = registry.get(ref.name).capabilities.model_formats
            if "any" not in formats and not set(formats) & set(resolved.formats):
                raise UserError(f"the {config.kind} scenario's backend {ref.label!r} loads {'/'.join(formats)} models,"
                                f" but {resolved.ref!r} is {resolved.kind!r}; pass another --reference or --no-{config.kind}")
            worker_python(spec, ref.name)


def _prepare_conversions(spec: RunSpec, resolved: ResolvedModel, pythons: dict[str, str | None]) -> None:
    """A backend running in its own environment may lack the converters (gguf, accelerate): convert
    the model here, once, into the shared cache it will read."""
    registry = get_registry()
    for r in spec.backends:
        formats = registry.get(r.name).capabilities.model_formats
        if pythons.get(r.label) and resolved.kind == "gguf" and "gguf" not in formats and "hf" in formats:
            resolved.hf_dir()


def _plan(spec: RunSpec, resolved: ResolvedModel) -> tuple[list, list, dict]:
    """Tokenize once, with the model's own tokenizer, what every backend will be handed: each scenario
    plans its prompts, stages and workload facts; prompts shared by two scenarios are kept once."""
    texts = read_prompts(spec.prompts)
    tokenizer = resolved.tokenizer(trust_remote_code=spec.trust_remote_code)
    ctx = PlanContext(spec, resolved, tokenizer, texts, resolved.context_length(), spec.prompts)
    prompts, stages, workload = [], [], {"context_length": ctx.context_length, "vocab_size": len(tokenizer)}
    registry = get_registry()
    for config in spec.scenarios:
        plan = registry.scenario(config.kind).plan(config, ctx)
        have = {p.id for p in prompts}
        prompts += [p for p in plan.prompts if p.id not in have]
        stages += plan.stages
        workload.update(plan.workload)
    return prompts, stages, workload


def start(spec: RunSpec, *, output: str | Path | None = None, progress: ProgressCallbacks | None = None) -> RunResult:
    """Validate everything, write the run header, run every backend in its worker, return the result."""
    run_dir = RunDir(output or Path("llmcompare-results") / time.strftime("%Y%m%d-%H%M%S"))
    run_dir.check_writable()
    if run_dir.exists():
        raise UserError(f"{run_dir} already holds a run; pass another --output, or --resume {run_dir}")
    resolved = resolve_model(spec.model)
    _check_formats(spec, resolved)
    pythons = {r.label: worker_python(spec, r.name) for r in spec.backends}
    _check_extra_backends(spec, resolved)
    _prepare_conversions(spec, resolved, pythons)
    prompts, stages, workload = _plan(spec, resolved)
    if run_dir.exists():  # again: another process may have started one there meanwhile
        raise UserError(f"{run_dir} already holds a run; pass another --output, or --resume {run_dir}")
    registry = get_registry()
    with run_dir:
        dists = sorted({d for r in spec.backends for d in registry.get(r.name).distributions})
        env = environment.capture(dists, model=resolved.identity(), device=spec.device)
        env["plugins"] = dict(registry.plugins)  # plugin -> "built-in" or "distribution==version"
        header = Header(spec, resolved, env, prompts, stages, workload)
        _write_header(run_dir, header)
        with _resumable(run_dir):
            _execute(run_dir, header, pythons, progress)
    with _resumable(run_dir):
        return load_result(run_dir)


def _write_header(run_dir: RunDir, header: Header) -> None:
    """``run.json`` and the first record of ``requests.jsonl`` (options holding credentials redacted:
    :class:`~llmcompare.config.spec.BackendRequest`). A write the system refuses is a one-line error."""
    data = header.to_dict()
    try:
        run_dir.run_json.write_text(json.dumps(data, indent=2), encoding="utf-8")
    except OSError as exc:
        error = OutputError.from_os(exc, run_dir.run_json)
        if error is None:
            raise
        error.exit_code = 2  # nothing has run yet
        raise error from None
    try:
        with RecordWriter(run_dir.requests) as w:
            w.write(data)
    except OutputError as error:
        error.exit_code = 2
        raise


@contextmanager
def _resumable(run_dir: RunDir) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) from here on leaves a run that ``--resume`` continues: say which."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(str(run_dir)) from None


def resume(run_dir: str | Path, progress: ProgressCallbacks | None = None, options: Sequence[str] = ()) -> RunResult:
    """Continue an interrupted run: finished requests are kept, only the missing ones are run.

    Options that held credentials were never written (``run.json`` has them redacted): ``options``
    gives them again (``["url=http://user:KEY@host/v1"]``, as ``-o``), and only them."""
    rd = RunDir(run_dir)
    if not rd.run_json.exists():
        raise UserError(f"nothing to resume in {rd}: no {rd.run_json.name} there (pass the directory of an earlier run)")
    with rd:
        try:
            header = Header.read(rd)
        except ValueError as exc:
            raise UserError(f"{rd.run_json}: not a valid run record ({exc}); cannot resume this run") from None
        header.spec = header.spec.with_secrets(resume_secrets(get_registry(), header.spec, options, str(rd)))
        pythons = {r.label: worker_python(header.spec, r.name) for r in header.spec.backends}
        with _resumable(rd):
            _execute(rd, header, pythons, progress)
    with _resumable(rd):
        return load_result(rd)


class _Runner(Runner):
    """Runs the extra worker steps a scenario's ``finish`` asks for, with the run's progress bars."""

    def __init__(self, run_dir: RunDir, header: Header, progress: ProgressCallbacks | None):
        self.run_dir, self.header, self.progress = run_dir, header, progress

    def run_job(self, job: Job, request, total: int | None = None):
        progress = self.progress
        if progress:
            progress.backend_started(job.label, total)
        rec = run_isolated(self.run_dir, job, request, self.header.spec.timeout_s,
                           python=worker_python(self.header.spec, request.name), device=self.header.spec.device,
                           on_record=(lambda r: progress.request_done(job.label, r)
                                      if isinstance(r, RequestRecord) else None) if progress else None)
        if progress:
            progress.backend_done(job.label, rec)
        return rec


def _execute(run_dir: RunDir, header: Header, pythons: dict[str, str | None], progress: ProgressCallbacks | None) -> None:
    registry = get_registry()
    pairs = [(registry.scenario(c.kind), c) for c in header.spec.scenarios]
    for r in header.spec.backends:
        records = read_records(run_dir.requests)
        finished_ok = any(b.backend == r.label and b.status == "ok" for b in records.backends)
        parts = [scenario.progress(config, header, records, r.label) for scenario, config in pairs]
        if finished_ok and all(p.complete for p in parts):
            continue  # complete in an earlier run
        done = set().union(*(p.done for p in parts))
        remaining = None if any(p.remaining is None for p in parts) else sum(p.remaining for p in parts)
        job = Job(str(run_dir.path), r.label, done)
        if progress:
            progress.backend_started(r.label, remaining)

        def on_record(rec, label=r.label) -> None:
            if progress is None:
                return
            if isinstance(rec, RequestRecord):
                progress.request_done(label, rec)
            else:
                progress.stage_done(label, rec)

        rec = run_isolated(run_dir, job, r, header.spec.timeout_s, python=pythons.get(r.label),
                           device=header.spec.device, on_record=on_record)
        if progress:
            progress.backend_done(r.label, rec)
    runner = _Runner(run_dir, header, progress)
    for scenario, config in pairs:
        scenario.finish(config, header, run_dir.requests, runner)
