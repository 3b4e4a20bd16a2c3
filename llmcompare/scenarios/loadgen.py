"""The load driver: one backend under closed-loop concurrency or open-loop arrival rates.

Each level is a stage (``load:c=4``, ``load:rate=2``). A level sends ``warmup`` requests (recorded,
excluded), then measured requests for ``duration_s`` seconds of schedule or ``requests`` requests,
waits for the ones in flight, and closes with a :class:`~llmcompare.records.StageRecord`.

Scheduling follows GuideLLM's shape: a strategy only answers "when is the next request due" (open
loop) or keeps N in flight (closed loop). Open-loop requests are timed from their *scheduled* send
(coordinated omission): the record carries ``scheduled_at`` and ``sent_at``, and the reports count
latency from the schedule and client-side queueing on its own. A level where the client could not
send on time is flagged as having fallen behind.

Every request is distinct (no prefix cache can help): synthetic prompts are random ordinary token ids
(seeded per request); prompt-set prompts get a random prefix of ordinary tokens. A backend that is not
``concurrent`` serves the requests one at a time, the others queueing, as its engine would.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from llmcompare.backend import clock
from llmcompare.errors import ConfigError
from llmcompare.models.prompting import Prompt
from llmcompare.records import RequestRecord, StageRecord
from llmcompare.runner.job import Context
from llmcompare.runner.session import BackendSession


def _finite_positive(value: float | None) -> bool:
    return value is None or (math.isfinite(value) and value > 0)


@dataclass(frozen=True)
class LoadConfig:
    """Requests under load: closed-loop concurrency levels or open-loop arrival rates.

    Each level runs for ``duration_s`` seconds or ``requests`` requests after ``warmup_requests``
    warm-up requests (excluded). Open loop (``rates``) times every request from its *scheduled* send.
    """

    kind: ClassVar[str] = "load"
    concurrency: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    arrivals: str = "constant"
    seed: int = 0
    duration_s: float | None = None
    requests: int | None = None
    warmup_requests: int | None = None
    """Warm-up requests before each level, excluded; None: the level's concurrency (1 for rates)."""
    max_new_tokens: int = 64
    output_tokens_dist: str = "fixed"
    """``fixed``, or ``uniform:LO-HI`` for output lengths drawn per request (seeded)."""
    input_tokens: int | None = None
    """Synthetic prompts of exactly this many tokens; None: the prompt set, made distinct per request."""
    input_tokens_dist: str = "fixed"
    sweep: bool = False
    sweep_levels: int = 5
    slo: Mapping[str, float] = field(default_factory=dict)
    """Per-request limits, e.g. ``{"ttft_ms": 500, "tpot_ms": 100}``; goodput counts requests within all."""
    request_timeout_s: float | None = None
    clients: int = 1
    """Client processes that drive each level together (backends reached over HTTP only)."""
    executor: str = "local"
    """Where the clients run: ``local`` (processes on this machine) or ``ray`` (``clients`` Ray actors)."""
    address: str | None = None
    """The Ray cluster to join (``executor="ray"``); None: a local instance (loopback-only namespace only)."""

    SLO_KEYS: ClassVar[tuple[str, ...]] = ("ttft_ms", "tpot_ms", "e2e_ms", "itl_ms")
    ARRIVALS: ClassVar[tuple[str, ...]] = ("constant", "poisson")
    EXECUTORS: ClassVar[tuple[str, ...]] = ("local", "ray")

    def __post_init__(self) -> None:
        def check(cond: bool, template: str, **values: Any) -> None:
            if not cond:
                raise ConfigError(template, **values)

        check(bool(self.concurrency) or bool(self.rates) or self.sweep, "load needs {concurrency}, {rates} or {sweep}")
        check(not (self.concurrency and self.rates), "give {concurrency} or {rates}, not both")
        for c in self.concurrency:
            check(c >= 1, "{concurrency} levels must be at least 1, got {got}", got=c)
        for r in self.rates:
            check(r > 0 and math.isfinite(r), "{rates} levels must be positive numbers, got {got}", got=r)
        check(self.arrivals in self.ARRIVALS, "{arrivals} must be one of {choices}, got {got}",
              choices=", ".join(self.ARRIVALS), got=repr(self.arrivals))
        check((self.duration_s is None) != (self.requests is None),
              "give each level a length: {duration_s} SECONDS or {requests} N (one of the two)")
        check(_finite_positive(self.duration_s), "{duration_s} must be a positive number of seconds, got {got}",
              got=self.duration_s)
        if self.requests is not None:
            check(self.requests >= 1, "{requests} must be at least 1, got {got}", got=self.requests)
        check(self.warmup_requests is None or self.warmup_requests >= 0, "{warmup_requests} must not be negative")
        check(self.max_new_tokens >= 1, "{max_new_tokens} must be at least 1, got {got}", got=self.max_new_tokens)
        check(self.input_tokens is None or self.input_tokens >= 1, "{input_tokens} must be at least 1")
        check(self.clients >= 1, "{clients} must be at least 1")
        check(self.executor in self.EXECUTORS, "{executor} must be one of {choices}, got {got}",
              choices=", ".join(self.EXECUTORS), got=repr(self.executor))
        check(self.address is None or self.executor == "ray", "{address} joins a Ray cluster: give it with {executor} ray")
        check(self.sweep_levels >= 1, "{sweep_levels} must be at least 1")
        check(_finite_positive(self.request_timeout_s),
              "{request_timeout_s} must be a positive number of seconds, got {got}", got=self.request_timeout_s)
        for k, v in self.slo.items():
            check(k in self.SLO_KEYS, "{slo} key {key} is not one of {keys}", key=repr(k), keys=", ".join(self.SLO_KEYS))
            check(v > 0 and math.isfinite(v), "{slo} {key} must be a positive number, got {got}", key=k, got=v)
        parse_dist(self.output_tokens_dist, "output_tokens_dist")
        parse_dist(self.input_tokens_dist, "input_tokens_dist")


def parse_dist(text: str, field_name: str) -> tuple[str, int, int]:
    """``fixed`` or ``uniform:LO-HI`` -> (kind, lo, hi)."""
    if text == "fixed":
        return ("fixed", 0, 0)
    kind, _, rng = text.partition(":")
    lo, _, hi = rng.partition("-")
    try:
        a, b = int(lo), int(hi)
    except ValueError:
        raise ConfigError("{%s} must be 'fixed' or 'uniform:LO-HI' (token counts), got {got}" % field_name,
                          got=repr(text)) from None
    if not (kind == "uniform" and 1 <= a <= b):
        raise ConfigError("{%s} must be 'fixed' or 'uniform:LO-HI' with 1 <= LO <= HI, got {got}" % field_name,
                          got=repr(text))
    return (kind, a, b)


NONCE_TOKENS = 8
#: A request sent later than this after its scheduled time counts as late.
LATE_S = 0.010
#: A level is flagged when more than this share of its measured requests were late.
LATE_SHARE = 0.05
#: The closed-loop concurrency of a sweep's throughput level when --concurrency does not give one.
SWEEP_MAX_CONCURRENCY = 16


@dataclass(frozen=True)
class Level:
    stage: str
    concurrency: int | None = None
    rate: float | None = None

    @property
    def params(self) -> dict:
        return {"concurrency": self.concurrency, "rate": self.rate}


def closed(c: int) -> Level:
    return Level(f"load:c={c}", concurrency=c)


def open_rate(r: float) -> Level:
    return Level(f"load:rate={r:g}", rate=r)


class Workload:
    """Makes request ``i`` of a level: distinct prompt ids (and text), its output length."""

    def __init__(self, ctx: Context, scenario: LoadConfig, level_index: int):
        header = ctx.header
        self.scenario = scenario
        self.nonce = list(header.workload.get("nonce_ids") or [])
        self.nonce_text = {int(k): v for k, v in (header.workload.get("nonce_text") or {}).items()}
        self.prompts = header.prompts
        self.seed = scenario.seed * 1_000_003 + level_index
        self.out_dist = parse_dist(scenario.output_tokens_dist, "output_tokens_dist")
        self.in_dist = parse_dist(scenario.input_tokens_dist, "input_tokens_dist")

    def _text(self, ids: list[int]) -> str:
        return "".join(self.nonce_text.get(i, "") for i in ids)

    def request(self, i: int) -> tuple[Prompt, int]:
        rng = random.Random(self.seed * 7919 + i)
        n_out = self.scenario.max_new_tokens if self.out_dist[0] == "fixed" else rng.randint(*self.out_dist[1:])
        if self.scenario.input_tokens is not None:
            n_in = self.scenario.input_tokens if self.in_dist[0] == "fixed" else rng.randint(*self.in_dist[1:])
            ids = [rng.choice(self.nonce) for _ in range(n_in)]
            return Prompt("synthetic", self._text(ids), tuple(ids)), n_out
        base = self.prompts[i % len(self.prompts)]
        prefix = [rng.choice(self.nonce) for _ in range(NONCE_TOKENS)]
        return Prompt(base.id, self._text(prefix) + " " + base.text, tuple(prefix) + base.token_ids), n_out


class LevelRun:
    """One level in progress: sends requests, hands their records on, tracks in-flight and lateness.

    ``share=(j, k)`` makes this the j-th of k client processes driving the level together: it sends
    request indices ``i ≡ j (mod k)`` of the one schedule (open loop), or its share of the users and of
    the requests (closed loop), from the common start time ``t0`` (a :data:`clock` reading: on Linux
    the monotonic clock is shared by every process of the machine).
    """

    def __init__(self, session: BackendSession, ctx: Context, level: Level, index: int,
                 emit: Callable[[RequestRecord], None], share: tuple[int, int] = (0, 1), t0: float | None = None):
        self.session = session
        self.ctx = ctx
        self.emit = emit
        self.level = level
        self.scenario: LoadConfig = ctx.spec.config("load")
        self.workload = Workload(ctx, self.scenario, index)
        self.share = share
        self.t0 = t0
        default_warmup = level.concurrency if level.concurrency else 1
        self.warmup = self.scenario.warmup_requests if self.scenario.warmup_requests is not None else default_warmup
        self.in_flight = 0
        self.max_in_flight = 0
        self.measured: list[RequestRecord] = []
        self.start: float | None = None  # scheduled time of the first measured request
        self.deadline: float | None = None
        self.warmed = False

    def _mine(self, i: int) -> bool:
        return i % self.share[1] == self.share[0]

    def _my_indices(self, first: int) -> Iterator[int]:
        j, k = self.share
        return itertools.count(first + (j - first) % k, k)

    def _begin(self, t: float) -> None:
        """The measured phase starts at scheduled time ``t``."""
        if self.start is None:
            self.start = t
            if self.scenario.duration_s is not None:
                self.deadline = t + self.scenario.duration_s

    def _want_more(self, i: int, now: float) -> bool:
        """Is request ``i`` (counting warm-up) still part of the level?"""
        if i < self.warmup:
            return True
        if self.scenario.requests is not None:
            return i < self.warmup + self.scenario.requests
        if self.deadline is None:
            return True
        return now < self.deadline

    async def _one(self, i: int, scheduled: float) -> None:
        warm = i < self.warmup
        if not warm:
            self._begin(scheduled)
        prompt, n_out = self.workload.request(i)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            rec = await self.session.arequest(prompt, n_out, stage=self.level.stage,
                                              request_id=f"{self.session.id}:{i:06d}", scheduled=scheduled,
                                              warmup=warm, timeout_s=self.scenario.request_timeout_s)
        finally:
            self.in_flight -= 1
        self.emit(rec)
        if not warm:
            self.measured.append(rec)

    async def warm_up(self) -> None:
        """A wave of its own before the measured phase, so that starts with a warm engine (once)."""
        if not self.warmed:
            self.warmed = True
            await asyncio.gather(*(self._one(i, clock()) for i in range(self.warmup) if self._mine(i)))

    async def _start(self) -> None:
        """Warm up, then wait for the common start time when several processes share the level."""
        await self.warm_up()
        if self.t0 is not None:
            await asyncio.sleep(max(0.0, self.t0 - clock()))
            self._begin(self.t0)

    async def run_closed(self, concurrency: int) -> None:
        j, k = self.share
        users = concurrency // k + (1 if j < concurrency % k else 0)
        await self._start()
        counter = self._my_indices(self.warmup)
        lock = asyncio.Lock()

        async def user() -> None:
            while True:
                async with lock:
                    i = next(counter)
                    now = clock()
                    if not self._want_more(i, now):
                        return
                await self._one(i, now)

        await asyncio.gather(*(user() for _ in range(users)))

    async def run_open(self, rate: float) -> None:
        rng = random.Random(self.scenario.seed * 31 + int(rate * 1000))
        poisson = self.scenario.arrivals == "poisson"
        tasks: list[asyncio.Task] = []
        await self._start()
        t = self.t0 if self.t0 is not None else clock()
        self._begin(t)
        i = self.warmup
        while self._want_more(i, t):
            if self._mine(i):  # every client draws the whole schedule and sends its own share of it
                delay = t - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self._one(i, t)))
            i += 1
            t += rng.expovariate(rate) if poisson else 1.0 / rate
        await asyncio.gather(*tasks)

    def stage_record(self) -> StageRecord:
        ok = [r for r in self.measured if r.error is None]
        ends = [r.sent_at + r.e2e_s for r in ok if r.sent_at is not None and r.e2e_s is not None]
        start_unix = (self.start or clock()) + self.session.epoch_offset
        wall = (max(ends) - start_unix) if ends else 0.0
        late = sum(1 for r in self.measured if r.queue_s > LATE_S)
        sends = [r.sent_at for r in self.measured if r.sent_at is not None]
        span = (max(sends) - min(sends)) if len(sends) > 1 else 0.0
        errors: dict[str, int] = {}
        for r in self.measured:
            if r.error is not None:
                errors[r.error_kind or "engine"] = errors.get(r.error_kind or "engine", 0) + 1
        out_tokens = sum(r.output_tokens for r in ok)
        return StageRecord(
            backend=self.ctx.backend.label, stage=self.level.stage, session=self.session.id,
            started_at=start_unix, wall_s=wall,
            params={**self.level.params, "arrivals": self.scenario.arrivals if self.level.rate else None,
                    "duration_s": self.scenario.duration_s, "requests": self.scenario.requests,
                    "warmup": self.warmup, "concurrent_backend": self.session.concurrent,
                    "clients": self.share[1]},
            achieved={
                "requests": len(self.measured), "errors": sum(errors.values()), "errors_by_kind": errors,
                "send_rate": (len(sends) - 1) / span if span > 0 else None,
                "max_in_flight": self.max_in_flight, "output_tok_s": out_tokens / wall if wall > 0 else 0.0,
                "late_requests": late,
                "fell_behind": bool(self.level.rate) and late > LATE_SHARE * max(1, len(self.measured)),
            },
        )


def planned_levels(scenario: LoadConfig) -> list[Level]:
    if scenario.sweep:
        return []
    if scenario.concurrency:
        return [closed(c) for c in scenario.concurrency]
    return [open_rate(r) for r in scenario.rates]


def drive(lr: LevelRun) -> Coroutine[Any, Any, None]:
    return lr.run_closed(lr.level.concurrency) if lr.level.concurrency else lr.run_open(lr.level.rate or 1.0)


