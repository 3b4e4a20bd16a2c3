"""Fidelity: the reference's judgement of each backend's outputs, as figures a report can print.

The records come from :mod:`llmcompare.scenarios.fidelity`; every definition is in docs/fidelity.md.
Per backend, over the prompts both it and the reference answered:

* **exact match**: the output, with EOS where it stopped at EOS, equals the reference's;
* **agreeing prefix**: tokens equal from the start; **first divergence**: that prefix's length, for
  the outputs that differ;
* **verdict at the first divergence**: with ``lp(x)`` the reference's teacher-forced log-probability
  of token ``x`` after the shared prefix, the divergence is a *near-tie* when
  ``lp(reference token) − lp(backend token) ≤ margin`` (the backend picked a token the reference
  nearly picked itself: a rounding-level flip), else a *real divergence*. An output that simply
  ends there (no token) is a real divergence;
* **log-likelihood**: the reference's mean log-probability per token of the backend's whole output
  (teacher forced), next to that of its own output; the **gap** is their difference per prompt,
  averaged (0 for identical outputs; a drifted engine writes text the reference finds unlikely);
* **similarity**: rapidfuzz's normalised Indel similarity of the two decoded texts (0–1);
* **same stop**: both stopped at EOS at the same position, or both ran to the cap;
* **perplexity** of the shipped reference text, from the backend's own log-probabilities.

Rates and means carry 95% bootstrap intervals over prompts (:func:`llmcompare.analysis.statistics.bootstrap_ci`).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import asdict, dataclass, field
from typing import Any

from rapidfuzz.distance import Indel

from llmcompare.analysis.metrics import percentile
from llmcompare.analysis.statistics import bootstrap_ci
from llmcompare.records import FidelityRecord, RunRecords

TEXT_ID = "reference-text-v1"
"""Which shipped text the perplexities are of (``prompts/reference_text.txt``)."""
TEXT_FILE = "reference_text.txt"


def reference_text() -> str:
    """The fixed text every scoring backend's perplexity is measured on (public-domain English)."""
    return importlib.resources.files("llmcompare.prompts").joinpath(TEXT_FILE).read_text(encoding="utf-8")


# ---- judging ------------------------------------------------------------------------------------

def verdict(rec: FidelityRecord, margin: float) -> str | None:
    """``same``, ``near-tie``, ``divergence``, or None when the output could not be judged. Without
    the reference's log-probabilities a divergence is ``differs`` (no verdict possible)."""
    if rec.error is not None:
        return None
    if not rec.diverged:
        return "same"
    if rec.divergence_ref_logprob is None:
        return "differs" if rec.ll_sum is None else "divergence"
    if rec.divergence_logprob is None:
        return "divergence"  # the output ended where the reference went on
    return "near-tie" if rec.divergence_ref_logprob - rec.divergence_logprob <= margin else "divergence"


def similarity(a: str, b: str) -> float:
    return float(Indel.normalized_similarity(a, b))


@dataclass
class FidelitySummary:
    """One backend against the reference."""

    backend: str
    reference: str
    prompts: int = 0
    """Prompts judged (both the backend and the reference answered)."""
    errors: int = 0
    exact: int = 0
    exact_rate: dict[str, Any] | None = None
    """The share of prompts whose output equals the reference's, with its bootstrap interval."""
    mean_prefix: dict[str, Any] | None = None
    first_divergence_p50: float | None = None
    near_ties: int = 0
    divergences: int = 0
    """Real divergences (beyond the margin)."""
    unjudged_differences: int = 0
    """Outputs that differ where the reference gave no log-probabilities."""
    ll_mean: float | None = None
    """The reference's mean log-probability per token of this backend's outputs."""
    ref_ll_mean: float | None = None
    ll_gap: dict[str, Any] | None = None
    """Mean over prompts of (reference's own mean log-prob per token − this backend's), with its interval."""
    similarity: dict[str, Any] | None = None
    same_stop: int = 0
    perplexity: float | None = None
    """Of the shipped reference text, from this backend's own log-probabilities."""
    perplexity_tokens: int | None = None
    note: str | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    """Up to three real divergences: prompt, position, both continuations from there."""

    def headline(self) -> str:
        """"62% exact match, 9 real divergences in 30" (what the reports print beside the speed)."""
        if not self.prompts:
            return self.note or "not judged"
        exact = f"{self.exact / self.prompts:.0%} exact match"
        if self.unjudged_differences:
            return f"{exact}, {self.unjudged_differences} differ (no log-probabilities to judge) in {self.prompts}"
        return f"{exact}, {self.divergences} real divergence{'s' if self.divergences != 1 else ''} in {self.prompts}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["headline"] = self.headline()
        return d


def summarize(records: RunRecords, spec: Any, labels: list[str],
              margin: float | None = None) -> list[FidelitySummary]:
    """One :class:`FidelitySummary` per backend of the run (the reference itself included when it is
    one of them: it should agree fully with its own second pass)."""
    margin = spec.near_tie_margin if margin is None else margin
    reference = spec.reference.label if spec.reference else None
    scores = {s.backend: s for s in records.scores if s.text_id == spec.text_id}
    out = []
    for label in labels:
        summary = FidelitySummary(backend=label, reference=reference or "none")
        score = scores.get(label)
        if score is not None and score.error is None:
            summary.perplexity, summary.perplexity_tokens = score.perplexity, score.tokens
        if reference is None:
            summary.note = spec.reference_note or "no fidelity reference"
            out.append(summary)
            continue
        mine = [f for f in records.fidelity if f.backend == label and f.reference == reference]
        judged = [f for f in mine if f.error is None]
        summary.errors = len(mine) - len(judged)
        summary.prompts = len(judged)
        if not judged:
            fid_requests = [r for r in records.requests if r.backend == label and r.stage == "fidelity"]  # its own stage
            errs = [r.error for r in fid_requests if r.error] + [f.error for f in mine if f.error]
            summary.note = (errs[0] if errs else
                            "not judged: the backend or the reference did not finish the fidelity pass")
            out.append(summary)
            continue
        verdicts = [verdict(f, margin) for f in judged]
        summary.exact = verdicts.count("same")
        summary.near_ties = verdicts.count("near-tie")
        summary.divergences = verdicts.count("divergence")
        summary.unjudged_differences = verdicts.count("differs")
        ids = [f.prompt_id for f in judged]
        summary.exact_rate = _ci([1.0 if v == "same" else 0.0 for v in verdicts], ids)
        summary.mean_prefix = _ci([float(f.prefix) for f in judged], ids)
        firsts = [float(f.prefix) for f in judged if f.diverged]
        summary.first_divergence_p50 = percentile(firsts, 50) if firsts else None
        lls = [(f.ll_sum / f.ll_tokens, f.ref_ll_sum / f.ref_ll_tokens) for f in judged
               if f.ll_sum is not None and f.ll_tokens and f.ref_ll_sum is not None and f.ref_ll_tokens]
        if lls:
            summary.ll_mean = sum(a for a, _ in lls) / len(lls)
            summary.ref_ll_mean = sum(b for _, b in lls) / len(lls)
            summary.ll_gap = _ci([b - a for a, b in lls], None)
        summary.similarity = _ci([similarity(f.text, f.ref_text) for f in judged], ids)
        summary.same_stop = sum(1 for f in judged if f.eos == f.ref_eos and (not f.eos or f.tokens == f.ref_tokens))
        summary.examples = [_example(f) for f, v in zip(judged, verdicts) if v == "divergence"][:3]
        out.append(summary)
    return out


JUDGE_PREFIX = "judge:"
"""The fidelity reference runs under its own label, ``judge:<its label>``, so it is never taken for a
backend of the run."""


def reference_perplexity(records: RunRecords, spec: Any) -> float | None:
    if spec.reference is None:
        return None
    for s in records.scores:
        if s.backend == JUDGE_PREFIX + spec.reference.label and s.text_id == spec.text_id:
            return s.perplexity
    return None


def _ci(values: list[float], clusters: list[str] | None) -> dict[str, Any] | None:
    if not values:
        return None
    ci = bootstrap_ci(values, stat="mean", clusters=clusters)
    if ci is None:  # one value: the figure without an interval
        return {"value": values[0], "lo": None, "hi": None, "n": 1}
    return ci


def _example(f: FidelityRecord) -> dict[str, Any]:
    gap = (f.divergence_ref_logprob - f.divergence_logprob
           if f.divergence_ref_logprob is not None and f.divergence_logprob is not None else None)
    return {"prompt_id": f.prompt_id, "position": f.prefix, "logprob_gap": gap,
            "reference_text": f.ref_text, "text": f.text}

