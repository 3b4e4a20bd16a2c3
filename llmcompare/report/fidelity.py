"""Fidelity beside speed, for every report: the one table and the one-line verdicts the console,
``summary.md`` and ``report.html`` all print, so "3× faster, 62% exact match, 9 real divergences in 30"
reads the same everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmcompare.analysis.metrics import common_prefix
from llmcompare.report.columns import Column, fmt

if TYPE_CHECKING:
    from llmcompare.analysis.fidelity import FidelitySummary
    from llmcompare.analysis.result import RunResult


def interval(ci: dict[str, Any] | None, percent: bool = False, digits: int = 2) -> str:
    """``62% [41%, 80%]`` or ``-0.12 [-0.20, -0.05]``; the value alone when there is no interval."""
    if not ci or ci.get("value") is None:
        return "–"
    f = (lambda x: f"{x:.0%}") if percent else (lambda x: f"{x:,.{digits}f}")
    if ci.get("lo") is None:
        return f(ci["value"])
    return f"{f(ci['value'])} [{f(ci['lo'])}, {f(ci['hi'])}]"


def _judged(s: FidelitySummary) -> str:
    return str(s.prompts) if s.prompts else (s.note or "not judged")


FIDELITY_COLUMNS: list[Column] = [
    Column("backend", "backend", lambda s: s.backend, str, numeric=False),
    Column("judged", "prompts judged", _judged, str, numeric=False,
           bad=lambda s: not s.prompts),
    Column("exact", "exact match [95% CI]", lambda s: s.exact_rate, lambda x: interval(x, percent=True)),
    Column("prefix", "mean agreeing prefix", lambda s: s.mean_prefix, lambda x: interval(x, digits=1)),
    Column("first_divergence", "first divergence p50", lambda s: s.first_divergence_p50, lambda x: fmt(x, 0)),
    Column("near_ties", "near-ties", lambda s: s.near_ties if s.prompts else None, fmt),
    Column("divergences", "real divergences", lambda s: s.divergences if s.prompts else None, fmt,
           bad=lambda s: bool(s.divergences)),
    Column("ll_gap", "log-lik. gap nats/token", lambda s: s.ll_gap, lambda x: interval(x, digits=3)),
    Column("similarity", "text similarity", lambda s: s.similarity, lambda x: interval(x, percent=True)),
    Column("same_stop", "same stop", lambda s: f"{s.same_stop}/{s.prompts}" if s.prompts else None, fmt),
    Column("perplexity", "perplexity (own)", lambda s: s.perplexity, lambda x: fmt(x, 2)),
]
"""The fidelity table. ``log-lik. gap`` is the reference's mean log-probability per token of its own
outputs minus of this backend's (0: as likely as the reference's; larger: text the reference finds
less likely). ``perplexity (own)`` is the backend's own, on the shipped reference text."""


def speed_phrase(result: RunResult, label: str) -> str | None:
    """"1.80× faster than X [1.62, 1.99] (TPOT, paired by prompt)" from the first stage's comparison."""
    c = next((c for c in result.comparisons if c["backend"] == label), None)
    if c is None:
        return None
    s = c.get("speedup_tpot") or c.get("speedup_e2e")
    base = c.get("baseline")
    if not s:
        r = c.get("tpot_ratio")
        if not r:
            return None
        return f"TPOT {r['ratio']:.2f}× {base}'s" + (" (within noise)" if r["within_noise"] else "")
    metric = "TPOT" if c.get("speedup_tpot") else "e2e"
    x = s["speedup"]
    if s["within_noise"]:
        return f"no faster than {base} (TPOT {x:.2f}× [{s['lo']:.2f}, {s['hi']:.2f}], within noise)"
    word, shown = ("faster", x) if x >= 1 else ("slower", 1.0 / x)
    lo, hi = (s["lo"], s["hi"]) if x >= 1 else (1.0 / s["hi"], 1.0 / s["lo"])
    return f"{shown:.2f}× {word} than {base} [{lo:.2f}, {hi:.2f}] ({metric}, paired by prompt)"


def verdict_lines(result: RunResult) -> list[str]:
    """One line per backend: speed against the baseline, then fidelity against the reference."""
    fid = result.spec.config("fidelity")
    judged = fid is not None and fid.reference is not None
    lines = []
    for f in result.fidelity:
        parts = [p for p in (speed_phrase(result, f.backend), f.headline() if judged else None) if p]
        if parts:  # without a reference, reference_line() says why once
            lines.append(f"{f.backend}: " + ", ".join(parts))
    return lines


def reference_line(result: RunResult) -> str:
    fid = result.spec.config("fidelity")
    if fid is None:
        return ""
    if fid.reference is None:
        return fid.reference_note
    ppl = result.fidelity_reference_perplexity
    return (f"Fidelity reference: {fid.reference.label} ({fid.reference_note}); greedy, natural stop, up to"
            f" {fid.max_new_tokens} tokens; near-tie margin {fid.near_tie_margin:g} nats"
            + (f"; its perplexity on the reference text {ppl:.2f}" if ppl is not None else "") + ".")


def examples(result: RunResult, limit: int = 3, width: int = 60) -> list[dict[str, str]]:
    """A few real divergences, each as the shared text and both continuations from the divergence."""
    out = []
    for f in result.fidelity:
        for ex in f.examples[:limit]:
            ref, mine = ex["reference_text"], ex["text"]
            cut = common_prefix(ref, mine)
            out.append({"backend": f.backend, "prompt_id": ex["prompt_id"], "position": str(ex["position"]),
                        "gap": "–" if ex.get("logprob_gap") is None else f"{ex['logprob_gap']:.2f}",
                        "shared": _tail(ref[:cut], width), "reference": _head(ref[cut:], width),
                        "backend_text": _head(mine[cut:], width)})
    return out


def _tail(s: str, n: int) -> str:
    s = s.replace("\n", "⏎")
    return s if len(s) <= n else "…" + s[-n:]


def _head(s: str, n: int) -> str:
    s = s.replace("\n", "⏎")
    return (s if len(s) <= n else s[:n] + "…") or "(end)"
