"""``llmcompare compare RUN_A RUN_B``: the same backends on two machines or versions, metric by metric.

For every backend and stage present in both runs, each metric is compared as the ratio of medians
``median(B) / median(A)`` over the measured requests, with a 95% percentile-bootstrap interval that
resamples prompts on each side (:func:`llmcompare.analysis.statistics.bootstrap_ratio`). The verdict reads the interval: for a latency (lower is
better) an interval wholly under 1 is *faster*, wholly over 1 *slower*, and one containing 1 is *no
difference*; for a throughput the other way round.

``--fail-if tpot_p50>+5%`` makes it a regression gate: the command exits 1 only when B is worse than A
beyond the threshold *with confidence*, i.e. when the whole interval lies past it (for ``>+5%``: the
lower bound above 1.05; for ``tok_s_p50<-5%``: the upper bound under 0.95).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmcompare.analysis import metrics, statistics
from llmcompare.analysis.result import load_result
from llmcompare.errors import UserError

#: Metric name -> (the per-request figure, True when lower is better).
METRICS: dict[str, tuple[str, bool]] = {
    "tpot_p50": ("tpot_ms", True),
    "ttft_p50": ("ttft_ms", True),
    "e2e_p50": ("e2e_ms", True),
    "tok_s_p50": ("tok_s", False),
}
_GATE = re.compile(r"^\s*(\w+)\s*([<>])\s*([+-]?\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str
    worse_if_above: bool
    threshold: float
    """As a ratio: ``+5%`` is 1.05, ``-5%`` is 0.95."""

    @classmethod
    def parse(cls, text: str) -> Gate:
        m = _GATE.match(text)
        if not m or m.group(1) not in METRICS:
            raise UserError(f"--fail-if {text!r} must look like METRIC>+5% or METRIC<-5% with METRIC one of"
                            f" {', '.join(METRICS)}")
        name, op, pct = m.group(1), m.group(2), float(m.group(3))
        lower_better = METRICS[name][1]
        if (op == ">") != lower_better:
            raise UserError(f"--fail-if {text!r}: {name} gets worse by going {'up' if lower_better else 'down'};"
                            f" write {name}{'>' if lower_better else '<'}{'+' if lower_better else '-'}{abs(pct):g}%")
        return cls(name, op == ">", 1.0 + pct / 100.0)

    def fails(self, ratio: dict[str, Any] | None) -> bool:
        if ratio is None:
            return False
        return ratio["lo"] > self.threshold if self.worse_if_above else ratio["hi"] < self.threshold

    def __str__(self) -> str:
        return f"{self.metric}{'>' if self.worse_if_above else '<'}{(self.threshold - 1) * 100:+g}%"


def verdict(ratio: dict[str, Any] | None, lower_better: bool) -> str:
    """B/A's verdict: faster/slower for a latency, higher/lower for a throughput, or no difference."""
    if ratio is None:
        return "not enough data"
    if lower_better:
        return statistics.verdict(ratio["lo"], ratio["hi"], higher_is_better=False)
    return statistics.verdict(ratio["lo"], ratio["hi"], higher_is_better=True, better="higher", worse="lower")


def compare_runs(run_a: str, run_b: str) -> list[dict[str, Any]]:
    """One row per backend, stage and metric present in both runs."""
    a, b = load_result(run_a), load_result(run_b)

    def series(result, label: str, stage: str, key: str) -> tuple[list[float], list[str]]:
        """The measured values and each one's prompt (the unit the interval resamples)."""
        pairs = [(v, r.prompt_id) for r in result.requests if r.backend == label and r.stage == stage and not r.warmup
                 and r.error is None and (v := metrics.request_row(r)[key]) is not None]
        return [v for v, _ in pairs], [p for _, p in pairs]

    rows = []
    keys_b = {(s.backend, s.stage) for s in b.summaries}
    for s in a.summaries:
        if (s.backend, s.stage) not in keys_b:
            continue
        for name, (key, lower_better) in METRICS.items():
            (va, pa), (vb, pb) = series(a, s.backend, s.stage, key), series(b, s.backend, s.stage, key)
            ratio = statistics.bootstrap_ratio(va, vb, clusters_a=pa, clusters_b=pb)
            rows.append({"backend": s.backend, "stage": s.stage, "metric": name, "ratio": ratio,
                         "verdict": verdict(ratio, lower_better)})
    if not rows:
        raise UserError(f"{run_a} and {run_b} share no backend and stage to compare; run the same backends in both")
    return rows
