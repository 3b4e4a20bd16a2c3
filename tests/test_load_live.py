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


def test_the_naive_server_keeps_throughput_flat_while_ttft_rises(sweep):
    result, _ = sweep
    lv = {x.stage: x for x in result.levels if x.backend == "llamacpp-server"}
    one, two, four = lv["load:c=1"], lv["load:c=2"], lv["load:c=4"]
    assert four.output_tok_s < 1.5 * one.output_tok_s, (one.output_tok_s, four.output_tok_s)
    assert one.ttft_ms["p50"] < two.ttft_ms["p50"] < four.ttft_ms["p50"]
    assert four.ttft_ms["p50"] > 2.0 * one.ttft_ms["p50"]


def _scaling(result, prefix):
    lv = {x.stage: x for x in result.levels if x.backend.startswith(prefix)}
    return lv["load:c=4"].output_tok_s / lv["load:c=1"].output_tok_s


def test_the_batching_server_scales_with_concurrency_where_the_naive_one_does_not(sweep):
    """A shape, measured against a reference taken in the same run: the naive server's own scaling.

    Margins hold on a loaded machine: with other work on CI's two cores the batching server gave
    1.84x and 1.88x from c=1 to c=4 (an earlier 2.0x threshold failed there), the naive one about 1.0x.
    Absolute throughput belongs in benchmarks/, not here.
    """
    result, _ = sweep
    batching, naive = _scaling(result, "transformers-serve"), _scaling(result, "llamacpp-server")
    assert batching > 1.3, (batching, naive)
    assert batching > 1.25 * naive, (batching, naive)


def test_in_process_continuous_batching_takes_part_through_the_async_path(tmp_path):
    r = llmcompare.load(["transformers-cb"], concurrency=[1, 4], requests=4, max_new_tokens=8, output=tmp_path / "r")
    assert r.summaries[0].status == "ok", r.summaries[0].error
    lv = {x.stage: x for x in r.levels}
    for x in lv.values():
        assert x.errors == 0 and x.length_mismatch == 0 and x.concurrent_backend is True
    assert lv["load:c=4"].max_in_flight == 4
    assert lv["load:c=4"].output_tok_s > 1.5 * lv["load:c=1"].output_tok_s
