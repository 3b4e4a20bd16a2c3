"""A naive server against a batching one, live: llama-cpp-python's server (one
request at a time) and `transformers serve --continuous-batching`, both started by llmcompare, on
SmolLM2 at concurrency 1, 2 and 4, in one run."""

import importlib.util

import pytest
from conftest import needs_model

import llmcompare
from llmcompare.records import read_records

pytestmark = [pytest.mark.engine, needs_model]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    for mod in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"needs {mod}: pip install 'llmcompare[llamacpp-server,transformers-serve]'")
    out = tmp_path_factory.mktemp("sweep") / "run"
    return llmcompare.load(["llamacpp-server", "transformers-serve"], concurrency=[1, 2, 4], requests=8,
                           max_new_tokens=16, output=out), out


def test_every_request_has_exactly_the_forced_count_from_the_server(sweep):
    result, out = sweep
    assert [s.status for s in result.summaries] == ["ok", "ok"], [s.error for s in result.summaries]
    measured = [r for r in read_records(out / "requests.jsonl").requests if not r.warmup]
    assert len(measured) == 2 * 3 * 8
    for r in measured:
        assert r.error is None and r.length_ok, (r.backend, r.stage, r.output_tokens, r.error)
        assert r.count_source in ("ids", "usage", "logprobs", "length"), r.count_source  # the server's count
        assert r.finish_reason == "length"


def streams_at_once(records, backend: str, stage: str) -> int:
    """The most requests a backend was streaming at the same moment in one level: each measured
    request's window runs from its first token to its last (Unix times, from its record). A server that
    answers one request at a time never streams two; a batching one streams its whole batch together.
    Unlike throughput compared across levels, this holds however busy the machine was while each level
    ran (other work slows both kinds of server, but cannot make one overlap or the other take turns)."""
    events = []
    for r in records:
        if r.backend.startswith(backend) and r.stage == stage and not r.warmup and r.error is None:
            events += [(r.sent_at + r.ttft_s, 1), (r.sent_at + r.e2e_s, -1)]
    most = now = 0
    for _, step in sorted(events):  # at equal times an end (-1) comes before a start
        now += step
        most = max(most, now)
    return most


def test_the_naive_server_takes_requests_one_at_a_time_while_ttft_rises(sweep):
    result, out = sweep
    records = read_records(out / "requests.jsonl").requests
    for c in (1, 2, 4):
        assert streams_at_once(records, "llamacpp-server", f"load:c={c}") == 1, c
    lv = {x.stage: x for x in result.levels if x.backend == "llamacpp-server"}
    one, two, four = lv["load:c=1"], lv["load:c=2"], lv["load:c=4"]
    assert one.ttft_ms["p50"] < two.ttft_ms["p50"] < four.ttft_ms["p50"]  # the queue, from the scheduled send
    assert four.ttft_ms["p50"] > 2.0 * one.ttft_ms["p50"]


def test_the_batching_server_streams_its_requests_together_where_the_naive_one_does_not(sweep):
    """The shape behind "more throughput at 4": transformers serve decodes the level's requests in one
    batch. Throughput itself is measured on a quiet machine (README, docs/loadgen.md): compared across
    levels that ran at different moments of a shared machine, it failed CI at 1.88x against an asserted
    2.0x, and a naive server once measured 4.6x between levels when other work left the machine."""
    _, out = sweep
    records = read_records(out / "requests.jsonl").requests
    assert streams_at_once(records, "transformers-serve", "load:c=1") == 1
    assert streams_at_once(records, "transformers-serve", "load:c=4") >= 3
    assert streams_at_once(records, "llamacpp-server", "load:c=4") == 1


def test_in_process_continuous_batching_takes_part_through_the_async_path(tmp_path):
    r = llmcompare.load(["transformers-cb"], concurrency=[1, 4], requests=4, max_new_tokens=8, output=tmp_path / "r")
    assert r.summaries[0].status == "ok", r.summaries[0].error
    lv = {x.stage: x for x in r.levels}
    for x in lv.values():
        assert x.errors == 0 and x.length_mismatch == 0 and x.concurrent_backend is True
    assert lv["load:c=4"].max_in_flight == 4
    records = read_records(tmp_path / "r" / "requests.jsonl").requests
    assert streams_at_once(records, "transformers-cb", "load:c=4") >= 3  # decoded as one batch
