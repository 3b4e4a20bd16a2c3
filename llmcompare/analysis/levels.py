"""Load levels: per backend × level figures, the knee of each curve, the SLO limit, cost, and the
seeds' three answers. Everything here is computed from ``requests.jsonl`` (request and stage
records); ``docs/load.md`` states every rule.

Latencies under load are counted from the request's **scheduled** send (coordinated omission):
``TTFT = queue + ttft``, ``e2e = queue + e2e`` where ``queue = sent_at − scheduled_at`` is the client's
own lateness, reported on its own. TPOT and ITL are between tokens, so the schedule does not enter.

Beside the client's figures, each level carries (docs/telemetry.md):

* ``steady``: the slope test of :mod:`llmcompare.analysis.steady` (does TTFT, or the number of
  requests in flight, keep rising?), and the **steady window** it defines: from the first scheduled
  send plus 10% of the level's span (or the warm-up's end, when later) to the last scheduled send.
  The steady-state figures (``steady_output_tok_s``, energy) count that window only;
* ``server``: the server's own metrics over the level, the generation-token cross-check and, for a
  workload that plans one, the prefix-cache hit rate against the plan (:mod:`.telemetry`);
* ``energy``: the GPUs' joules over the steady window, joules per output token and output tokens per
  joule (CUDA runs, or an injected NVML).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from llmcompare.analysis import metrics, statistics, steady
from llmcompare.analysis import telemetry as tele
from llmcompare.config.spec import RunSpec
from llmcompare.limits import MAX_FAILED_SHARE, safe_text
from llmcompare.records import RequestRecord, RunRecords, StageRecord
from llmcompare.workloads import multiturn
from llmcompare.workloads.shared_prefix import planned_hit_rate

#: The knee rule: moving to the next level must raise output throughput by at least this share, and
#: by at least as large a share as it raises TPOT p50 (marginal gain ≥ marginal cost).
KNEE_MIN_GAIN = 0.10
#: A level meets the SLO when at least this share of its measured requests meet every limit.
SLO_ATTAINMENT = 0.90


def _ms(values: list[float]) -> dict[str, Any]:
    return metrics.describe([v * 1000.0 for v in values])


@dataclass
class Level:
    backend: str
    stage: str
    concurrency: int | None
    rate: float | None
    arrivals: str | None
    requests: int
    errors: int
    errors_by_kind: dict[str, int]
    length_mismatch: int
    wall_s: float
    output_tokens: int
    output_tok_s: float | None
    req_s: float | None
    ttft_ms: dict[str, Any]
    tpot_ms: dict[str, Any]
    itl_ms: dict[str, Any]
    e2e_ms: dict[str, Any]
    queue_ms: dict[str, Any]
    achieved_rate: float | None
    achieved_concurrency: float | None
    max_in_flight: int | None
    fell_behind: bool
    slo_attainment: float | None = None
    goodput_req_s: float | None = None
    meets_slo: bool | None = None
    price_per_hour: float | None = None
    cost_per_1m_tokens: float | None = None
    hours_to_1m_tokens: float | None = None
    concurrent_backend: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    steady: bool | None = None
    """False: TTFT or the requests in flight kept rising through the level (not steady); None: too few
    requests to tell (:func:`llmcompare.analysis.steady.check_level`)."""
    steady_reason: str | None = None
    steady_window: list[float] | None = None
    """``[start, end]`` (Unix): the level's steady window, over which the steady-state figures count."""
    steady_output_tok_s: float | None = None
    """Verified output tokens that arrived in the steady window / its length."""
    server: dict[str, Any] | None = None
    """The server's own metrics over the level (:func:`llmcompare.analysis.telemetry.server_level`),
    with ``token_check`` and, where planned, ``hit_rate_check``; None when nothing was scraped."""
    energy: dict[str, Any] | None = None
    """The GPUs' energy over the steady window, ``joules_per_token``, ``tokens_per_joule``
    (:func:`llmcompare.analysis.telemetry.energy`); None when no GPU was sampled."""
    sweep_stop: bool = False
    """A sweep stopped adding load after this level (it was not steady)."""
    ci: dict[str, dict[str, Any]] = field(default_factory=dict)
    """95% bootstrap intervals of the level's TTFT, TPOT and e2e p50 (keys as the level columns'),
    resampling the level's requests by prompt (:func:`llmcompare.analysis.statistics.bootstrap_ci`). The output
    tok/s of a level is one measurement of the whole level and has no interval: repeat the level for one."""
    warmup_requests: int = 0
    """The level's warm-up requests (same session; excluded from every figure but counted here)."""
    warmup_errors: int = 0
    warmup_errors_by_kind: dict[str, int] = field(default_factory=dict)
    count_disagreements: int = 0
    """Successful measured requests whose output count's sources disagree (``count_check``): each
    credited its verified tokens only (:func:`llmcompare.analysis.metrics.verified_tokens`)."""
    failed: str | None = None
    """Why the level is not a result, or None: more than :data:`llmcompare.limits.MAX_FAILED_SHARE` of
    its measured requests, or of its warm-up requests, failed (:func:`level_failure`). A failed level
    is left out of the knee, the SLO answer and the recommendations, and the command exits 1."""

    @property
    def token_check(self) -> dict[str, Any] | None:
        return (self.server or {}).get("token_check")

    @property
    def token_mismatch(self) -> bool:
        """The server's generation-token counter disagrees with llmcompare's count for the level."""
        return (self.token_check or {}).get("verdict") == "mismatch"

    @property
    def hit_rate_check(self) -> dict[str, Any] | None:
        return (self.server or {}).get("hit_rate_check")

    @property
    def joules_per_token(self) -> float | None:
        return (self.energy or {}).get("joules_per_token")

    @property
    def tokens_per_joule(self) -> float | None:
        return (self.energy or {}).get("tokens_per_joule")

    @property
    def load(self) -> float:
        """What orders levels along a curve: the asked concurrency or rate."""
        return float(self.concurrency if self.concurrency is not None else self.rate or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _meets(r: RequestRecord, slo: dict[str, float]) -> bool:
    row = metrics.request_row(r)
    q = r.queue_s * 1000.0
    values = {"ttft_ms": (row["ttft_ms"] or 0.0) + q, "tpot_ms": row["tpot_ms"] or 0.0,
              "e2e_ms": (row["e2e_ms"] or 0.0) + q,
              "itl_ms": max((g * 1000.0 for g in metrics.itl(r.token_times_s)), default=0.0)}
    return r.error is None and r.length_ok and all(values[k] <= v for k, v in slo.items())


def _intervals(ok: list[RequestRecord]) -> dict[str, dict[str, Any]]:
    """The level's p50 latencies with their intervals (from the scheduled send, as the level reports them)."""
    figures = {
        "ttft_p50_ms": [(r.queue_s + r.ttft_s) * 1000.0 if r.ttft_s is not None else None for r in ok],
        "tpot_p50_ms": [(t * 1000.0 if (t := metrics.tpot(r.token_times_s)) is not None else None) for r in ok],
        "e2e_p50_ms": [(r.queue_s + r.e2e_s) * 1000.0 if r.e2e_s is not None else None for r in ok],
    }
    prompts = [r.prompt_id for r in ok]
    return {k: ci for k, v in figures.items() if (ci := statistics.bootstrap_ci(v, "median", clusters=prompts))}


def level_of(spec: RunSpec, stage: StageRecord, requests: list[RequestRecord], records: RunRecords | None = None,
             workload: dict[str, Any] | None = None) -> Level:
    """One level's figures from its stage record and the requests of the same session; with the run's
    ``records``, its telemetry (server metrics, GPU energy); ``workload`` (the run header's) gives the
    planned prefix-cache hit rate of the workloads that plan one."""
    every = [r for r in requests if r.backend == stage.backend and r.stage == stage.stage
             and r.session == stage.session]
    mine = [r for r in every if not r.warmup]
    ok = [r for r in mine if r.error is None]
    errors: dict[str, int] = {}
    for r in mine:
        if r.error is not None:
            errors[r.error_kind or "engine"] = errors.get(r.error_kind or "engine", 0) + 1
    wall = stage.wall_s
    out_tokens = sum(metrics.verified_tokens(r) for r in ok)  # capped at the forced length (docs/metrics.md)
    busy = sum(r.queue_s + (r.e2e_s or 0.0) for r in ok)
    sends = sorted(r.sent_at for r in mine if r.sent_at is not None)
    slo = dict(spec.scenario.slo)
    price = spec.price(stage.backend)
    tok_s = out_tokens / wall if wall > 0 and ok else None
    lv = Level(
        backend=stage.backend, stage=stage.stage, concurrency=stage.params.get("concurrency"),
        rate=stage.params.get("rate"), arrivals=stage.params.get("arrivals"), requests=len(mine),
        errors=len(mine) - len(ok), errors_by_kind=errors,
        length_mismatch=sum(1 for r in ok if not r.length_ok), wall_s=wall, output_tokens=out_tokens,
        output_tok_s=tok_s, req_s=len(ok) / wall if wall > 0 else None,
        ttft_ms=_ms([r.queue_s + r.ttft_s for r in ok if r.ttft_s is not None]),
        tpot_ms=_ms([t for r in ok if (t := metrics.tpot(r.token_times_s)) is not None]),
        itl_ms=_ms([g for r in ok for g in metrics.itl(r.token_times_s)]),
        e2e_ms=_ms([r.queue_s + r.e2e_s for r in ok if r.e2e_s is not None]),
        queue_ms=_ms([r.queue_s for r in mine]),
        # the send rate of an open-loop level; a closed loop sends when requests finish (see req/s)
        achieved_rate=((len(sends) - 1) / (sends[-1] - sends[0])
                       if stage.params.get("rate") and len(sends) > 1 and sends[-1] > sends[0] else None),
        achieved_concurrency=busy / wall if wall > 0 else None,
        max_in_flight=stage.achieved.get("max_in_flight"), fell_behind=bool(stage.achieved.get("fell_behind")),
        price_per_hour=price, concurrent_backend=stage.params.get("concurrent_backend"),
    )
    lv.ci = _intervals(ok)
    warm = [r for r in requests if r.backend == stage.backend and r.stage == stage.stage
            and r.session == stage.session and r.warmup]
    lv.warmup_requests = len(warm)
    lv.warmup_errors_by_kind = _by_kind(warm)
    lv.warmup_errors = sum(lv.warmup_errors_by_kind.values())
    lv.count_disagreements = metrics.count_disagreements(ok)
    lv.failed = level_failure(lv, next((r.error for r in mine + warm if r.error), None))
    if slo and mine:
        good = sum(1 for r in mine if _meets(r, slo))
        lv.slo_attainment = good / len(mine)
        lv.goodput_req_s = good / wall if wall > 0 else None
        lv.meets_slo = lv.slo_attainment >= SLO_ATTAINMENT
    if price is not None and tok_s:
        lv.cost_per_1m_tokens = metrics.cost_per_million(price, tok_s)
        lv.hours_to_1m_tokens = 1e6 / tok_s / 3600.0
    lv.sweep_stop = bool(stage.achieved.get("sweep_stop"))
    check = steady.check_level(every)
    if check is not None:
        lv.steady, lv.steady_reason, lv.steady_window = check.steady, check.reason, list(check.window)
        start, end = check.window
        if end > start:
            lv.steady_output_tok_s = tele.verified_tokens_in_window(ok, start, end) / (end - start)
    if records is not None:
        lv.server = tele.server_level(records.metrics, stage.backend, stage.session, stage.stage,
                                      client_tokens=tele.client_tokens(every),
                                      planned_hit_rate=_planned(workload or {}, mine))
        samples = tele.gpu_samples(records.gpu, stage.backend, stage.session)
        if samples and lv.steady_window:
            start, end = lv.steady_window
            lv.energy = tele.energy(samples, start, end, tele.verified_tokens_in_window(ok, start, end))
            if lv.energy is not None:
                lv.energy["window"] = [start, end]
    return lv


def _planned(workload: dict[str, Any], measured: list[RequestRecord]) -> Any:
    """The planned prefix-cache hit rate of the level's measured phase, as a function of the server's
    block size (None for a workload that plans none): shared prefixes ``floor(P/B)*B/(P+S)``; multi-turn
    the sum over the turns sent of their history in whole blocks (never the last prompt token) over
    their prompt tokens (:func:`llmcompare.workloads.multiturn.planned_hit_rate`)."""
    kind = workload.get("kind")
    if kind == "shared-prefix":
        sp = workload.get("shared_prefix") or {}
        return lambda block: planned_hit_rate(int(sp["prefix_tokens"]), int(sp["suffix_tokens"]), block)
    if kind == "multi-turn":
        nonce = int(workload.get("nonce_tokens", 0))
        turns = {(str(c["id"]), int(t["index"])): int(t.get("cacheable_tokens", 0))
                 for c in workload.get("conversations") or [] for t in c["turns"]}
        sent = []
        for r in measured:
            conv, _, k = r.prompt_id.rpartition("/t")
            if not k.isdigit():
                continue
            cacheable = turns.get((conv, int(k)), 0) + (nonce if int(k) > 1 else 0)
            sent.append(multiturn.Turn(int(k), tuple(range(r.input_tokens)), 0, cacheable))
        return lambda block: multiturn.planned_hit_rate([multiturn.Conversation("sent", tuple(sent))], block)
    return None


def _by_kind(records: list[RequestRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        if r.error is not None:
            out[r.error_kind or "engine"] = out.get(r.error_kind or "engine", 0) + 1
    return out


def level_failure(lv: Level, example: str | None = None) -> str | None:
    """Why a level is not a result (None: it is one): its failed measured requests, or its failed
    warm-up requests, are more than :data:`~llmcompare.limits.MAX_FAILED_SHARE` of them."""
    parts = []
    for what, n, errors, kinds in (("measured", lv.requests, lv.errors, lv.errors_by_kind),
                                   ("warm-up", lv.warmup_requests, lv.warmup_errors, lv.warmup_errors_by_kind)):
        if n and errors > MAX_FAILED_SHARE * n:
            shown = ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items()))
            parts.append(f"{errors:,} of its {n:,} {what} requests failed ({shown})")
    if not parts:
        return None
    why = "; ".join(parts) + f", more than the {MAX_FAILED_SHARE:.0%} a level may lose"
    if example:
        why += f"; e.g. {safe_text(' '.join(str(example).split()), 160)}"
    return why


def build_levels(spec: RunSpec, records: RunRecords, workload: dict[str, Any] | None = None) -> list[Level]:
    """Every backend's levels in run order; a level redone on resume counts its last finished run."""
    last: dict[tuple[str, str], StageRecord] = {}
    for s in records.stages:
        if s.stage.startswith("load"):
            last[(s.backend, s.stage)] = s
    out = [level_of(spec, s, records.requests, records, workload) for s in last.values()]
    order = {label: i for i, label in enumerate(spec.labels)}
    return sorted(out, key=lambda lv: (order.get(lv.backend, 99), lv.concurrency is None, lv.load))


def knee(levels: list[Level]) -> Level | None:
    """The knee of one backend's latency–throughput curve, by the marginal-gain rule: walk the levels
    in order of load; a step to the next level is worth it when it raises output throughput by at least
    ``KNEE_MIN_GAIN`` *and* by at least as large a share as it raises TPOT p50. The knee is the last
    level reached by worthwhile steps. Levels with no throughput figure end the walk. A sweep mixes
    concurrency and rate levels: its levels are ordered by the request rate they achieved instead."""
    mixed = len({lv.concurrency is None for lv in levels}) > 1
    order = (lambda x: x.req_s or 0.0) if mixed else (lambda x: x.load)
    curve = [lv for lv in sorted(levels, key=order) if lv.output_tok_s and lv.tpot_ms.get("p50")]
    if not curve:
        return None
    best = curve[0]
    for prev, cur in zip(curve, curve[1:]):
        gain = cur.output_tok_s / prev.output_tok_s - 1.0
        cost = cur.tpot_ms["p50"] / prev.tpot_ms["p50"] - 1.0
        if gain >= KNEE_MIN_GAIN and gain >= cost:
            best = cur
        else:
            break
    return best


def analyse(spec: RunSpec, levels: list[Level]) -> dict[str, Any]:
    """Per backend: knee, the highest level that meets the SLO; overall: the three answers (best latency, best throughput, most cost-effective)."""
    per_backend: dict[str, Any] = {}
    for label in spec.labels:
        mine = [lv for lv in levels if lv.backend == label and not lv.failed]  # a failed level is no result
        if not mine:
            continue
        k = knee(mine)
        slo_ok = [lv for lv in mine if lv.meets_slo]
        per_backend[label] = {
            "knee": k.stage if k else None,
            "knee_output_tok_s": k.output_tok_s if k else None,
            "knee_tpot_p50_ms": k.tpot_ms.get("p50") if k else None,
            "max_level_meeting_slo": max(slo_ok, key=lambda lv: lv.load).stage if slo_ok else None,
        }
    slo = bool(spec.scenario.slo)
    eligible = [lv for lv in levels if lv.output_tok_s and not lv.failed and (lv.meets_slo if slo else True)]
    answers: dict[str, Any] = {"rule": "under the SLO" if slo else "no SLO given: every level with output"}

    def pick(key, reverse: bool, value) -> dict[str, Any] | None:
        cands = [lv for lv in eligible if value(lv) is not None]
        if not cands:
            return None
        lv = sorted(cands, key=value, reverse=reverse)[0]
        return {"backend": lv.backend, "stage": lv.stage, key: value(lv)}

    answers["best_latency"] = pick("tpot_p50_ms", False, lambda lv: lv.tpot_ms.get("p50"))
    answers["best_throughput"] = pick("output_tok_s", True, lambda lv: lv.output_tok_s)
    answers["most_cost_effective"] = pick("cost_per_1m_tokens", False, lambda lv: lv.cost_per_1m_tokens)
    return {"backends": per_backend, "recommendations": answers,
            "knee_rule": f"last level reached by steps that raise output tok/s by >= {KNEE_MIN_GAIN:.0%} and by at"
                         " least the share they raise TPOT p50",
            "slo_rule": f">= {SLO_ATTAINMENT:.0%} of a level's measured requests meet every limit (latencies from"
                        " the scheduled send)"}


#: Workload facts copied into the result (the requests and conversations themselves stay in the header).
WORKLOAD_FACTS = ("kind", "summary", "prefix_cache", "prefix_cache_note", "dataset", "sample", "multi_turn")


def workload_facts(spec: RunSpec, workload: dict[str, Any], records: RunRecords) -> dict[str, Any]:
    """What the reports say about the workload and the telemetry: the workload in words, whether it
    ran with the prefix cache on and how each backend honoured that, and what each backend's worker
    sampled (the server's metrics: dialect and URLs; GPUs: which, or why none)."""
    out: dict[str, Any] = {k: workload[k] for k in WORKLOAD_FACTS if k in workload}
    if "shared_prefix" in workload:
        out["shared_prefix"] = {k: v for k, v in workload["shared_prefix"].items() if k not in ("pool", "pool_text")}
    if "multi_turn" in workload:
        out["multi_turn"] = workload["multi_turn"]
    backends: dict[str, Any] = {}
    for b in records.backends:
        caps = b.capabilities or {}
        entry = backends.setdefault(b.backend, {})
        if workload.get("prefix_cache"):
            entry["prefix_cache"] = (
                "turned on for this workload" if caps.get("prefix_cache_on_demand")
                else {"on": "on (it is always on)", "server": "the server's own setting (see its metrics)",
                      "none": "none: the engine has no prefix cache, so nothing can hit",
                      "reset": "reset before every request: nothing can hit",
                      "disabled": "disabled: this backend cannot turn it on, so nothing can hit"}.get(
                    caps.get("prefix_cache"), "unknown"))
    for t in records.telemetry:
        entry = backends.setdefault(str(t.get("backend")), {})
        if t.get("kind") == "metrics":
            entry["server_metrics"] = {"dialect": t.get("dialect"), "urls": t.get("urls"), "interval_s": t.get("interval_s")}
        elif t.get("kind") == "gpu":
            entry["gpu"] = ({"error": t["error"]} if t.get("error")
                            else {"gpus": t.get("gpus"), "source": t.get("source"), "interval_s": t.get("interval_s")})
    out["backends"] = {label: backends[label] for label in spec.labels if label in backends}
    return out
