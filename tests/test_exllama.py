"""The ExLlamaV2 and ExLlamaV3 adapters, tested through faithful fakes of both engines.

``tests/fakes/exllamav2`` and ``tests/fakes/exllamav3`` mirror the engines' API (exllamav2 0.3.2,
exllamav3 1.6.5: module paths, classes, signatures, defaults, assertions, result dicts; each package
docstring names the source it mirrors) and record the calls they receive. Their "model" is a seeded
next-token table, so greedy output is known in advance (``expected``); sampling settings that are not
greedy draw from an unseeded RNG. Both fakes reuse cached prompt prefixes the way the engines do
unless the page table is reset, and hold host memory while loaded. They are put on ``sys.path`` (and
``PYTHONPATH``, for the converter subprocesses) by the ``fakes`` fixture only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

from llmcompare import plugins
from llmcompare.backend import BackendConfig, BackendSpec, Chunk, clock, collect
from llmcompare.errors import BackendNotInstalled, RequestFailed, UserError
from llmcompare.models import resolve_model

pytest.importorskip("torch")
pytest.importorskip("transformers")

FAKES = Path(__file__).parent / "fakes"
FAKE_PACKAGES = ("exllamav2", "exllamav3")
MODULES = "llmcompare.backends.exllamav2,llmcompare.backends.exllamav3"
PROMPT = [40, 41, 42, 43, 17]  # ends in 17: the fakes' greedy first token is EOS (id 2)


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(FAKES), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LLMCOMPARE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMCOMPARE_PLUGINS", MODULES)
    monkeypatch.setenv("FAKE_EXL_CLI_LOG", str(tmp_path / "converter.jsonl"))
    plugins.get_registry(reload=True)
    yield
    for name in [m for m in sys.modules if m.split(".")[0] in FAKE_PACKAGES]:
        del sys.modules[name]
    monkeypatch.undo()
    plugins.get_registry(reload=True)


@pytest.fixture
def v2(fakes):
    from exllamav2 import _fake

    _fake.reset()
    yield _fake
    _fake.reset()


@pytest.fixture
def v3(fakes):
    from exllamav3 import _fake

    _fake.reset()
    yield _fake
    _fake.reset()


def write_checkpoint(path: Path, quantization: dict | None = None) -> Path:
    """An HF directory of SmolLM2's shape with a byte-level tokenizer and one tiny tensor (fakes read no
    weights): unquantized, or holding ``quantization`` as its ``quantization_config``."""
    import torch
    from safetensors.torch import save_file

    from llmcompare.models import synthetic

    path.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float16",
              "bos_token_id": 1, "eos_token_id": 2, **synthetic.SHAPES["smollm2-135m"]}
    if quantization:
        config["quantization_config"] = quantization
    (path / "config.json").write_text(json.dumps(config))
    synthetic.build_tokenizer("smollm2-135m").save_pretrained(path)
    save_file({"model.embed_tokens.weight": torch.zeros(4, 4, dtype=torch.float16)}, str(path / "model.safetensors"))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("smollm2-shape"))


def backend(name: str, model: Path, variant: str | None = None, device: str = "cuda", **options):
    module = importlib.import_module(f"llmcompare.backends.{name}")
    cls = module.ExLlamaV2Backend if name == "exllamav2" else module.ExLlamaV3Backend
    return cls(BackendConfig(model=resolve_model(str(model)), variant=variant, options=options, device=device))


def expected(fake, prompt: list[int], n: int) -> list[int]:
    """The fake model's greedy continuation."""
    out, last = [], prompt[-1]
    for _ in range(n):
        last = fake.greedy_next(last)
        out.append(last)
    return out


def stream(b, prompt, n) -> tuple[list[Chunk], float, float]:
    async def go():
        return [c async for c in b.astream(prompt, n)]

    t0 = clock()
    chunks = asyncio.run(go())
    return chunks, t0, clock()


def assert_times(times: list[float], t0: float, t1: float) -> None:
    assert times and all(b >= a for a, b in zip(times, times[1:], strict=False)), "timestamps go backwards"
    assert t0 <= times[0] and times[-1] <= t1


def eventually(predicate, timeout: float = 10.0) -> bool:
    """The driver thread resets the page table just after it hands a request its last tokens: wait for it."""
    deadline = clock() + timeout
    while not predicate():
        if clock() > deadline:
            return False
        time.sleep(0.001)
    return True


def specs(module: str) -> dict[str, BackendSpec]:
    out: dict[str, BackendSpec] = {}
    importlib.import_module(f"llmcompare.backends.{module}").register_backends(
        register=lambda spec: out.setdefault(spec.name, spec))
    return out


# ---------------------------------------------------------------- registration
def test_specs_declare_variants_capabilities_and_install_hints():
    v2spec, v3spec = specs("exllamav2")["exllamav2"], specs("exllamav3")["exllamav3"]
    assert set(v2spec.variants) == {"fp16", "gptq", "exl2"} and v2spec.default_variant == "fp16"
    assert set(v3spec.variants) == {"exl3", "fp16"} and v3spec.default_variant == "exl3"
    for spec, module in ((v2spec, "exllamav2"), (v3spec, "exllamav3")):
        caps = spec.capabilities
        assert caps.concurrent and caps.accepts_token_ids and caps.in_process and caps.devices == ("cuda",)
        assert caps.prefix_cache == "reset" and set(caps.model_formats) == {"hf", "synthetic"}
        assert spec.install == f"pip install 'llmcompare[{module}]'" and spec.requires == (module, "torch")
        assert "cache_tokens" in spec.options and "model_dir" in spec.options and not spec.passthrough
        if spec.missing_module() is not None:  # no engine here: the one message, with the install command
            with pytest.raises(BackendNotInstalled, match=spec.install.replace("[", r"\[").replace("]", r"\]")):
                spec.load_class()
    assert v2spec.options["paged"].choices == ("auto", "true", "false")


# ---------------------------------------------------------------- ExLlamaV2
def test_v2_loads_as_documented_and_asks_for_greedy_exact_length_without_stops(v2, model_dir):
    b = backend("exllamav2", model_dir, "fp16")
    b.load()
    assert v2.names()[:3] == ["ExLlamaV2.__init__", "ExLlamaV2Cache.__init__", "ExLlamaV2.load_autosplit"]
    assert v2.last("ExLlamaV2Cache.__init__") == {"batch_size": 1, "max_seq_len": 8192, "lazy": True}
    assert v2.last("ExLlamaV2.__init__")["model_dir"] == str(model_dir)  # fp16: the model's own safetensors
    assert v2.last("ExLlamaV2DynamicGenerator.__init__")["paged"] is False  # no flash-attn here
    t0 = clock()
    gen = b.generate(PROMPT, 12)
    job = v2.last("ExLlamaV2DynamicJob")
    settings = job["gen_settings"]
    assert (settings.top_k, settings.top_p, settings.token_repetition_penalty) == (1, 0.0, 1.0)
    assert job["stop_conditions"] is None and job["banned_strings"] is None and job["filters"] is None
    assert job["max_new_tokens"] == 12 and job["min_new_tokens"] == 0 and job["token_healing"] is False
    assert job["input_ids"] == PROMPT
    assert gen.token_ids == expected(v2, PROMPT, 12) and gen.token_ids[0] == 2  # EOS first, and on to 12
    assert gen.finish_reason == "length" and gen.engine_output_tokens == 12 and gen.prompt_tokens == len(PROMPT)
    assert gen.count_source == "ids"
    assert_times(gen.token_times, t0, clock())
    assert b.count_tokens("héllo") == 6  # the engine's tokenizer (bytes, here)
    b.unload()


def test_v2_the_page_table_is_reset_whenever_the_generator_drains(v2, model_dir):
    b = backend("exllamav2", model_dir)
    b.load()
    resets = v2.names().count("ExLlamaV2DynamicGenerator.reset_page_table")
    first = b.generate(PROMPT, 6)
    again = b.generate(PROMPT, 6)  # a latency repetition: the same prompt
    assert first.token_ids == again.token_ids
    assert eventually(lambda: b.driver.resets == 2) and b.driver.cached_tokens == 0
    assert v2.names().count("ExLlamaV2DynamicGenerator.reset_page_table") == resets + 2
    # Without the reset the engine reuses the prompt it still holds: the check above would see it.
    import torch
    from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

    b.driver.close()
    direct = b.generator
    for _ in range(2):
        direct.enqueue(ExLlamaV2DynamicJob(torch.tensor([PROMPT]), max_new_tokens=2,
                                           gen_settings=ExLlamaV2Sampler.Settings.greedy()))
    results = []
    while direct.num_remaining_jobs():
        results += direct.iterate()
    assert [r["cached_tokens"] for r in results if r.get("eos")] == [0, len(PROMPT) - 1]
    b.unload()


def test_v2_tokens_of_one_result_share_its_time(v2, model_dir):
    v2.SETTINGS.tokens_per_result = 3
    b = backend("exllamav2", model_dir)
    b.load()
    chunks, t0, t1 = stream(b, PROMPT, 10)
    assert [len(c.token_ids) for c in chunks] == [3, 3, 3, 1]
    gen = collect(chunks)
    assert gen.token_ids == expected(v2, PROMPT, 10) and gen.token_times[:3] == [chunks[0].time] * 3
    assert_times(gen.token_times, t0, t1)
    b.unload()


def test_v2_the_engines_default_settings_would_sample(v2, model_dir):
    """What makes the greedy assertions above mean something: a job without explicit greedy settings
    (top-k 50, repetition penalty 1.025) does not give the greedy tokens."""
    import queue

    import torch
    from exllamav2.generator import ExLlamaV2DynamicJob

    b = backend("exllamav2", model_dir)
    b.load()

    def default_job() -> list[int]:
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        b.driver.submit(ExLlamaV2DynamicJob(torch.tensor([PROMPT]), max_new_tokens=8), inbox.put)
        ids: list[int] = []
        while True:
            result = inbox.get()
            if "token_ids" in result:
                ids += result["token_ids"][0].tolist()
            if result.get("eos"):
                return ids

    assert all(default_job() != expected(v2, PROMPT, 8) for _ in range(3))
    b.unload()


@pytest.mark.parametrize("flash, xformers, attention", [
    (False, False, "matmul (exllamav2's SDPA prefill is not causal without flash-attn)"),
    (False, True, "xformers"), (True, False, "flash-attn")])
def test_v2_prefill_attention_is_causal_whatever_is_installed(v2, model_dir, monkeypatch, flash, xformers, attention):
    """exllamav2 0.3.2's SDPA prefill (no flash-attn, no xformers) attends both ways; the adapter takes the
    causal matmul path instead, so a many-token prompt's first greedy token is the model's."""
    import exllamav2.attn

    monkeypatch.setattr(exllamav2.attn, "has_flash_attn", flash)
    monkeypatch.setattr(exllamav2.attn, "has_xformers", xformers)
    b = backend("exllamav2", model_dir, paged="false")
    b.load()
    assert b.engine_version()["exllamav2_attention"] == attention
    assert b.model.config.no_sdpa is (not flash and not xformers)
    assert b.generate(PROMPT, 5).token_ids == expected(v2, PROMPT, 5)
    b.unload()
    # without the adapter's choice the fake engine, like the real one, answers a different first token
    monkeypatch.setattr(exllamav2.attn, "has_flash_attn", False)
    monkeypatch.setattr(exllamav2.attn, "has_xformers", False)
    from exllamav2 import ExLlamaV2Config
    assert not exllamav2.attn.prefill_is_causal(ExLlamaV2Config(str(model_dir)))


@pytest.mark.parametrize("flash_attn, paged, batched", [(False, "auto", 1), (True, "auto", 3), (True, "false", 1)])
def test_v2_concurrent_requests_share_one_batch_when_paged(v2, model_dir, monkeypatch, flash_attn, paged, batched):
    import exllamav2.attn

    monkeypatch.setattr(exllamav2.attn, "has_flash_attn_with_paged", flash_attn)
    v2.SETTINGS.step_s = 0.005  # a step takes time, as on a GPU: all three requests arrive before one finishes
    b = backend("exllamav2", model_dir, paged=paged)
    b.load()
    assert b.engine_version()["exllamav2_paged"] == str(batched > 1).lower()
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    lengths = [6, 4, 8]

    async def together():
        async def one(p, n):
            return collect([c async for c in b.astream(p, n)])

        return await asyncio.gather(*(one(p, n) for p, n in zip(prompts, lengths, strict=True)))

    for p, n, gen in zip(prompts, lengths, asyncio.run(together()), strict=True):
        assert gen.token_ids == expected(v2, p, n) and gen.finish_reason == "length"
    assert v2.STATE["max_active"] == batched  # unpaged: one job at a time, the others queued in the engine
    b.unload()


def test_v2_a_caller_that_stops_early_cancels_its_job(v2, model_dir):
    b = backend("exllamav2", model_dir)
    b.load()

    async def first_chunk_only():
        async with contextlib.aclosing(b.astream(PROMPT, 8000)) as chunks:
            async for chunk in chunks:
                return chunk

    chunk = asyncio.run(first_chunk_only())
    assert chunk.token_ids == expected(v2, PROMPT, 1)
    assert eventually(lambda: "ExLlamaV2DynamicGenerator.cancel" in v2.names())
    assert b.generate([7, 8], 3).token_ids == expected(v2, [7, 8], 3)  # the engine goes on serving
    assert b.generator.num_remaining_jobs() == 0
    b.unload()


def test_v2_engine_errors_and_oversized_requests_are_request_failures(v2, model_dir):
    b = backend("exllamav2", model_dir, cache_tokens=300)  # rounded up to 512 (two pages)
    b.load()
    assert v2.last("ExLlamaV2Cache.__init__")["max_seq_len"] == 512
    with pytest.raises(RequestFailed) as too_long:
        b.generate([5] * 500, 20)
    assert too_long.value.kind == "client_error" and "cache_tokens" in str(too_long.value)
    v2.SETTINGS.fail_on_iterate = v2.STATE["iterations"] + 2
    with pytest.raises(RequestFailed) as failed:
        b.generate(PROMPT, 6)
    assert failed.value.kind == "engine" and "illegal memory access" in str(failed.value)
    assert b.generate(PROMPT, 4).token_ids == expected(v2, PROMPT, 4)
    b.unload()


def test_v2_unload_frees_the_model_and_stops_the_driver(v2, model_dir):
    b = backend("exllamav2", model_dir)
    b.load()
    assert v2.STATE["live_bytes"] > 0
    thread = b.driver._thread
    b.generate(PROMPT, 2)
    b.unload()
    assert v2.STATE["live_bytes"] == 0 and "ExLlamaV2.unload" in v2.names()
    assert not thread.is_alive() and b.generator is None and b.model is None
    with pytest.raises(RuntimeError, match="not loaded"):
        b.generate(PROMPT, 2)


def test_v2_checkpoints_must_be_what_the_variant_says(v2, model_dir, tmp_path):
    exl2 = write_checkpoint(tmp_path / "exl2", {"quant_method": "exl2", "bits": 4.0, "head_bits": 6,
                                                "version": "0.3.2"})
    gptq = write_checkpoint(tmp_path / "gptq", {"quant_method": "gptq", "bits": 4, "group_size": 128,
                                                "desc_act": False, "sym": True, "checkpoint_format": "gptq"})
    with pytest.raises(UserError, match="exllamav2:exl2"):
        backend("exllamav2", model_dir, "gptq", model_dir=str(exl2)).load()
    with pytest.raises(UserError, match="exllamav2:fp16"):
        backend("exllamav2", model_dir, "exl2", model_dir=str(model_dir)).load()
    b = backend("exllamav2", gptq, "gptq")  # a model directory that already holds GPTQ is loaded as is
    b.load()
    assert v2.last("ExLlamaV2.__init__")["model_dir"] == str(gptq)
    assert b.engine_version()["exllamav2_checkpoint"].startswith("gptq 4-bit group 128 desc_act=False")
    b.unload()
    with pytest.raises(UserError, match="applies to the exl2 variant only"):
        backend("exllamav2", model_dir, "gptq", bits=3.0)
    with pytest.raises(UserError, match="CUDA GPUs only"):
        backend("exllamav2", model_dir, device="cpu")


def test_v2_exl2_variant_converts_once_through_the_recipe(v2, model_dir, tmp_path, monkeypatch):
    from llmcompare.models import quantize

    monkeypatch.setattr(quantize, "cuda_available", lambda: True)
    log = tmp_path / "converter.jsonl"
    b = backend("exllamav2", model_dir, "exl2", bits=3.5)
    b.load()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 1 and calls[0][0] == "convert_exl2"
    assert calls[0][calls[0].index("-b") + 1] == "3.5" and calls[0][calls[0].index("-i") + 1] == str(model_dir)
    loaded = Path(v2.last("ExLlamaV2.__init__")["model_dir"])
    assert loaded.name == "model" and loaded.parent.parent.name == "exl2"
    assert b.engine_version()["exllamav2_checkpoint"] == "exl2 3.5 bpw, head 6 bits (converter 0.3.2)"
    b.unload()
    again = backend("exllamav2", model_dir, "exl2", bits=3.5)
    again.load()  # cached
    assert len(log.read_text().splitlines()) == 1
    again.unload()


# ---------------------------------------------------------------- ExLlamaV3
def test_v3_loads_as_documented_and_asks_for_argmax_exact_length_without_stops(v3, model_dir):
    b = backend("exllamav3", model_dir, "fp16", max_batch_size=8)
    b.load()
    order = v3.names()
    assert order.index("Cache.__init__") < order.index("Model.load")  # the model allocates the cache it knows
    assert v3.last("Model.load")["caches"] == 1 and v3.last("Cache.__init__")["max_num_tokens"] == 8192
    generator = v3.last("Generator.__init__")
    assert generator["cpu_cache_size"] == 0 and generator["disk_cache_dir"] is None and generator["max_batch_size"] == 8
    t0 = clock()
    gen = b.generate(PROMPT, 9)
    job = v3.last("Job")
    assert type(job["sampler"]).__name__ == "ArgmaxSampler"
    assert job["stop_conditions"] is None and job["banned_strings"] is None and job["stop_on_loop"] is None
    assert job["max_new_tokens"] == 9 and job["min_new_tokens"] == 0 and job["input_ids"] == PROMPT
    assert gen.token_ids == expected(v3, PROMPT, 9) and gen.token_ids[0] == 2
    assert gen.finish_reason == "length" and gen.engine_output_tokens == 9 and gen.prompt_tokens == len(PROMPT)
    assert_times(gen.token_times, t0, clock())
    again = b.generate(PROMPT, 9)
    assert again.token_ids == gen.token_ids and b.driver.cached_tokens == 0
    # at construction, then after each request
    assert eventually(lambda: v3.names().count("PageTable.reset_page_table") == 3)
    b.unload()
    assert v3.STATE["live_bytes"] == 0 and v3.names()[-2:] == ["Generator.close", "Model.unload"]


def test_v3_batches_concurrent_requests_and_refuses_what_the_cache_would_cut(v3, model_dir):
    v3.SETTINGS.step_s = 0.005  # a step takes time, as on a GPU: both requests arrive before one finishes
    b = backend("exllamav3", model_dir, "fp16", cache_tokens=512)
    b.load()
    prompts = [[5, 6, 7], [8, 9]]

    async def together():
        async def one(p):
            return collect([c async for c in b.astream(p, 40)])

        return await asyncio.gather(*(one(p) for p in prompts))

    for p, gen in zip(prompts, asyncio.run(together()), strict=True):
        assert gen.token_ids == expected(v3, p, 40)
    assert v3.STATE["max_active"] == 2
    # The engine would silently cap max_new_tokens at the cache's room: the adapter refuses instead.
    with pytest.raises(RequestFailed) as cut:
        b.generate([5] * 480, 40)
    assert cut.value.kind == "client_error"
    b.unload()


def test_v3_exl3_is_the_default_and_converts_once(v3, model_dir, tmp_path, monkeypatch):
    from llmcompare.models import quantize

    monkeypatch.setattr(quantize, "cuda_available", lambda: True)
    b = backend("exllamav3", model_dir, None, head_bits=5)
    assert b.variant == "exl3"
    b.load()
    calls = [json.loads(line) for line in (tmp_path / "converter.jsonl").read_text().splitlines()]
    assert [c[0] for c in calls] == ["convert_model"] and calls[0][calls[0].index("-hb") + 1] == "5"
    assert b.engine_version()["exllamav3_checkpoint"] == "exl3 4.0 bpw, head 5 bits (converter 1.6.5)"
    assert b.generate(PROMPT, 3).token_ids == expected(v3, PROMPT, 3)
    b.unload()
    with pytest.raises(UserError, match="exllamav3:exl3"):
        backend("exllamav3", model_dir, "fp16", model_dir=str(b.checkpoint)).load()


# ---------------------------------------------------------------- both: natural stop (the fidelity pass)
@pytest.mark.parametrize("name, job_call", [("exllamav2", "ExLlamaV2DynamicJob"), ("exllamav3", "Job")])
def test_stop_at_eos_ends_at_eos_without_outputting_it(fakes, model_dir, name, job_call):
    fake = importlib.import_module(f"{name}._fake")
    fake.reset()
    fake.SETTINGS.tokens_per_result = 2  # with an odd count, one token is still held back when EOS comes
    b = backend(name, model_dir, "fp16")
    b.load()
    prompt, k = [30], 3  # the fakes continue 30 with 84, 101, 139, then EOS
    full = expected(fake, prompt, 40)
    assert full[k] == 2 and 2 not in full[:k]
    gen = b.generate(prompt, 40, stop_at_eos=True)
    assert fake.last(job_call)["stop_conditions"] == [2]  # the checkpoint's eos_token_id, nothing else
    assert gen.token_ids == full[:k] and len(gen.token_times) == k
    assert gen.finish_reason == "stop" and gen.engine_output_tokens == k
    streamed = asyncio.run(_collect(b.astream(prompt, 40, stop_at_eos=True)))
    assert streamed.token_ids == full[:k] and streamed.finish_reason == "stop"
    forced = b.generate(prompt, 40)  # without it: exactly N, on past EOS
    assert forced.token_ids == full and forced.finish_reason == "length"
    assert fake.last(job_call)["stop_conditions"] is None
    b.unload()


async def _collect(chunks):
    return collect([c async for c in chunks])


# ---------------------------------------------------------------- the conformance kit
@pytest.mark.parametrize("name, variant, flash_attn", [
    ("exllamav2", "fp16", False), ("exllamav2", "exl2", True),
    ("exllamav3", "exl3", False), ("exllamav3", "fp16", False),
])
def test_the_conformance_kit_runs_through_each_fake(fakes, model_dir, tmp_path, monkeypatch, name, variant, flash_attn):
    from llmcompare.testing import check_backend

    options = {}
    if variant in ("exl2", "exl3"):
        held = {"quant_method": variant, "bits": 4.0, "head_bits": 6, "version": "test"}
        options["model_dir"] = str(write_checkpoint(tmp_path / variant, held))
    if flash_attn:
        import exllamav2.attn

        monkeypatch.setattr(exllamav2.attn, "has_flash_attn_with_paged", True)
    report = check_backend(name, model=str(model_dir), variant=variant, options=options, device="cuda")
    assert report.ok, str(report)
    assert "unload -" in next(c.detail for c in report.checks if c.name == "unload_frees_memory")
