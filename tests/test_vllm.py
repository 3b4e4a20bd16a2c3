"""The vLLM backend.

The first tests need no engine: they check the engine arguments a configuration turns into. The rest
run the adapter for real, inside vLLM's own environment (``llmcompare env create vllm``; skipped when
it does not exist): one subprocess under that interpreter loads SmolLM2-135M-Instruct in fp32 on the
CPU, streams greedy tokens from our prompt ids, and the tokens are compared with transformers fp32 in
this (the main) environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import has_default_model

from llmcompare.backend import BackendConfig
from llmcompare.backends import vllm as vllm_backend
from llmcompare.errors import OptionError
from llmcompare.models import ResolvedModel

ROOT = Path(__file__).resolve().parent.parent
N = 16
PARITY_PROMPTS = 10  # the whole built-in default set


def vllm_spec():
    specs = []
    vllm_backend.register_backends(specs.append)
    return specs[0]


def hf_model(tmp_path) -> ResolvedModel:
    (tmp_path / "config.json").write_text("{}")
    return ResolvedModel(str(tmp_path), "hf", "m", str(tmp_path))


# ---------------------------------------------------------------- engine arguments (no vLLM needed)


def test_engine_args_state_the_fairness_settings(tmp_path):
    spec = vllm_spec()
    options = spec.validate_options({"max_model_len": "512", "enforce_eager": "true", "max_num_batched_tokens": "1024"})
    args = vllm_backend.VLLMBackend(BackendConfig(model=hf_model(tmp_path), variant="fp16", options=options)).engine_args()
    assert args["model"] == str(tmp_path) and args["dtype"] == "float16"
    assert args["enable_prefix_caching"] is False and args["disable_log_stats"] is False
    assert args["generation_config"] == "vllm"  # no defaults or max_new_tokens cap from the model's file
    assert args["max_model_len"] == 512 and args["enforce_eager"] is True
    assert args["max_num_batched_tokens"] == 1024  # passthrough reaches the engine
    assert "detokenize" not in args and "load_format" not in args


def test_cpu_kv_cache_has_a_fixed_default_and_an_option(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    model = hf_model(tmp_path)
    default = vllm_backend.VLLMBackend(BackendConfig(model=model)).engine_args()
    assert default["kv_cache_memory_bytes"] == 4 * 2**30 and default["dtype"] == "float32"
    sized = vllm_backend.VLLMBackend(BackendConfig(model=model, options={"kv_cache_gib": 1.5})).engine_args()
    assert sized["kv_cache_memory_bytes"] == int(1.5 * 2**30)
    gpu = vllm_backend.VLLMBackend(BackendConfig(model=model, device="cuda")).engine_args()
    assert "kv_cache_memory_bytes" not in gpu  # on a GPU vLLM sizes it from gpu_memory_utilization
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert "kv_cache_memory_bytes" not in vllm_backend.VLLMBackend(BackendConfig(model=model)).engine_args()


def test_dtype_comes_from_the_variant_only(tmp_path):
    with pytest.raises(OptionError, match="variant"):
        vllm_backend.VLLMBackend(BackendConfig(model=hf_model(tmp_path), options={"dtype": "half"}))


def test_json_passthrough_values_are_parsed(tmp_path):
    options = vllm_spec().validate_options({"compilation_config": '{"cudagraph_mode": "FULL"}'})
    args = vllm_backend.VLLMBackend(BackendConfig(model=hf_model(tmp_path), options=options)).engine_args()
    assert args["compilation_config"] == {"cudagraph_mode": "FULL"}


@pytest.mark.engine
def test_synthetic_models_load_dummy_weights_from_a_config_only_dir(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("LLMCOMPARE_CACHE_DIR", str(tmp_path / "cache"))
    model = ResolvedModel("synthetic:llama-2-7b", "synthetic", "synthetic-llama-2-7b", shape="llama-2-7b")
    args = vllm_backend.VLLMBackend(BackendConfig(model=model, device="cuda")).engine_args()
    assert args["load_format"] == "dummy" and args["skip_tokenizer_init"] is True
    files = {p.name for p in Path(args["model"]).iterdir()}
    assert "config.json" in files and not any(f.endswith((".safetensors", ".bin")) for f in files)
    config = json.loads((Path(args["model"]) / "config.json").read_text())
    assert config["hidden_size"] == 4096 and config["num_hidden_layers"] == 32 and config["vocab_size"] == 32000


def test_spec_declares_a_concurrent_in_process_engine_with_its_own_environment():
    spec = vllm_spec()
    caps = spec.capabilities
    assert caps.concurrent and caps.in_process and caps.accepts_token_ids and caps.prefix_cache == "disabled"
    assert caps.devices == ("cpu", "cuda") and set(caps.model_formats) == {"hf", "synthetic"}
    assert spec.install == "llmcompare env create vllm" and spec.passthrough


# ---------------------------------------------------------------- live, in vLLM's environment

DRIVER = '''
import asyncio, concurrent.futures, json, sys, time
import psutil
from llmcompare.backend import BackendConfig, clock
from llmcompare.models import resolve_model
from llmcompare.backends.vllm import VLLMBackend


async def one(backend, ids, n):
    start = clock()
    chunks = [c async for c in backend.astream(ids, n)]
    return {"start": start, "end": clock(),
            "ids": [t for c in chunks for t in c.token_ids], "times": [c.time for c in chunks for _ in c.token_ids],
            "chunk_sizes": [len(c.token_ids) for c in chunks], "finish_reason": chunks[-1].finish_reason,
            "prompt_tokens": chunks[-1].prompt_tokens, "engine_output_tokens": chunks[-1].engine_output_tokens}


async def one_and_close(backend, ids, n):
    out = await one(backend, ids, n)
    await backend.aclose()
    return out


async def drive(backend, prompts, n):
    await one(backend, prompts[0], 4)  # warm-up
    t = clock()
    sequential = [await one(backend, p, n) for p in prompts]
    sequential_s = clock() - t
    t = clock()
    single = await one(backend, prompts[1], n)
    single_s = clock() - t
    t = clock()
    four = await asyncio.gather(*(one(backend, p, n) for p in prompts[:4]))
    four_s = clock() - t
    children_loaded = live_children()
    # the fidelity pass: natural stopping, and teacher-forced scores of the prompt plus that answer
    natural = [c async for c in backend.astream(prompts[2], 96, stop_at_eos=True)]
    answer = [t for c in natural for t in c.token_ids]
    scores = await backend.ascore(prompts[2] + answer, len(prompts[2]), top_k=2)
    await backend.aclose()
    return {"sequential": sequential, "sequential_s": sequential_s, "single": single, "single_s": single_s,
            "four": four, "four_s": four_s, "children_loaded": children_loaded,
            "natural": {"ids": answer, "finish_reason": natural[-1].finish_reason},
            "scores": {"logprobs": scores.logprobs, "top": scores.top}}


def live_children():
    """Child processes still running, except multiprocessing's resource tracker (it lives as long as the
    interpreter). A killed child not yet reaped is a zombie: it holds no memory."""
    out = []
    for c in psutil.Process().children(recursive=True):
        try:
            if c.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(c.cmdline()):
                out.append(" ".join(c.cmdline())[:200])
        except psutil.NoSuchProcess:
            pass
    return out


def main():
    job = json.loads(open(sys.argv[1]).read())
    config = BackendConfig(model=resolve_model(job["model"]), variant="fp32", options=job["options"], device="cpu")
    backend = VLLMBackend(config)
    t = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - t
    count = backend.count_tokens("The capital of France is")
    # As the session does: load() on this thread, every astream on one event loop in another thread.
    with concurrent.futures.ThreadPoolExecutor(1) as loop_thread:
        result = loop_thread.submit(asyncio.run, drive(backend, job["prompts"], job["n"])).result()
    result.update(load_s=load_s, count_tokens=count, versions=backend.engine_version())
    backend.unload()
    result["children_after_unload"] = live_children()
    # A second engine in the same process: a synthetic shape, vLLM's dummy weights, no tokenizer.
    synthetic = VLLMBackend(BackendConfig(model=resolve_model("synthetic:smollm2-135m"), variant="fp32",
                                          options=job["options"], device="cpu"))
    synthetic.load()
    with concurrent.futures.ThreadPoolExecutor(1) as loop_thread:
        result["synthetic"] = loop_thread.submit(asyncio.run, one_and_close(synthetic, job["prompts"][0], 8)).result()
    synthetic.unload()
    with open(sys.argv[2], "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":  # vLLM starts its engine core with multiprocessing spawn
    main()
'''


def vllm_python() -> str:
    from llmcompare import envs

    python = sys.executable if vllm_spec().missing_module() is None else envs.managed_python("vllm")
    if python is None:
        pytest.skip("vLLM is not installed; create its environment with: llmcompare env create vllm")
    manifest = envs.read_manifest("vllm")
    if manifest and python == manifest["python"] and manifest["llmcompare"]["editable_path"] != str(ROOT):
        pytest.skip(f"the vllm environment runs llmcompare from {manifest['llmcompare']['editable_path']}, not"
                    f" {ROOT}: rebuild it from here with llmcompare env create vllm")
    return python


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    python = vllm_python()
    if not has_default_model():
        pytest.skip("default model (llmcompare[default-model]) not installed")
    from llmcompare.models import resolve_model
    from llmcompare.models.prompting import read_prompts, tokenize

    model = resolve_model(None)
    prompts = [list(p.token_ids) for p in tokenize(read_prompts("default"), model.tokenizer())][:PARITY_PROMPTS]
    hf_dir = model.hf_dir()
    work = tmp_path_factory.mktemp("vllm")
    job = {"model": hf_dir, "prompts": prompts, "n": N,
           "options": {"max_model_len": 512, "enforce_eager": True, "kv_cache_gib": 1}}
    (work / "job.json").write_text(json.dumps(job))
    (work / "driver.py").write_text(DRIVER)
    proc = subprocess.run([python, str(work / "driver.py"), str(work / "job.json"), str(work / "out.json")],
                          capture_output=True, text=True, timeout=900, cwd=work, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((work / "out.json").read_text())
    out["prompts"], out["hf_dir"] = prompts, hf_dir
    return out


@pytest.mark.engine
def test_exactly_n_greedy_tokens_with_monotonic_times(live):
    for prompt, r in zip(live["prompts"], live["sequential"]):
        assert len(r["ids"]) == N and r["engine_output_tokens"] == N
        assert r["finish_reason"] == "length" and r["prompt_tokens"] == len(prompt)
        times = r["times"]
        assert r["start"] < times[0] and times == sorted(times) and times[-1] <= r["end"]
        assert sum(r["chunk_sizes"]) == N
    assert live["versions"]["vllm"] and live["versions"]["vllm_platform"] == "cpu"
    assert live["count_tokens"] == 5  # "The capital of France is" in SmolLM2's tokenizer


@pytest.mark.engine
def test_tokens_match_transformers_fp32(live):
    from llmcompare.backends.hf_transformers import TransformersBackend
    from llmcompare.models import resolve_model

    pytest.importorskip("transformers")
    # One thread: on a shared 2-core machine, two spinning OpenMP threads ran 10x slower than one.
    reference = TransformersBackend(BackendConfig(model=resolve_model(live["hf_dir"]), variant="fp32",
                                                  options={"threads": 1}))
    reference.load()
    try:
        expected = [reference.generate(p, N).token_ids for p in live["prompts"]]
    finally:
        reference.unload()
    got = [r["ids"] for r in live["sequential"]]
    same_prompts = sum(e == g for e, g in zip(expected, got))
    same_tokens = sum(a == b for e, g in zip(expected, got) for a, b in zip(e, g))
    print(f"vLLM vs transformers fp32: {same_prompts}/{len(got)} prompts identical, {same_tokens}/{N * len(got)} tokens")
    assert same_prompts == len(got), list(zip(expected, got))


@pytest.mark.engine
def test_natural_stop_and_scores_match_transformers_fp32(live):
    """The fidelity pass's two engine calls: greedy until EOS, and prompt_logprobs as teacher forcing."""
    from llmcompare.backends.hf_transformers import TransformersBackend
    from llmcompare.models import resolve_model

    reference = TransformersBackend(BackendConfig(model=resolve_model(live["hf_dir"]), variant="fp32",
                                                  options={"threads": 2}))
    reference.load()
    try:
        prompt = live["prompts"][2]
        expected = reference.generate(prompt, 96, stop_at_eos=True)
        answer = live["natural"]["ids"]
        eos = reference.eos_ids()
        got = answer[:-1] if answer and answer[-1] in eos else answer  # vLLM returns the EOS id itself
        assert got == expected.token_ids
        assert (live["natural"]["finish_reason"] == "stop") == (expected.finish_reason == "stop")
        ref_scores = reference.score(prompt + answer, len(prompt), top_k=2)
    finally:
        reference.unload()
    mine = live["scores"]
    assert len(mine["logprobs"]) == len(answer)
    assert max(abs(a - b) for a, b in zip(mine["logprobs"], ref_scores.logprobs)) < 1e-2
    assert [t[0][0] for t in mine["top"]] == [t[0][0] for t in ref_scores.top]


@pytest.mark.engine
def test_four_concurrent_streams_outrun_one(live):
    single_tps = N / live["single_s"]
    four_tps = 4 * N / live["four_s"]
    print(f"vLLM CPU aggregate: 1 stream {single_tps:.1f} tok/s, 4 streams {four_tps:.1f} tok/s")
    assert all(len(r["ids"]) == N for r in live["four"])
    assert four_tps > 1.5 * single_tps
    # the four overlapped: each started before any of the others finished
    assert max(r["start"] for r in live["four"]) < min(r["end"] for r in live["four"])


@pytest.mark.engine
def test_unload_ends_the_engine_process(live):
    assert live["children_loaded"]  # the engine core (and its worker) run in child processes
    assert live["children_after_unload"] == []


@pytest.mark.engine
def test_synthetic_shape_runs_on_dummy_weights_after_another_engine(live):
    r = live["synthetic"]
    assert len(r["ids"]) == 8 and r["engine_output_tokens"] == 8 and r["finish_reason"] == "length"
    assert all(0 <= t < 49152 for t in r["ids"])  # smollm2-135m's vocabulary


@pytest.mark.engine
def test_conformance_kit_passes_inside_the_vllm_environment():
    python = vllm_python()
    if not has_default_model():
        pytest.skip("default model (llmcompare[default-model]) not installed")
    from llmcompare.models import resolve_model

    hf_dir = resolve_model(None).hf_dir()  # converted here: the vllm environment has no GGUF reader
    code = ("import sys\nfrom llmcompare.testing import check_backend\n"
            "r = check_backend('vllm', model=sys.argv[1], max_new_tokens=8, options={'max_model_len': 512,"
            " 'enforce_eager': True, 'kv_cache_gib': 1})\nprint(r)\nraise SystemExit(0 if r.ok else 1)\n")
    proc = subprocess.run([python, "-c", code, hf_dir], capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "conformance of 'vllm': PASS" in proc.stdout


@pytest.mark.engine
def test_the_load_driver_runs_vllm_in_its_environment_and_throughput_rises(tmp_path):
    vllm_python()
    if not has_default_model():
        pytest.skip("default model (llmcompare[default-model]) not installed")
    import llmcompare

    r = llmcompare.load(["vllm"], concurrency=[1, 4], requests=8, max_new_tokens=16, output=tmp_path / "r",
                        options=["max_model_len=512", "enforce_eager=true", "kv_cache_gib=1"])
    assert r.summaries[0].status == "ok", r.summaries[0].error
    assert r.summaries[0].info["python"] != sys.executable  # the worker ran under the vllm environment
    lv = {x.stage: x for x in r.levels}
    for x in lv.values():
        assert x.errors == 0 and x.length_mismatch == 0
    assert lv["load:c=4"].output_tok_s > 1.5 * lv["load:c=1"].output_tok_s
