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

from dataclasses import dataclass

from llmcompare.analysis.metrics import common_prefix, dedupe
from llmcompare.backend import Scores
from llmcompare.models.prompting import Prompt
from llmcompare.records import FidelityRecord, RecordWriter, RequestRecord, ScoreRecord, read_records
from llmcompare.records.rundir import RunDir
from llmcompare.runner.session import BackendSession, one_line
from llmcompare.scenarios import Context, Header

STAGE = "fidelity"
REFERENCE_STAGE = "fidelity:reference"


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


def run(session: BackendSession, ctx: Context, writer: RecordWriter) -> None:
    """The backend's natural-stop pass and, where it scores, the perplexity of the shipped text."""
    spec = ctx.spec.fidelity
    if spec is None or spec.reference is None or session.spec is None:
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


def judge(session: BackendSession, ctx: Context, writer: RecordWriter) -> None:
    """Generate the reference's outputs, then judge every backend's output against them."""
    spec = ctx.spec.fidelity
    assert spec is not None
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
