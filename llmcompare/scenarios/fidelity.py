"""The fidelity pass: does each backend still say the same thing as the reference?

Two steps, in two kinds of worker, both through a :class:`~llmcompare.runner.session.BackendSession`:

* :func:`run`, in every backend's own worker after its timed pass: each prompt once, greedy, with
  natural stopping (``stop_at_eos``: text forced past EOS means nothing), up to the fidelity cap; a
  ``request`` record per prompt in stage ``fidelity``. A backend that gives log-probabilities also
  scores the shipped reference text (a ``score`` record: its perplexity).
* :func:`judge`, in one last worker that loads the reference: it generates the reference's own
  outputs the same way (stage ``fidelity:reference``), then scores every backend's output by teacher
  forcing and writes one ``fidelity`` record per backend and prompt (:mod:`llmcompare.analysis.fidelity`
  turns them into exact-match rates, divergence verdicts and likelihood gaps).

Sequences are compared with the EOS token appended where an output stopped at EOS, so "stopped
here" against "went on" is a divergence like any other token, and its two sides are scored alike.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from html import escape as html_escape
from typing import Any, ClassVar

import psutil
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from llmcompare.analysis import fidelity as figures
from llmcompare.analysis.fidelity import JUDGE_PREFIX, reference_text
from llmcompare.analysis.metrics import common_prefix, dedupe
from llmcompare.backend import Scores
from llmcompare.config.spec import BackendRequest, parse_backends
from llmcompare.errors import ConfigError, UserError
from llmcompare.hardware.plan import load_model_config
from llmcompare.models.prompting import Prompt
from llmcompare.records import FidelityRecord, RecordWriter, RequestRecord, ScoreRecord, read_records
from llmcompare.records.header import Header
from llmcompare.records.rundir import RunDir
from llmcompare.report.fidelity import FIDELITY_COLUMNS, examples, reference_line, verdict_lines
from llmcompare.report.html import cells, table_html
from llmcompare.report.sections import Section, md_cell
from llmcompare.runner.job import Context, Job
from llmcompare.runner.session import BackendSession, one_line
from llmcompare.scenarios.base import Analysis, Plan, Progress, Scenario

STAGE = "fidelity"
REFERENCE_STAGE = "fidelity:reference"


@dataclass(frozen=True)
class FidelityConfig:
    """The fidelity pass of a latency run (``llmcompare run``; ``--no-fidelity`` turns it off).

    Every backend that can stop at EOS decodes each prompt once more, greedily and with natural
    stopping, up to ``max_new_tokens``; then ``reference`` (by default transformers at the highest
    precision that fits) generates its own outputs and judges every backend's by teacher forcing.
    ``near_tie_margin`` (nats) splits first divergences into near-ties and real divergences when
    reports are built (docs/fidelity.md).
    """

    kind: ClassVar[str] = "fidelity"
    reference: BackendRequest | None = None
    """The judge; None when none can run here (``reference_note`` says why)."""
    reference_note: str = ""
    max_new_tokens: int = 128
    near_tie_margin: float = 0.5
    """Nats. exp(-0.5) ≈ 0.61: within it, the backend's token is at least 61% as likely as the reference's."""
    text_id: str = figures.TEXT_ID
    """Which shipped text the perplexities are of (``prompts/reference_text.txt``)."""
    _asked: str | None = field(default=None, repr=False, compare=False)
    """``--reference`` as given, until :meth:`FidelityScenario.prepare` resolves it (never written)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError("{fidelity_tokens} must be at least 1, got {got}", got=self.max_new_tokens)
        if not (self.near_tie_margin >= 0 and math.isfinite(self.near_tie_margin)):
            raise ConfigError("{near_tie_margin} must be a non-negative number of nats, got {got}",
                              got=self.near_tie_margin)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "reference": self.reference.to_dict() if self.reference else None,
                "reference_note": self.reference_note, "max_new_tokens": self.max_new_tokens,
                "near_tie_margin": self.near_tie_margin, "text_id": self.text_id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FidelityConfig:
        ref = d.get("reference")
        kwargs = {f.name: d[f.name] for f in fields(cls) if f.name not in ("reference", "kind", "_asked") and f.name in d}
        return cls(BackendRequest.from_dict(ref) if ref else None, **kwargs)


def prompts(header: Header) -> list[Prompt]:
    by_id = {p.id: p for p in header.prompts}
    return [by_id[i] for i in header.workload.get("fidelity_prompt_ids", [])]


def request_id(prompt: Prompt) -> str:
    return f"{prompt.id}/fidelity"


def strip_eos(record: RequestRecord, eos_ids: set[int]) -> tuple[list[int], bool]:
    """The output ids without a trailing EOS (engines differ on returning it), and whether it ended at EOS."""
    ids = list(record.token_ids)
    if ids and ids[-1] in eos_ids:
        return ids[:-1], True
    return ids, record.finish_reason in ("stop", "eos_token", "eos")


def run(spec: FidelityConfig, session: BackendSession, ctx: Context, writer: RecordWriter) -> None:
    """The backend's natural-stop pass and, where it scores, the perplexity of the shipped text."""
    if spec.reference is None or session.spec is None:
        return
    n = spec.max_new_tokens
    for p in prompts(ctx.header):
        if ctx.job.is_done(STAGE, request_id(p)):
            continue
        writer.write(session.request(p, n, stage=STAGE, request_id=request_id(p), stop_at_eos=True))
    if session.spec.capabilities.scores and not ctx.job.is_done(STAGE, "score"):
        writer.write(score_text(session, ctx.backend.label, ctx.header, spec.text_id))


def score_text(session: BackendSession, label: str, header: Header, text_id: str) -> ScoreRecord:
    ids = header.workload.get("fidelity_text_ids") or []
    try:
        scores = session.score(ids, 1)
        return ScoreRecord(label, text_id, tokens=len(scores.logprobs), nll_sum=-sum(scores.logprobs))
    except Exception as exc:
        return ScoreRecord(label, text_id, error=one_line(exc))


def judge(spec: FidelityConfig, session: BackendSession, ctx: Context, writer: RecordWriter) -> None:
    """Generate the reference's outputs, then judge every backend's output against them."""
    assert spec.reference is not None
    header = ctx.header
    eos_ids = set(header.workload.get("eos_ids") or [])
    eos_token = min(eos_ids) if eos_ids else None
    label = ctx.backend.label
    records = read_records(RunDir(ctx.job.run_dir).requests)
    judged = {f.key for f in records.fidelity if f.reference == spec.reference.label}
    ref_outputs = {r.prompt_id: r for r in records.for_backend(label, REFERENCE_STAGE) if r.error is None}
    can_score = bool(session.spec and session.spec.capabilities.scores)
    if can_score and not any(s.backend == label for s in records.scores):
        writer.write(score_text(session, label, header, spec.text_id))
    tokenizer = header.model.tokenizer(trust_remote_code=header.spec.trust_remote_code)
    outputs = [r for r in records.requests if r.stage == STAGE and r.backend in header.spec.labels]
    for p in prompts(header):
        mine = dedupe([r for r in outputs if r.prompt_id == p.id and (r.backend, p.id) not in judged])
        if not mine:  # every answer to this prompt judged already (a resumed judge)
            continue
        ref = ref_outputs.get(p.id)
        if ref is None:
            ref = session.request(p, spec.max_new_tokens, stage=REFERENCE_STAGE, request_id=request_id(p),
                                  stop_at_eos=True)
            writer.write(ref)
        reference = _Reference.of(session, p, ref, eos_ids, eos_token, tokenizer, can_score)
        for out in mine:  # one answer per backend (a resumed pass may have written two)
            writer.write(_judge_one(session, p, reference, out, eos_ids, eos_token, tokenizer, spec.reference.label))


def choose_reference(registry, requests: tuple[BackendRequest, ...], reference: str | None, device: str,
                     resolved, options=()) -> tuple[BackendRequest | None, str]:
    """The judge and a note on why: ``--reference`` (a run label, a run backend's name, or any
    backend spec), else transformers at the highest precision whose weights fit the device."""
    if reference is not None:
        matches = [r for r in requests if r.label == reference] or [r for r in requests if r.name == reference]
        if len(matches) == 1:
            return matches[0], f"--reference {reference}"
        if len(matches) > 1:
            raise UserError(f"--reference {reference!r} matches several backends of this run"
                            f" ({', '.join(r.label for r in matches)}); name one by its label")
        scopes = {reference, reference.partition("@")[0], reference.partition(":")[0]}
        own = [o for o in options if o.partition("=")[0].rpartition(".")[0] in scopes]  # its scoped options only
        return parse_backends(registry, [reference], own, device)[0], f"--reference {reference}"
    if resolved.kind == "synthetic":
        return None, ("fidelity not judged: a synthetic model's random weights make nearly every divergence a"
                      " near-tie; pass --reference BACKEND to judge it anyway")
    offered = [spec for spec in registry.backends.values() if spec.reference_variants]
    if not offered:
        return None, "no fidelity reference: no registered backend offers one; pass --reference BACKEND"
    problems = []
    for spec in offered:
        if spec.missing_module() is not None:
            problems.append(f"{spec.name} is not installed ({spec.install})")
            continue
        if not set(spec.capabilities.model_formats) & set(resolved.formats):
            problems.append(f"{spec.name} cannot load a {resolved.kind} model")
            continue
        variant, why = _highest_precision(spec, resolved, device)
        if variant is None:
            problems.append(why)
            continue
        label = f"{spec.name}:{variant}"
        same = [r for r in requests if r.label == label]
        if same:
            return same[0], f"default: {why}"
        return parse_backends(registry, [label], [], device)[0], f"default: {why}"
    return None, f"no fidelity reference: {'; '.join(problems)}; pass --reference BACKEND or --no-fidelity"


def _highest_precision(spec, resolved, device: str) -> tuple[str | None, str]:
    """The backend's highest-precision reference variant whose weights fit in 80% of the device's free
    memory (its ``reference_variants``, highest precision first), else none."""
    kind = device.partition(":")[0]
    choices = [v for v in spec.reference_variants if kind in v.devices]
    if not choices:
        return None, f"{spec.name} offers no reference variant on {device}"
    try:
        params = load_model_config(resolved.ref).parameters
    except Exception:
        return choices[0].variant, f"{spec.name} {choices[0].variant} (model size unknown)"
    free = _free_memory(device)
    if free is None:
        return choices[0].variant, (f"{spec.name} {choices[0].variant} ({params / 1e9:.2f} B parameters; free memory"
                                    " unknown)")
    for v in choices:
        need = params * v.bytes_per_parameter
        if need <= 0.8 * free:
            return v.variant, (f"{spec.name} {v.variant}, the highest precision whose {need / 1e9:.1f} GB of"
                               f" weights fit 80% of the {free / 1e9:.1f} GB free on {device}")
    return None, (f"the {params / 1e9:.1f} B-parameter model does not fit {device} in"
                  f" {' or '.join(v.variant for v in choices)}")


def _free_memory(device: str) -> int | None:
    if device.startswith("cuda"):
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                index = int(device.partition(":")[2] or 0)
                return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).free)
            finally:
                pynvml.nvmlShutdown()
        except Exception:
            return None
    try:
        return int(psutil.virtual_memory().available)
    except Exception:
        return None



@dataclass
class _Answer:
    """An output as the judge compares it: its ids without EOS, whether it ended at EOS, the sequence
    with the EOS marker appended where it did, and its text."""

    ids: list[int]
    eos: bool
    seq: list[int]
    text: str

    @classmethod
    def of(cls, record: RequestRecord, eos_ids: set[int], eos_token: int | None, tokenizer) -> _Answer:
        ids, eos = strip_eos(record, eos_ids)
        marker = [eos_token] if eos and eos_token is not None else []
        return cls(ids, eos, ids + marker, tokenizer.decode(ids))


@dataclass
class _Reference:
    """The reference's answer to one prompt, scored once for every backend it is compared with."""

    error: str | None = None
    answer: _Answer | None = None
    scored: bool = False
    """The reference gives log-probabilities (without them the judge compares prefixes only)."""
    scores: Scores | None = None
    score_error: str | None = None

    @classmethod
    def of(cls, session: BackendSession, prompt: Prompt, ref: RequestRecord, eos_ids: set[int], eos_token: int | None,
           tokenizer, can_score: bool) -> _Reference:
        if ref.error is not None:
            return cls(error=f"the reference failed on this prompt: {ref.error}")
        answer = _Answer.of(ref, eos_ids, eos_token, tokenizer)
        out = cls(answer=answer, scored=can_score)
        if can_score and answer.seq:
            context = list(prompt.token_ids)
            try:
                out.scores = session.score(context + answer.seq, len(context), top_k=2)
            except Exception as exc:
                out.score_error = one_line(exc)
        return out


def _judge_one(session: BackendSession, prompt: Prompt, reference: _Reference, out: RequestRecord, eos_ids: set[int],
               eos_token: int | None, tokenizer, label: str) -> FidelityRecord:
    rec = FidelityRecord(backend=out.backend, reference=label, prompt_id=prompt.id)
    if reference.error is not None:
        rec.error = reference.error
        return rec
    if out.error is not None:
        rec.error = out.error
        return rec
    if out.count_source != "ids" or (out.output_tokens and not out.token_ids):
        rec.error = f"the backend gave no token ids (count source {out.count_source!r})"
        return rec
    ref = reference.answer
    assert ref is not None
    mine = _Answer.of(out, eos_ids, eos_token, tokenizer)
    rec.eos, rec.ref_eos = mine.eos, ref.eos
    rec.tokens, rec.ref_tokens = len(mine.ids), len(ref.ids)
    rec.text, rec.ref_text = mine.text, ref.text
    rec.prefix = common_prefix(mine.seq, ref.seq)
    rec.diverged = mine.seq != ref.seq
    if not reference.scored:
        return rec
    context = list(prompt.token_ids)
    try:
        if reference.score_error is not None:
            raise RuntimeError(reference.score_error)
        scores = session.score(context + mine.seq, len(context), top_k=2) if mine.seq else None
    except Exception as exc:
        rec.error = f"the reference could not score this output: {one_line(exc)}"
        return rec
    theirs = reference.scores
    if scores is not None:
        rec.ll_sum, rec.ll_tokens = sum(scores.logprobs), len(scores.logprobs)
    if theirs is not None:
        rec.ref_ll_sum, rec.ref_ll_tokens = sum(theirs.logprobs), len(theirs.logprobs)
    k = rec.prefix
    if rec.diverged and theirs is not None and k < len(ref.seq):
        rec.divergence_ref_logprob = theirs.logprobs[k]
        if scores is not None and k < len(mine.seq):
            rec.divergence_logprob = scores.logprobs[k]
        top = theirs.top[k] if k < len(theirs.top) else []
        if len(top) >= 2:
            rec.divergence_top2_gap = top[0][1] - top[1][1]
    return rec


# ---- the scenario -------------------------------------------------------------------------------

@dataclass
class FidelityAnalysis(Analysis):
    fidelity: list[figures.FidelitySummary] = field(default_factory=list)
    """One summary per backend of the run (:class:`llmcompare.analysis.fidelity.FidelitySummary`)."""
    fidelity_reference_perplexity: float | None = None
    config: FidelityConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"fidelity": {"spec": self.config.to_dict() if self.config else None,
                             "reference_perplexity": self.fidelity_reference_perplexity,
                             "backends": [f.to_dict() for f in self.fidelity]}}


class FidelityScenario(Scenario):
    """Joins ``llmcompare run``: each backend's natural-stop pass after its timed one, then the judge."""

    name = "fidelity"
    Config = FidelityConfig

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        f = parser.add_argument_group("fidelity (does each backend still say the same thing? docs/fidelity.md)")
        f.add_argument("--no-fidelity", dest="fidelity", action="store_false",
                       help="skip the fidelity pass (greedy, natural stop, judged by a reference model)")
        f.add_argument("--reference", default=None, metavar="BACKEND",
                       help="the fidelity judge: one of this run's backends or any backend[:variant] (default: the"
                            " highest precision of a backend that offers itself as the reference, transformers"
                            " built in, that fits)")
        f.add_argument("--fidelity-tokens", type=int, default=FidelityConfig.max_new_tokens, metavar="N",
                       help="most tokens per output in the fidelity pass, which stops at EOS (default %(default)s)")
        f.add_argument("--near-tie-margin", type=float, default=FidelityConfig.near_tie_margin, metavar="NATS",
                       help="a first divergence whose two tokens the reference scores within this many nats is a"
                            " near-tie (default %(default)s)")

    def add_report_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--near-tie-margin", type=float, default=None, metavar="NATS",
                            help="judge the fidelity pass's divergences at another margin (default: the run's)")

    def report_overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        margin = getattr(args, "near_tie_margin", None)
        if margin is None:
            return {}
        FidelityConfig(near_tie_margin=margin)  # checked like the run's own
        return {"near_tie_margin": margin}

    def config_from_args(self, args: argparse.Namespace) -> FidelityConfig | None:
        if not getattr(args, "fidelity", True):
            return None
        return FidelityConfig(max_new_tokens=args.fidelity_tokens, near_tie_margin=args.near_tie_margin,
                              reference_note=f"--reference {args.reference}" if args.reference else "",
                              _asked=args.reference)

    def prepare(self, config: FidelityConfig, spec, registry, model, options: Sequence[str] = ()) -> FidelityConfig:
        ref, note = choose_reference(registry, spec.backends, config._asked, spec.device, model, options)
        return replace(config, reference=ref, reference_note=note, _asked=None)

    def backends_to_install(self, config: FidelityConfig) -> list[BackendRequest]:
        return [config.reference] if config.reference is not None else []

    # ---- plan: the natural prompts, the shipped text, the EOS ids ----
    def plan(self, config: FidelityConfig, ctx) -> Plan:
        if config.reference is None:
            return Plan()
        natural = ctx.natural()
        ctx.check_fits(natural, config.max_new_tokens)
        text_ids = ctx.tokenizer(reference_text())["input_ids"]
        return Plan(prompts=natural, workload={
            "fidelity_prompt_ids": [p.id for p in natural],
            "fidelity_text_ids": [int(i) for i in text_ids][:ctx.context_length or None],
            "eos_ids": sorted(ctx.eos_ids())})

    # ---- run ----
    def run(self, config: FidelityConfig, session, ctx, writer) -> None:
        run(config, session, ctx, writer)

    def steps(self):
        return {"judge": judge}

    def progress(self, config: FidelityConfig, header, records, label) -> Progress:
        if config.reference is None:
            return Progress(complete=True)
        answered = {r.request_id for r in records.for_backend(label, STAGE)
                    if r.error is None or r.error_kind == "unsupported"}  # "unsupported" is an answer too
        done = {(STAGE, rid) for rid in answered}
        if any(s.backend == label for s in records.scores):
            done.add((STAGE, "score"))
        left = sum(1 for p in prompts(header) if request_id(p) not in answered)
        return Progress(done, 0, left == 0)

    def finish(self, config: FidelityConfig, header, records_path, runner) -> None:
        """The reference judges every backend's natural-stop outputs, in one last worker."""
        if config.reference is None:
            return
        records = read_records(records_path)
        outputs = {(r.backend, r.prompt_id) for r in records.requests
                   if r.stage == STAGE and r.backend in header.spec.labels}
        judged = {f.key for f in records.fidelity if f.reference == config.reference.label}
        if not outputs - judged:
            return
        label = JUDGE_PREFIX + config.reference.label
        job = Job(str(records_path.parent), label, step="judge", scenario=self.name,
                  request=replace(config.reference, label=label))
        runner.run_job(job, job.request, total=len(prompts(header)))

    def describe(self, record: RequestRecord) -> tuple[int, str]:
        if record.stage == REFERENCE_STAGE:  # the judge: its own answers, then the judging
            return 1, "reference answers, then judging"
        return 0, f"fidelity pass: {record.prompt_id}"

    # ---- analyse and report ----
    def analyse(self, config: FidelityConfig, header, records) -> FidelityAnalysis:
        fid = figures.summarize(records, config, header.spec.labels)
        return FidelityAnalysis([], fid, figures.reference_perplexity(records, config), config)

    def sections(self, config: FidelityConfig, result) -> list[Section]:
        return [FidelitySection(result)]


class FidelitySection(Section):
    """The fidelity table, one verdict line per backend (speed beside fidelity), real divergences."""

    def __init__(self, result):
        self.result = result

    def console(self, console: Console) -> None:
        result = self.result
        if result.fidelity and any(f.prompts for f in result.fidelity):
            t = RichTable(title="Fidelity against the reference (greedy, natural stop; docs/fidelity.md)")
            for col in FIDELITY_COLUMNS:
                t.add_column(col.header, justify="right" if col.numeric else "left")
            for f in result.fidelity:
                t.add_row(*[f"[red]{escape(c.cell(f))}" if c.bad is not None and c.bad(f) else escape(c.cell(f))
                            for c in FIDELITY_COLUMNS])
            console.print(t)
        console.print(escape(reference_line(result)))
        for line in verdict_lines(result):
            console.print(escape(f"  {line}"))

    def markdown(self) -> list[str]:
        result = self.result
        lines = ["## Fidelity: does each backend still say the same thing?", "", reference_line(result), ""]
        lines += [f"- {line}" for line in verdict_lines(result)]
        if any(f.prompts for f in result.fidelity):
            lines += ["", "| " + " | ".join(c.header for c in FIDELITY_COLUMNS) + " |",
                      "|" + "---|" * len(FIDELITY_COLUMNS)]
            lines += ["| " + " | ".join(md_cell(c.cell(f)) for c in FIDELITY_COLUMNS) + " |" for f in result.fidelity]
        shown = examples(result)
        if shown:
            lines += ["", "Real divergences (the text both agree on, then each continuation):", "",
                      "| backend | prompt | token | gap nats | … shared | reference goes on | backend goes on |",
                      "|---|---|---|---|---|---|---|"]
            lines += ["| " + " | ".join(md_cell(e[k]) for k in ("backend", "prompt_id", "position", "gap", "shared",
                                                               "reference", "backend_text")) + " |" for e in shown]
        lines += ["", "A near-tie: at the first divergence the reference scores the backend's token within the margin"
                  " of its own; a real divergence: beyond it. Log-likelihood gap: the reference's mean log-probability"
                  " per token of its own outputs minus of the backend's. See docs/fidelity.md."]
        return lines

    def html(self) -> list[str]:
        result = self.result
        parts = []
        lines = verdict_lines(result)
        if lines:
            parts += ["<h2>At a glance</h2>", '<ul class="recs">'] + [f"<li>{html_escape(x)}</li>" for x in lines] + [
                "</ul>"]
        parts += ["<h2>Fidelity: does each backend still say the same thing?</h2>",
                  f'<p class="note">{html_escape(reference_line(result))}</p>']
        if any(f.prompts for f in result.fidelity):
            head = [(c.header, "num" if c.numeric else "") for c in FIDELITY_COLUMNS]
            parts.append(f'<div class="wide">{table_html("fidelity", head, [cells(FIDELITY_COLUMNS, f) for f in result.fidelity])}</div>')
        shown = examples(result)
        if shown:
            keys = ("backend", "prompt_id", "position", "gap", "shared", "reference", "backend_text")
            parts.append(table_html("divergences", [("backend", ""), ("prompt", ""), ("token", "num"), ("gap nats", "num"),
                                                    ("… shared text", ""), ("reference goes on", ""),
                                                    ("backend goes on", "")],
                                    [[(e[k], "num" if k in ("position", "gap") else "") for k in keys] for e in shown]))
        parts.append('<p class="note">Near-tie: at the first divergence the reference scores the backend\'s token within'
                     " the margin of its own; real divergence: beyond it. See docs/fidelity.md.</p>")
        return parts
