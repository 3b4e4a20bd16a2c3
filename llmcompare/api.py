"""The Python API: plan a run, execute it backend by backend in workers, and read the results back.

:func:`compare` runs the batch-1 latency scenario and :func:`load` the load scenario; both build a
typed :class:`~llmcompare.config.spec.RunSpec` and hand it to :func:`start`. It does what the CLI does,
minus argument parsing and printing::

    import llmcompare
    result = llmcompare.compare(["ctranslate2", "llamacpp"], max_new_tokens=64, repeats=3)
    for s in result.summaries:
        print(s.backend, s.status, s.tpot_ms["p50"])
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from llmcompare.analysis.result import RunResult, load_result
from llmcompare.config.spec import (
    FidelitySpec,
    LatencyScenario,
    LoadScenario,
    RunSpec,
    parse_backends,
    parse_prices,
    parse_slo,
    resolve_baseline,
)
from llmcompare.errors import BackendNotInstalled, UserError
from llmcompare.hardware import environment
from llmcompare.models import ResolvedModel, resolve_model
from llmcompare.models.prompting import Prompt, exact_length, read_prompts, tokenize
from llmcompare.plugins import get_registry
from llmcompare.records import RecordWriter, RequestRecord, StageRecord, read_records
from llmcompare.records.rundir import RunDir
from llmcompare.runner.isolation import run_isolated
from llmcompare.scenarios import Header, Job, StagePlan

__all__ = ["compare", "load", "start", "resume", "load_result", "RunResult", "Progress"]

#: A prompt longer than this many characters per context token is refused before tokenizing it.
MAX_CHARS_PER_TOKEN = 64


class Progress:
    """Callbacks the orchestration calls; the console implements them with rich progress bars."""

    def backend_started(self, label: str, total: int | None) -> None: ...

    def request_done(self, label: str, record: RequestRecord) -> None: ...

    def stage_done(self, label: str, record: StageRecord) -> None: ...

    def backend_done(self, label: str, record) -> None: ...


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
    fidelity_tokens: int = FidelitySpec.max_new_tokens,
    near_tie_margin: float = FidelitySpec.near_tie_margin,
    trust_remote_code: bool = False,
    python: dict[str, str] | None = None,
    output: str | Path | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Run ``backends`` at batch size 1 on one model and prompt set; return summaries and comparisons.

    ``input_tokens`` (one length or several) makes every prompt exactly that long, one stage per
    length. ``baseline`` is the backend the others' speed is compared with (default: the first).
    With ``fidelity`` (on by default) every backend also answers each prompt greedily with natural
    stopping, up to ``fidelity_tokens``, and ``reference`` (default: transformers at the highest
    precision that fits) judges the outputs (docs/fidelity.md). Raises :class:`~llmcompare.UserError`
    for bad input before anything runs. A backend that fails at run time becomes a failed summary;
    the others still run. Results are written under ``output`` (default
    ``llmcompare-results/<timestamp>``) as they happen.
    """
    lengths = () if input_tokens is None else (
        (int(input_tokens),) if isinstance(input_tokens, int) else tuple(int(n) for n in input_tokens))
    scenario = LatencyScenario(max_new_tokens=max_new_tokens, repeats=repeats, warmup=warmup, input_tokens=lengths)
    spec = _spec(backends, scenario, options=options, model=model, prompts=prompts, device=device,
                 timeout_s=timeout_s, chat_template=chat_template, baseline=baseline,
                 trust_remote_code=trust_remote_code, python=python)
    if fidelity:
        fid = FidelitySpec(max_new_tokens=fidelity_tokens, near_tie_margin=near_tie_margin)  # bad values fail here
        spec = replace(spec, fidelity=_with_reference(fid, spec, reference, options))
    return start(spec, output=output, progress=progress)


def _with_reference(fid: FidelitySpec, spec: RunSpec, reference: str | None, options: Sequence[str]) -> FidelitySpec:
    from llmcompare.analysis.fidelity import choose_reference

    ref, note = choose_reference(get_registry(), spec.backends, reference, spec.device, resolve_model(spec.model),
                                 options)
    return replace(fid, reference=ref, reference_note=note)


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
    output_tokens_dist: str = "fixed",
    input_tokens: int | None = None,
    input_tokens_dist: str = "fixed",
    sweep: bool = False,
    sweep_levels: int = 5,
    slo: str | dict[str, float] | None = None,
    price_per_hour: Sequence[str] | None = None,
    request_timeout_s: float | None = None,
    clients: int = 1,
    model: str | None = None,
    prompts: str | None = None,
    options: Sequence[str] = (),
    device: str = "cpu",
    timeout_s: float = 3600.0,
    chat_template: bool = True,
    trust_remote_code: bool = False,
    python: dict[str, str] | None = None,
    output: str | Path | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Drive ``backends`` under load: closed-loop ``concurrency`` levels or open-loop ``rates``
    (requests/s, ``arrivals`` constant or poisson), each level for ``duration_s`` or ``requests``."""
    scenario = LoadScenario(
        concurrency=tuple(int(c) for c in concurrency), rates=tuple(float(r) for r in rates), arrivals=arrivals,
        seed=seed, duration_s=duration_s, requests=requests, warmup_requests=warmup, max_new_tokens=max_new_tokens,
        output_tokens_dist=output_tokens_dist, input_tokens=input_tokens, input_tokens_dist=input_tokens_dist,
        sweep=sweep, sweep_levels=sweep_levels, slo=slo if isinstance(slo, dict) else parse_slo(slo), clients=clients,
        request_timeout_s=request_timeout_s,
    )
    spec = _spec(backends, scenario, options=options, model=model, prompts=prompts, device=device, timeout_s=timeout_s,
                 chat_template=chat_template, baseline=None, trust_remote_code=trust_remote_code, python=python,
                 prices=parse_prices(price_per_hour or ()))
    if clients > 1:
        registry = get_registry()
        for r in spec.backends:
            if registry.get(r.name).capabilities.in_process:
                raise UserError(f"--clients {clients} needs backends reached over HTTP; {r.label!r} runs in its worker"
                                " process, which other processes cannot share (use --clients 1 for it)")
    return start(spec, output=output, progress=progress)


def _spec(backends: Sequence[str], scenario, *, options: Sequence[str], model, prompts, device, timeout_s,
          chat_template, baseline, trust_remote_code, python, prices=None) -> RunSpec:
    registry = get_registry()
    requests = parse_backends(registry, backends, options, device)
    if timeout_s <= 0:
        raise UserError("--timeout must be positive")
    labels = {r.label for r in requests} | {r.name for r in requests} | {"*"}
    for key in (prices or {}):
        if key not in labels:
            raise UserError(f"--price-per-hour names {key!r}, which is not a backend of this run")
    return RunSpec(backends=requests, scenario=scenario, model=model, prompts=prompts, device=device,
                   timeout_s=timeout_s, chat_template=chat_template,
                   baseline=resolve_baseline(requests, baseline), trust_remote_code=trust_remote_code,
                   prices=prices or {}, python=dict(python or {}))


def worker_python(spec: RunSpec, name: str) -> str | None:
    """The interpreter a backend's worker runs under: ``--python NAME=PATH``, else this one when it has
    the engine, else the backend's managed environment (``llmcompare env create NAME``)."""
    if name in spec.python:
        path = Path(spec.python[name]).expanduser()
        if not path.exists():
            raise UserError(f"--python {name}={spec.python[name]}: no such interpreter")
        return str(path)
    backend_spec = get_registry().get(name)
    if backend_spec.missing_module() is None:
        return None
    try:
        from llmcompare.envs import managed_python
    except ImportError:  # per-backend environments are optional
        managed = None
    else:
        managed = managed_python(name)
    if managed:
        return managed
    raise BackendNotInstalled(name, backend_spec.install, backend_spec.missing_module())


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


def _prepare_conversions(spec: RunSpec, resolved: ResolvedModel, pythons: dict[str, str | None]) -> None:
    """A backend running in its own environment may lack the converters (gguf, accelerate): convert
    the model here, once, into the shared cache it will read."""
    registry = get_registry()
    for r in spec.backends:
        formats = registry.get(r.name).capabilities.model_formats
        if pythons.get(r.label) and resolved.kind == "gguf" and "gguf" not in formats and "hf" in formats:
            resolved.hf_dir()


def _check_lengths(texts: list[Prompt], prompt_sets: list[list[Prompt]], context: int | None, new_tokens: int,
                   source: str | None) -> None:
    """Refuse prompts that cannot fit the model's context, before anything runs."""
    if context is None:
        return
    for p in texts:
        if len(p.text) > context * MAX_CHARS_PER_TOKEN:
            raise UserError(
                f"prompt {p.id!r} of {source or 'the prompt set'} is {len(p.text):,} characters, far beyond the model's"
                f" context of {context:,} tokens; shorten it or pass --input-tokens N"
            )
    for prompts in prompt_sets:
        for p in prompts:
            if len(p.token_ids) + new_tokens > context:
                raise UserError(
                    f"prompt {p.id!r} is {len(p.token_ids):,} tokens; with {new_tokens} new tokens that exceeds the"
                    f" model's context of {context:,} tokens; shorten it, lower --input-tokens or --max-new-tokens"
                )


def _workload(spec: RunSpec, resolved: ResolvedModel) -> tuple[list[Prompt], list[StagePlan], dict]:
    """Tokenize once, with the model's own tokenizer, what every backend will be handed."""
    texts = read_prompts(spec.prompts)
    scenario = spec.scenario
    context = resolved.context_length()
    if isinstance(scenario, LoadScenario) and scenario.input_tokens is not None:
        _check_lengths([], [], context, 0, spec.prompts)
    else:
        _check_lengths(texts, [], context, scenario.max_new_tokens, spec.prompts)
    tokenizer = resolved.tokenizer(trust_remote_code=spec.trust_remote_code)
    all_prompts: list[Prompt] = []
    stages: list[StagePlan] = []
    if isinstance(scenario, LatencyScenario):
        for stage, n in scenario.stages():
            prompts = exact_length(texts, tokenizer, n) if n else tokenize(texts, tokenizer, chat=spec.chat_template)
            all_prompts += prompts
            stages.append(StagePlan(stage, n, tuple(p.id for p in prompts)))
    else:
        all_prompts = tokenize(texts, tokenizer, chat=spec.chat_template)
    longest = max((len(p.token_ids) for p in all_prompts), default=0)
    limit = scenario.max_new_tokens
    if isinstance(scenario, LoadScenario):
        from llmcompare.config.spec import parse_dist

        limit = max(limit, parse_dist(scenario.output_tokens_dist, "")[2])
        if scenario.input_tokens is not None:
            longest = max(scenario.input_tokens, parse_dist(scenario.input_tokens_dist, "")[2])
        else:
            from llmcompare.scenarios.loadgen import NONCE_TOKENS

            longest += NONCE_TOKENS
    if context is not None and longest + limit > context:
        raise UserError(
            f"the longest prompt is {longest:,} tokens; with {limit} new tokens that exceeds the model's context of"
            f" {context:,} tokens; shorten the prompts, lower --input-tokens or --max-new-tokens"
        )
    fidelity_ids: list[str] = []
    if spec.fidelity is not None and spec.fidelity.reference is not None:  # natural prompts (never the cut-to-length ones), checked against the context
        natural = tokenize(texts, tokenizer, chat=spec.chat_template)
        _check_lengths([], [natural], context, spec.fidelity.max_new_tokens, spec.prompts)
        have = {p.id for p in all_prompts}
        all_prompts += [p for p in natural if p.id not in have]
        fidelity_ids = [p.id for p in natural]
    nonce = tokenizer(" ".join(f"r{i}" for i in range(64)) + " alpha bravo charlie delta echo foxtrot golf hotel",
                      add_special_tokens=False)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    nonce_ids = sorted({int(i) for i in nonce} - special)
    workload = {
        "nonce_ids": nonce_ids,
        "nonce_text": {str(i): tokenizer.decode([i]) for i in nonce_ids},
        "context_length": context,
        "vocab_size": len(tokenizer),
    }
    if spec.fidelity is not None and spec.fidelity.reference is not None:
        from llmcompare.analysis.fidelity import reference_text

        text_ids = tokenizer(reference_text())["input_ids"]
        workload.update(fidelity_prompt_ids=fidelity_ids, fidelity_text_ids=[int(i) for i in text_ids][:context or None],
                        eos_ids=sorted(_eos_ids(tokenizer, resolved)))
    return all_prompts, stages, workload


def _eos_ids(tokenizer, resolved: ResolvedModel) -> set[int]:
    """Every id that ends a sequence: the tokenizer's EOS and the model's generation config's."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    if resolved.kind != "synthetic":
        try:
            import json

            path = Path(resolved.tokenizer_dir()) / "generation_config.json"
            eos = json.loads(path.read_text()).get("eos_token_id") if path.exists() else None
            ids.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
        except (OSError, ValueError):
            pass
    return {int(i) for i in ids}


def start(spec: RunSpec, *, output: str | Path | None = None, progress: Progress | None = None) -> RunResult:
    """Validate everything, write the run header, run every backend in its worker, return the result."""
    resolved = resolve_model(spec.model)
    _check_formats(spec, resolved)
    pythons = {r.label: worker_python(spec, r.name) for r in spec.backends}
    if spec.fidelity is not None and spec.fidelity.reference is not None:
        ref = spec.fidelity.reference
        formats = get_registry().get(ref.name).capabilities.model_formats
        if "any" not in formats and not set(formats) & set(resolved.formats):
            raise UserError(f"the fidelity reference {ref.label!r} loads {'/'.join(formats)} models, but"
                            f" {resolved.ref!r} is {resolved.kind!r}; pass another --reference or --no-fidelity")
        worker_python(spec, ref.name)  # not installed anywhere: a one-line error now, not after the timed pass
    _prepare_conversions(spec, resolved, pythons)
    prompts, stages, workload = _workload(spec, resolved)
    run_dir = RunDir(output or Path("llmcompare-results") / time.strftime("%Y%m%d-%H%M%S"))
    if run_dir.exists():
        raise UserError(f"{run_dir} already holds a run; pass another --output, or --resume {run_dir}")
    registry = get_registry()
    with run_dir:
        dists = sorted({d for r in spec.backends for d in registry.get(r.name).distributions})
        env = environment.capture(dists, model=resolved.identity(), device=spec.device)
        env["plugins"] = dict(registry.plugins)  # plugin -> "built-in" or "distribution==version"
        header = Header(spec, resolved, env, prompts, stages, workload)
        run_dir.run_json.write_text(__import__("json").dumps(header.to_dict(), indent=2), encoding="utf-8")
        with RecordWriter(run_dir.requests) as w:
            w.write(header.to_dict())
        _execute(run_dir, header, pythons, progress)
    return load_result(run_dir)


def resume(run_dir: str | Path, progress: Progress | None = None) -> RunResult:
    """Continue an interrupted run: finished requests are kept, only the missing ones are run."""
    rd = RunDir(run_dir)
    if not rd.run_json.exists():
        raise UserError(f"nothing to resume in {rd}: no {rd.run_json.name} there (pass the directory of an earlier run)")
    with rd:
        try:
            header = Header.read(rd)
        except ValueError as exc:
            raise UserError(f"{rd.run_json}: not a valid run record ({exc}); cannot resume this run") from None
        pythons = {r.label: worker_python(header.spec, r.name) for r in header.spec.backends}
        _execute(rd, header, pythons, progress)
    return load_result(rd)


def _progress(header: Header, records, label: str) -> tuple[set[tuple[str, str]], int | None, bool]:
    """What ``label`` already finished (keyed by stage and request id, a load level as a whole), how
    many requests remain (None when a level's length is a duration), and whether it is complete."""
    finished_ok = any(b.backend == label and b.status == "ok" for b in records.backends)
    if isinstance(header.spec.scenario, LatencyScenario):
        stages = {s.stage for s in header.stages}
        done = {(r.stage, r.request_id) for r in records.for_backend(label)
                if not r.warmup and r.error is None and r.stage in stages}
        remaining = sum(len(s.prompt_ids) for s in header.stages) * header.spec.scenario.repeats - len(done)
        fidelity_left = 0
        fid = header.spec.fidelity
        if fid is not None and fid.reference is not None:  # the natural-stop pass; "unsupported" is an answer too
            from llmcompare.scenarios import fidelity

            answered = {r.request_id for r in records.for_backend(label, fidelity.STAGE)
                        if r.error is None or r.error_kind == "unsupported"}
            done |= {(fidelity.STAGE, rid) for rid in answered}
            if any(s.backend == label for s in records.scores):
                done.add((fidelity.STAGE, "score"))
            fidelity_left = sum(1 for p in fidelity.prompts(header) if fidelity.request_id(p) not in answered)
        return done, remaining, finished_ok and remaining == 0 and fidelity_left == 0
    levels = {(s.stage, "*") for s in records.stages if s.backend == label}
    return levels, None, finished_ok


def _execute(run_dir: RunDir, header: Header, pythons: dict[str, str | None], progress: Progress | None) -> None:
    for r in header.spec.backends:
        records = read_records(run_dir.requests)
        done, remaining, complete = _progress(header, records, r.label)
        if complete:
            continue  # complete in an earlier run
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
    _judge(run_dir, header, progress)


def _judge(run_dir: RunDir, header: Header, progress: Progress | None) -> None:
    """The fidelity reference judges every backend's natural-stop outputs, in one last worker."""
    fid = header.spec.fidelity
    if fid is None or fid.reference is None or not isinstance(header.spec.scenario, LatencyScenario):
        return
    from llmcompare.scenarios import fidelity

    records = read_records(run_dir.requests)
    outputs = {(r.backend, r.prompt_id) for r in records.requests
               if r.stage == fidelity.STAGE and r.backend in header.spec.labels}
    judged = {f.key for f in records.fidelity if f.reference == fid.reference.label}
    if not outputs - judged:
        return
    label = Job.JUDGE_PREFIX + fid.reference.label
    job = Job(str(run_dir.path), label, kind="judge")
    if progress:  # the bar counts the reference's own answers; judging follows them
        progress.backend_started(label, len(fidelity.prompts(header)))
    rec = run_isolated(run_dir, job, replace(fid.reference, label=label), header.spec.timeout_s,
                       python=worker_python(header.spec, fid.reference.name), device=header.spec.device,
                       on_record=(lambda r: progress.request_done(label, r)) if progress else None)
    if progress:
        progress.backend_done(label, rec)
