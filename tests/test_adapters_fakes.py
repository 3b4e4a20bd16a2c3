"""Adapters for engines that cannot run here (MLC, SGLang, Neuron, SageMaker), tested through fakes.

``tests/fakes`` holds fake engine packages that mirror each engine's API (module paths, classes,
argument names, return shapes; each docstring names the version it mirrors) and record the calls
they receive; they "generate" the prompt's ids, cyclically. The SageMaker fake is an HTTP endpoint
that speaks the AWS event-stream protocol, so botocore's own parser runs. The fakes are put on
``sys.path`` (and ``PYTHONPATH``, for the MLC CLI subprocess) by the ``fakes`` fixture only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

from llmcompare.backend import BackendConfig, BackendSpec, Chunk, clock, collect
from llmcompare.errors import BackendNotInstalled, RequestFailed, UserError
from llmcompare.models import resolve_model

FAKES = Path(__file__).parent / "fakes"
FAKE_PACKAGES = ("mlc_llm", "sglang", "optimum", "sagemaker_runtime")
PROMPT = [17, 4, 250, 2, 99]  # 2 is the model's EOS id: forced length must carry on past it


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(FAKES), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LLMCOMPARE_CACHE_DIR", str(tmp_path / "cache"))
    yield
    for name in [m for m in sys.modules if m.split(".")[0] in FAKE_PACKAGES]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """SmolLM2-135M's config.json and a byte-level tokenizer in a tiny HF directory (fakes need no weights)."""
    from llmcompare.models import synthetic

    pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("smollm2-shape")
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32",
              "bos_token_id": 1, "eos_token_id": 2, **synthetic.SHAPES["smollm2-135m"]}
    (path / "config.json").write_text(json.dumps(config))
    synthetic.build_tokenizer("smollm2-135m").save_pretrained(path)
    return resolve_model(str(path))


def stream(backend, prompt, n: int) -> tuple[list[Chunk], float, float]:
    async def go():
        return [c async for c in backend.astream(prompt, n)]

    t0 = clock()
    chunks = asyncio.run(go())
    return chunks, t0, clock()


def assert_times(times: list[float], t0: float, t1: float) -> None:
    assert times and all(b >= a for a, b in zip(times, times[1:], strict=False)), "timestamps go backwards"
    assert t0 <= times[0] and times[-1] <= t1


def echo(prompt: list[int], n: int) -> list[int]:
    return [prompt[i % len(prompt)] for i in range(n)]


def specs(module: str) -> dict[str, BackendSpec]:
    out: dict[str, BackendSpec] = {}
    importlib.import_module(f"llmcompare.backends.{module}").register_backends(
        register=lambda spec: out.setdefault(spec.name, spec))
    return out


# ---------------------------------------------------------------- registration
def test_specs_declare_install_hints_requirements_and_capabilities():
    mlc, sglang, neuron, sagemaker = specs("mlc"), specs("sglang")["sglang"], specs("neuron")["neuron"], \
        specs("sagemaker")["sagemaker"]
    assert set(mlc) == {"mlc", "mlc-sync"}
    assert mlc["mlc"].capabilities.concurrent and not mlc["mlc-sync"].capabilities.concurrent
    assert "https://mlc.ai/wheels" in mlc["mlc"].install and mlc["mlc"].default_variant == "q4f16_1"
    assert sglang.install == "pip install 'llmcompare[sglang]'" and sglang.capabilities.prefix_cache == "disabled"
    assert neuron.install.startswith("pip install 'llmcompare[neuron]'") and neuron.capabilities.devices == ("neuron",)
    assert set(neuron.variants) == {"budget", "latency", "throughput"}
    assert sagemaker.install == "pip install 'llmcompare[sagemaker]'"
    assert not sagemaker.capabilities.accepts_token_ids and not sagemaker.capabilities.in_process
    for spec in (mlc["mlc"], sglang, neuron):
        assert spec.capabilities.accepts_token_ids and spec.capabilities.in_process
    for spec in (mlc["mlc"], sglang, neuron):
        if spec.missing_module() is not None:  # the engine is absent here: one message, with the install command
            with pytest.raises(BackendNotInstalled, match=re.escape(spec.install)):
                spec.load_class()


# ---------------------------------------------------------------- MLC
@pytest.fixture
def mlc(fakes, monkeypatch, tmp_path):
    from mlc_llm import _fake

    _fake.reset()
    monkeypatch.setenv("FAKE_MLC_CLI_LOG", str(tmp_path / "mlc-cli.jsonl"))
    return _fake


def mlc_backend(model, cls_name="MLCBackend", variant="q4f16_1", **options):
    from llmcompare.backends import mlc

    return getattr(mlc, cls_name)(BackendConfig(model=model, variant=variant, options=options, device="cuda"))


def test_mlc_asks_for_greedy_uncached_fixed_length_from_ids(mlc, model):
    backend = mlc_backend(model)
    backend.load()
    chunks, t0, t1 = stream(backend, PROMPT, 12)
    engine = mlc.last("AsyncMLCEngine.__init__")
    assert engine["engine_config"].prefix_cache_mode == "disable" and engine["mode"] == "server"
    assert engine["device"] == "cuda" and engine["model_lib"] is None  # JIT
    create = mlc.last("completions.create")
    assert create["prompt"] == PROMPT and create["max_tokens"] == 12 and create["stream"] is True
    assert create["temperature"] == 0.0 and create["top_p"] == 1.0
    assert create["frequency_penalty"] == 0.0 and create["presence_penalty"] == 0.0
    assert create["stream_options"] == {"include_usage": True} and create["logprobs"] == 0
    assert create["extra_body"] == {"debug_config": {"ignore_eos": True}}
    gen = collect(chunks)
    assert len(gen.token_times) == 12 and gen.engine_output_tokens == 12 and gen.prompt_tokens == len(PROMPT)
    assert gen.count_source == "usage" and gen.token_ids == [] and gen.finish_reason == "length"
    assert_times(gen.token_times, t0, t1)
    assert backend.count_tokens("héllo") == 6  # the engine's own tokenizer (bytes, in the fake)
    backend.unload()
    assert mlc.CALLS[-1][0] == "AsyncMLCEngine.terminate"


def test_mlc_counts_each_chunk_from_logprobs_and_the_rest_from_usage(mlc, model):
    mlc.SETTINGS.tokens_per_chunk = 3
    backend = mlc_backend(model)
    backend.load()
    chunks, t0, t1 = stream(backend, PROMPT, 10)
    assert [c.count for c in chunks] == [3, 3, 3, 1, 0]  # the last chunk carries usage only
    gen = collect(chunks)
    assert gen.token_times[0:3] == [chunks[0].time] * 3  # tokens of one chunk share its time
    # A chunk whose text is empty (a token ending inside a UTF-8 character) is dropped by MLC with its
    # logprobs: the final usage count puts those tokens back, on the last chunk.
    mlc.SETTINGS.tokens_per_chunk = 1
    mlc.SETTINGS.silent_ids = frozenset({4})
    chunks, t0, t1 = stream(backend, PROMPT, 10)
    assert sum(c.count for c in chunks[:-1]) == 8 and chunks[-1].count == 2
    assert len(collect(chunks).token_times) == 10
    backend.unload()


def test_mlc_sync_engine_generates_and_failures_are_request_failures(mlc, model):
    backend = mlc_backend(model, "MLCSyncBackend", mode="local", max_num_sequence=1)
    backend.load()
    assert mlc.last("MLCEngine.__init__")["mode"] == "local"
    assert mlc.last("MLCEngine.__init__")["engine_config"].max_num_sequence == 1
    t0 = clock()
    gen = backend.generate(PROMPT, 7)
    assert len(gen.token_times) == 7 and gen.engine_output_tokens == 7
    assert_times(gen.token_times, t0, clock())
    mlc.SETTINGS.fail_after = 3
    with pytest.raises(RequestFailed) as failed:
        backend.generate(PROMPT, 7)
    assert failed.value.kind == "engine"
    backend.unload()
    assert mlc.CALLS[-1][0] == "MLCEngine.terminate"


def test_mlc_converts_once_per_quantization_and_reads_versions_from_the_wheel(mlc, model, tmp_path):
    log = tmp_path / "mlc-cli.jsonl"
    first = mlc_backend(model, variant="q0f16")
    first.load()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == ["convert_weight", "gen_config"]
    assert calls[0][1] == model.path and calls[0][calls[0].index("--quantization") + 1] == "q0f16"
    assert calls[1][calls[1].index("--conv-template") + 1] == "LM"
    versions = first.engine_version()
    assert versions["mlc-llm-nightly-cu128"] == "0.20.dev0"  # the wheel's metadata, not mlc_llm.__version__
    assert versions["mlc_quantization"] == "q0f16" and versions["mlc_model_lib"] == "jit"
    first.unload()
    again = mlc_backend(model, variant="q0f16")
    again.load()  # cached: no second conversion
    assert len(log.read_text().splitlines()) == 2
    assert mlc.last("AsyncMLCEngine.__init__")["model"] == first.model_dir
    again.unload()


def test_mlc_prepared_model_dir_must_match_the_variant(mlc, model, tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "mlc-chat-config.json").write_text(json.dumps({"quantization": "q0f16", "context_window_size": 64}))
    with pytest.raises(UserError, match="mlc:q0f16"):
        mlc_backend(model, variant="q4f16_1", model_dir=str(prepared)).load()
    backend = mlc_backend(model, variant="q0f16", model_dir=str(prepared), model_lib="/libs/model.so")
    backend.load()
    assert mlc.last("AsyncMLCEngine.__init__")["model_lib"] == "/libs/model.so"
    assert backend.engine_version()["mlc_model_lib"] == "model.so"
    with pytest.raises(UserError, match="prefix_cache_mode"):
        mlc_backend(model, prefix_cache_mode="radix")


def test_mlc_jit_policy_is_set_before_mlc_is_imported(mlc, model, monkeypatch):
    monkeypatch.setenv("MLC_JIT_POLICY", "ON")  # restored after the test, whatever the adapter sets
    del sys.modules["mlc_llm.serve.engine"], sys.modules["mlc_llm.serve"], sys.modules["mlc_llm"]
    with pytest.raises(RuntimeError, match="MLC_JIT_POLICY=OFF"):
        mlc_backend(model, jit_policy="OFF").load()


# ---------------------------------------------------------------- SGLang
@pytest.fixture
def sgl(fakes):
    from sglang import _fake

    _fake.reset()
    return _fake


def sglang_backend(model, **options):
    from llmcompare.backends.sglang import SGLangBackend

    return SGLangBackend(BackendConfig(model=model, options=options, device="cuda"))


@pytest.mark.engine
def test_sglang_engine_and_request_arguments(sgl, model):
    backend = sglang_backend(model, tp_size=1, mem_fraction_static=0.8)
    backend.load()
    engine = sgl.last("Engine.__init__")
    assert engine["model_path"] == model.path and engine["disable_radix_cache"] is True
    assert engine["skip_tokenizer_init"] is True and engine["tp_size"] == 1 and engine["mem_fraction_static"] == 0.8
    chunks, t0, t1 = stream(backend, PROMPT, 9)
    request = sgl.last("Engine.async_generate")
    assert request["input_ids"] == PROMPT and request["prompt"] is None and request["stream"] is True
    assert request["sampling_params"] == {"temperature": 0.0, "max_new_tokens": 9, "ignore_eos": True}
    gen = collect(chunks)
    assert gen.token_ids == echo(PROMPT, 9) and gen.count_source == "ids"  # past EOS (id 2)
    assert gen.finish_reason == "length" and gen.engine_output_tokens == 9 and gen.prompt_tokens == len(PROMPT)
    assert_times(gen.token_times, t0, t1)
    assert backend.engine_version() == {"sglang": "0.5.23"}
    assert backend.count_tokens("hello") == 5
    backend.unload()
    assert sgl.CALLS[-1][0] == "Engine.shutdown"


@pytest.mark.parametrize("incremental", [False, True])
def test_sglang_several_tokens_per_dict_cumulative_or_incremental(sgl, model, incremental):
    """Cumulative dicts hand out the engine's own list, which grows after the yield: sliced at once."""
    sgl.SETTINGS.tokens_per_chunk = 4
    backend = sglang_backend(model, incremental_streaming_output=incremental)
    backend.load()
    chunks, t0, t1 = stream(backend, PROMPT, 10)
    assert [len(c.token_ids) for c in chunks] == [4, 4, 2]
    gen = collect(chunks)
    assert gen.token_ids == echo(PROMPT, 10)
    assert gen.token_times[:4] == [chunks[0].time] * 4
    assert_times(gen.token_times, t0, t1)
    backend.unload()


def test_sglang_serves_concurrent_requests_on_one_loop(sgl, model):
    backend = sglang_backend(model)
    backend.load()
    other = [7, 8, 9]

    async def both():
        async def one(prompt, n):
            return collect([c async for c in backend.astream(prompt, n)])

        return await asyncio.gather(one(PROMPT, 6), one(other, 8))

    a, b = asyncio.run(both())
    assert a.token_ids == echo(PROMPT, 6) and b.token_ids == echo(other, 8)
    backend.unload()


def test_sglang_abort_is_a_request_failure_and_the_cache_stays_off(sgl, model):
    backend = sglang_backend(model)
    backend.load()
    sgl.SETTINGS.abort_after = 2
    with pytest.raises(RequestFailed, match="aborted") as failed:
        stream(backend, PROMPT, 6)
    assert failed.value.kind == "engine"
    backend.unload()
    with pytest.raises(UserError, match="radix"):
        sglang_backend(model, disable_radix_cache=False)


# ---------------------------------------------------------------- Neuron
@pytest.fixture
def neuron(fakes):
    pytest.importorskip("torch")
    from optimum.neuron import _fake

    _fake.reset()
    return _fake


def neuron_backend(model, variant="budget", **options):
    from llmcompare.backends.neuron import NeuronBackend

    return NeuronBackend(BackendConfig(model=model, variant=variant, options=options, device="neuron"))


@pytest.mark.parametrize("variant, tp, batch", [("budget", 2, 1), ("latency", 24, 1), ("throughput", 24, 4)])
def test_neuron_variants_are_the_seed_configurations(neuron, model, variant, tp, batch):
    backend = neuron_backend(model, variant)
    backend.load()
    asked = neuron.last("get_neuron_config")
    assert (asked["tensor_parallel_size"], asked["batch_size"], asked["sequence_length"]) == (tp, batch, 2048)
    assert asked["model_name_or_path"] == model.path
    assert backend.engine_version()["neuron_compiled"] == f"batch={batch} sequence_length=2048 tp={tp} target=inf2"
    backend.unload()


def test_neuron_refuses_impossible_shapes_before_compiling(neuron, model):
    backend = neuron_backend(model, sequence_length=256)
    with pytest.raises(UserError, match=r"sequence_length=256.*-o neuron\.sequence_length=300"):
        backend.validate_workload(200, 100)
    backend.validate_workload(156, 100)  # exactly fits
    with pytest.raises(UserError, match="max_position_embeddings=8192"):
        neuron_backend(model, sequence_length=16384).load()
    assert neuron.CALLS == []  # nothing was configured, exported or compiled


def test_neuron_compiles_once_then_loads_the_cached_artifact(neuron, model):
    first = neuron_backend(model, "latency")
    first.load()
    assert neuron.names() == ["get_neuron_config", "export", "save_pretrained"]
    assert neuron.last("export")["load_weights"] is True
    first.unload()
    neuron.CALLS.clear()
    again = neuron_backend(model, "latency")
    again.load()
    assert neuron.names() == ["get_neuron_config", "from_pretrained"]
    compiled = neuron.last("from_pretrained")["model_id"]
    assert json.loads(Path(compiled, "neuron_config.json").read_text())["tp_degree"] == 24
    again.unload()
    # A compiled directory given as the model is loaded as is, if its shapes are the ones asked for.
    with pytest.raises(UserError, match="batch_size=1"):
        neuron_backend(resolve_model(compiled), "throughput").load()
    direct = neuron_backend(resolve_model(compiled), "latency")
    direct.load()
    assert neuron.CALLS[-1] == ("from_pretrained", {"model_id": compiled})
    direct.unload()


def test_neuron_forces_length_past_eos_with_a_time_per_step(neuron, model):
    backend = neuron_backend(model)
    backend.load()
    chunks, t0, t1 = stream(backend, PROMPT, 12)
    gen = collect(chunks)
    assert gen.token_ids == echo(PROMPT, 12)  # EOS (2) is in the prompt: generation went on past it
    assert gen.finish_reason == "length" and len(gen.token_times) == 12 and gen.prompt_tokens == len(PROMPT)
    assert_times(gen.token_times, t0, t1)
    assert all(len(c.token_ids) == 1 for c in chunks)  # one step, one token, one time
    config = neuron.last("generate")["generation_config"]
    assert config["do_sample"] is False and config["max_new_tokens"] == 12
    assert config["eos_token_id"] == 49152  # vocab_size: an id the model cannot produce
    assert backend.count_tokens("hello") == 5
    with pytest.raises(RequestFailed) as failed:
        stream(backend, [1] * 2000, 100)
    assert failed.value.kind == "client_error"
    backend.unload()


def test_neuron_batches_concurrent_requests_up_to_the_compiled_batch(neuron, model):
    backend = neuron_backend(model, "throughput")
    backend.load()
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    lengths = [6, 4, 8, 5]

    async def together():
        async def one(prompt, n):
            return collect([c async for c in backend.astream(prompt, n)])

        tasks = [asyncio.create_task(one(p, n)) for p, n in zip(prompts, lengths, strict=True)]
        return await asyncio.gather(*tasks)

    results = asyncio.run(together())
    for prompt, n, gen in zip(prompts, lengths, results, strict=True):
        assert gen.token_ids == echo(prompt, n) and gen.finish_reason == "length"
    batches = [kw for name, kw in neuron.CALLS if name == "generate"]
    assert len(batches) == 1 and len(batches[0]["input_ids"]) == 4  # one static batch of four
    assert batches[0]["attention_mask"][1] == [1, 1, 0, 0]  # right padding
    assert batches[0]["generation_config"]["max_new_tokens"] == 8
    backend.unload()


# ---------------------------------------------------------------- SageMaker
@pytest.fixture
def aws(fakes, monkeypatch, tmp_path):
    pytest.importorskip("boto3")
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-never-recorded")
    from sagemaker_runtime import FakeSageMakerRuntime

    return FakeSageMakerRuntime


def sagemaker_backend(model, **options):
    from llmcompare.backends.sagemaker import SageMakerBackend

    options = {"endpoint": "llama-7b", "region": "eu-west-1", **options}
    return SageMakerBackend(BackendConfig(model=model, options=options))


def test_sagemaker_tgi_stream_with_lines_split_across_payload_parts(aws, model):
    with aws("tgi", part_size=7, split_messages=True) as fake:
        backend = sagemaker_backend(model, endpoint_url=fake.url)
        backend.load()
        chunks, t0, t1 = stream(backend, "hey you", 10)
        backend.unload()
    sent = fake.requests[0]
    assert sent["path"] == "/endpoints/llama-7b/invocations-response-stream"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["body"] == {"inputs": "hey you", "parameters": {"max_new_tokens": 10, "do_sample": False,
                                                                "details": True}, "stream": True}
    gen = collect(chunks)
    assert gen.token_ids == echo(list(b"hey you"), 10) and gen.count_source == "ids"
    assert gen.finish_reason == "length" and gen.engine_output_tokens == 10 and gen.prompt_tokens == 7
    assert_times(gen.token_times, t0, t1)


def test_sagemaker_tokens_completed_by_one_part_share_its_time(aws, model):
    with aws("tgi", events_per_part=3) as fake:
        backend = sagemaker_backend(model, endpoint_url=fake.url)
        backend.load()
        chunks, t0, t1 = stream(backend, "abcd", 8)
        backend.unload()
    assert [len(c.token_ids) for c in chunks] == [3, 3, 2]
    gen = collect(chunks)
    assert gen.token_times[:3] == [chunks[0].time] * 3 and gen.token_ids == echo(list(b"abcd"), 8)


def test_sagemaker_lmi_payload_and_json_lines(aws, model):
    with aws("lmi", part_size=5) as fake:
        backend = sagemaker_backend(model, endpoint_url=fake.url, payload="lmi", inference_component="ic-1")
        backend.load()
        chunks, _, _ = stream(backend, "xyz", 6)
        assert backend.engine_version() == {"sagemaker_endpoint": "llama-7b", "sagemaker_region": "eu-west-1",
                                            "sagemaker_inference_component": "ic-1"}
        backend.unload()
    assert fake.requests[0]["body"]["parameters"] == {"max_new_tokens": 6, "do_sample": False, "details": True,
                                                      "ignore_eos_token": True}
    assert fake.requests[0]["headers"]["X-Amzn-SageMaker-Inference-Component"] == "ic-1"
    gen = collect(chunks)
    assert gen.token_ids == echo(list(b"xyz"), 6) and gen.engine_output_tokens == 6


@pytest.mark.parametrize("fault, kind", [
    (dict(stream_error_after_parts=3, stream_error_message="Model invocation time exceeded"), "timeout_total"),
    (dict(stream_error_after_parts=3, stream_error_code="StreamBroken", stream_error_message="connection reset"),
     "stream_cut"),
    (dict(tgi_error_after=2), "overload"),
])
def test_sagemaker_failures_in_the_stream(aws, model, fault, kind):
    with aws("tgi", **fault) as fake:
        backend = sagemaker_backend(model, endpoint_url=fake.url)
        backend.load()
        with pytest.raises(RequestFailed) as failed:
            stream(backend, "hello", 8)
        backend.unload()
    assert failed.value.kind == kind


@pytest.mark.parametrize("code, status, fields, kind", [
    ("ThrottlingException", 400, {}, "overload"),
    ("ModelNotReadyException", 429, {}, "overload"),
    ("ModelError", 424, {"OriginalStatusCode": 429, "OriginalMessage": "Model is overloaded"}, "overload"),
    ("ModelError", 424, {"OriginalStatusCode": 500, "OriginalMessage": "CUDA error"}, "server_error"),
    ("ModelError", 424, {"OriginalStatusCode": 422, "OriginalMessage": "Input validation error"}, "client_error"),
    ("ValidationError", 400, {}, "client_error"),
    ("InternalFailure", 500, {}, "server_error"),
])
def test_sagemaker_invoke_errors_map_to_request_failure_kinds(aws, model, code, status, fields, kind):
    from botocore.stub import Stubber

    backend = sagemaker_backend(model)
    backend.load()
    with Stubber(backend.client) as stub:
        stub.add_client_error("invoke_endpoint_with_response_stream", service_error_code=code,
                              service_message="refused", http_status_code=status, modeled_fields=fields or None,
                              expected_params=backend.request_kwargs("hello", 8))
        with pytest.raises(RequestFailed) as failed:
            stream(backend, "hello", 8)
        stub.assert_no_pending_responses()
    backend.unload()
    assert failed.value.kind == kind and code in str(failed.value)


def test_sagemaker_credentials_come_from_the_chain_and_are_never_recorded(aws, model, monkeypatch):
    backend = sagemaker_backend(model)
    backend.load()
    visible = json.dumps([backend.engine_version(), dict(backend.config.options)]) + repr(vars(backend))
    assert "fake-secret-never-recorded" not in visible and "AKIAFAKEFAKEFAKE" not in visible
    backend.unload()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(UserError, match="no AWS credentials"):
        sagemaker_backend(model).load()
    with pytest.raises(UserError, match="no AWS region"):
        sagemaker_backend(model, region=None).load()
    with pytest.raises(UserError, match="endpoint"):
        sagemaker_backend(model, endpoint=None)


def test_fakes_stay_off_the_path_outside_their_tests():
    for name in ("mlc_llm", "sglang", "optimum.neuron", "sagemaker_runtime"):
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            found = None
        assert found is None or str(FAKES) not in str(found.origin)


@pytest.mark.parametrize("name,variant", [("mlc", None), ("mlc-sync", None), ("sglang", None), ("neuron", "throughput")])
def test_the_conformance_kit_runs_through_each_fake(fakes, model, name, variant):
    from llmcompare.testing import check_backend

    report = check_backend(name, model=model.path, variant=variant)
    assert report.ok, str(report)


def test_the_conformance_kit_runs_through_the_fake_sagemaker_endpoint(aws, model):
    from llmcompare.testing import check_backend

    with aws("tgi", part_size=9) as fake:
        report = check_backend("sagemaker", model=model.path,
                               options={"endpoint": "llama-7b", "region": "eu-west-1", "endpoint_url": fake.url})
    assert report.ok, str(report)
