"""Real engines on the real model (SmolLM2-135M-Instruct, CPU). Skipped where an engine is missing."""

import importlib.util

import pytest
from conftest import needs_model

import llmcompare
from llmcompare.records import read_records
from llmcompare.testing import check_backend

pytestmark = [pytest.mark.engine, needs_model]

ENGINES = {"transformers": "transformers", "ctranslate2": "ctranslate2", "llamacpp": "llama_cpp"}
N = 12
FIDELITY_TOKENS = 48


def have(*mods):
    return all(importlib.util.find_spec(m) for m in mods)


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    if not have("torch", "transformers", "ctranslate2", "llama_cpp"):
        pytest.skip("needs every CPU engine: pip install 'llmcompare[all]'")
    out = tmp_path_factory.mktemp("engines") / "run"
    result = llmcompare.compare(
        ["transformers:fp32", "ctranslate2:int8", "llamacpp", "ctranslate2:float32"],
        prompts="default", max_new_tokens=N, repeats=1, warmup=1, output=out, fidelity_tokens=FIDELITY_TOKENS,
    )
    return result


def test_every_engine_produces_exactly_n_tokens(engine_run):
    for s in engine_run.summaries:
        assert s.status == "ok", (s.backend, s.error)
        assert s.n_requests == 10 and s.n_errors == 0
        assert s.n_length_mismatch == 0, s.backend
        assert s.tpot_ms["p50"] > 0 and s.ttft_ms["p50"] > 0 and s.load_s is not None
        assert s.peak_rss_bytes and s.peak_rss_bytes > 50 * 2**20


def test_every_engine_got_identical_prompt_ids(engine_run):
    recs = read_records(engine_run.run_dir / "requests.jsonl")
    reqs = recs.requests
    prompt_len = {p["id"]: len(p["token_ids"]) for p in recs.run["prompts"]}
    for r in reqs:
        assert r.input_tokens == prompt_len[r.prompt_id]
        assert r.engine_prompt_tokens == r.input_tokens, r.backend  # the engine saw exactly our ids
        if r.stage == "latency":  # the fidelity pass stops at EOS
            assert len(r.token_ids) == N
        else:
            assert r.stage.startswith("fidelity") and 1 <= len(r.token_ids) <= FIDELITY_TOKENS


def test_agreement_with_transformers_fp32_is_reported(engine_run):
    comps = {c["backend"]: c for c in engine_run.comparisons}
    assert set(comps) == {"ctranslate2:int8", "llamacpp", "ctranslate2:float32"}
    for label, c in comps.items():
        assert c["baseline"] == "transformers:fp32"
        a = c["agreement"]
        assert a["prompts"] == 10 and 0.0 <= a["token_match"] <= 1.0
        # every engine decodes the same model greedily: the first token agrees on most prompts
        assert a["mean_prefix_tokens"] >= 1.0, (label, a)
    # float32 CTranslate2 runs the same dequantized weights as transformers fp32
    assert comps["ctranslate2:float32"]["agreement"]["token_match"] >= 0.9
    assert engine_run.summary("llamacpp").agreement is not None


def test_fidelity_of_every_engine_against_transformers_fp32(engine_run):
    """The issue's figures: real and non-trivial for the quantized engines, full agreement for float32."""
    fid = {f.backend: f for f in engine_run.fidelity}
    assert engine_run.spec.config("fidelity").reference.label == "transformers:fp32"
    assert set(fid) == {"transformers:fp32", "ctranslate2:int8", "llamacpp", "ctranslate2:float32"}
    for label, f in fid.items():
        assert f.prompts == 10 and f.errors == 0, (label, f.note)
        assert f.exact + f.near_ties + f.divergences == 10
        assert f.ll_gap is not None and f.similarity is not None and f.perplexity is not None, label
    # the run's own transformers:fp32 and the judge are the same configuration: identical outputs
    assert fid["transformers:fp32"].exact == 10 and fid["transformers:fp32"].ll_gap["value"] == pytest.approx(0, abs=1e-6)
    # CTranslate2 float32 runs the same weights in the same precision: it agrees fully
    f32 = fid["ctranslate2:float32"]
    assert f32.divergences == 0 and f32.exact >= 9, (f32.exact, f32.near_ties, f32.examples)
    assert abs(f32.ll_gap["value"]) < 0.01
    # the quantized engines differ somewhere on these prompts, and the figures say how
    for label in ("ctranslate2:int8", "llamacpp"):
        f = fid[label]
        assert f.exact < 10 and f.mean_prefix["value"] < FIDELITY_TOKENS, (label, f.to_dict())
        assert f.first_divergence_p50 is not None
    # perplexity of the shipped text: quantization costs some, float32 none to speak of
    ref_ppl = engine_run.fidelity_reference_perplexity
    assert 2 < ref_ppl < 100
    assert f32.perplexity == pytest.approx(ref_ppl, rel=0.01)
    assert fid["llamacpp"].perplexity > ref_ppl and fid["ctranslate2:int8"].perplexity > ref_ppl * 0.99
    assert fid["transformers:fp32"].perplexity == pytest.approx(ref_ppl, rel=1e-4)


def test_report_states_how_prefix_caches_were_kept_out(engine_run):
    from llmcompare.report.markdown import markdown

    md = markdown(engine_run)
    assert "- **llamacpp**: llama_cpp_python 0.3" in md and "prefix cache: reset before every request" in md
    assert "- **ctranslate2:int8**: ctranslate2 4." in md


def test_the_text_is_sensible(engine_run):
    from transformers import AutoTokenizer

    from llmcompare.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(None).tokenizer_dir())
    reqs = [r for r in engine_run.requests if r.backend == "transformers:fp32" and r.prompt_id == "math-sum"]
    text = tok.decode(reqs[0].token_ids)
    assert any(w in text.lower() for w in ("sum", "200", "number", "formula")), text


@pytest.mark.parametrize("name", ["echo", "transformers", "ctranslate2", "llamacpp"])
def test_conformance_kit_on_every_builtin(name):
    if name != "echo" and not have(ENGINES[name]):
        pytest.skip(f"{name} not installed")
    options = {"ballast_mb": 100} if name == "echo" else {}
    report = check_backend(name, options=options)
    assert report.ok, str(report)
    assert [c.name for c in report.checks] == [
        "protocol", "engine_version", "forced_length", "token_ids", "timestamps", "greedy_deterministic",
        "count_tokens", "unload_frees_memory",
    ]


def test_conformance_kit_catches_a_broken_backend(use_plugins, tmp_path, monkeypatch):
    (tmp_path / "shortplugin.py").write_text(
        "from llmcompare import hookimpl\nfrom llmcompare.backend import BackendSpec, Generation\n"
        "from llmcompare.backends.echo import EchoBackend\n"
        "class Short(EchoBackend):\n"
        "    def generate(self, prompt, n):\n"
        "        g = super().generate(prompt, n)\n"
        "        return Generation(g.token_ids[:-1], list(reversed(g.token_times[:-1])))\n"
        "@hookimpl\ndef register_backends(register):\n"
        "    register(BackendSpec(name='short', target='shortplugin:Short', install='-', passthrough=True))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    use_plugins("shortplugin")
    report = check_backend("short", options={"per_token_ms": 1})
    failed = {c.name for c in report.failures()}
    assert {"forced_length", "timestamps"} <= failed and not report.ok


@pytest.mark.skipif(not have("torch", "transformers"), reason="transformers not installed")
def test_synthetic_model_runs_on_transformers(run_dir):
    result = llmcompare.compare(["transformers"], model="synthetic:smollm2-135m", input_tokens=16,
                                max_new_tokens=4, repeats=1, warmup=0, output=run_dir, fidelity=False)
    s = result.summary("transformers:fp32")
    assert s.status == "ok", s.error
    assert s.n_requests == 10 and s.n_length_mismatch == 0
    assert all(p.token_ids and len(p.token_ids) == 16 for p in result.prompts)
    assert result.environment["model"]["parameters"] == 134_515_008


@pytest.mark.skipif(not have("torch", "transformers"), reason="transformers not installed")
def test_bitsandbytes_variants_state_their_quantization_and_refuse_the_cpu(run_dir):
    from llmcompare.backends.hf_transformers import bnb_config

    int8, nf4 = bnb_config("int8"), bnb_config("nf4")
    assert int8.load_in_8bit and int8.llm_int8_threshold == 6.0
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and not nf4.bnb_4bit_use_double_quant
    result = llmcompare.compare(["transformers:nf4", "echo"], max_new_tokens=2, repeats=1, warmup=0,
                                output=run_dir, fidelity=False)
    s = result.summary("transformers:nf4")
    assert s.status == "failed" and "runs on CUDA only; pass --device cuda" in s.error
    assert result.summary("echo").status == "ok"  # the failure is a row, the rest still runs


@pytest.mark.skipif(not have("torch", "transformers") or have("gptqmodel"), reason="needs transformers, no gptqmodel")
def test_transformers_gptq_without_gptqmodel_is_a_failed_row_that_says_what_to_install(run_dir):
    result = llmcompare.compare(["transformers:gptq", "echo"], max_new_tokens=2, repeats=1, warmup=0,
                                output=run_dir, fidelity=False)
    s = result.summary("transformers:gptq")
    assert s.status == "failed" and "transformers:gptq needs gptqmodel" in s.error
    assert "pip install --no-deps gptqmodel==7.6.0" in s.error and "\n" not in s.error
    assert result.summary("echo").status == "ok"


@pytest.mark.skipif(not have("torch", "transformers"), reason="transformers not installed")
def test_transformers_gptq_offline_machete_download_says_which_kernel_to_name(monkeypatch, tmp_path):
    """On Hopper gptqmodel's automatic kernel, Machete, downloads CUTLASS on first use (H200, 2026-11-22-h200-d):
    offline that is a one-line error naming a kernel that builds from what is installed."""
    import urllib.error

    import transformers

    from llmcompare.backend import BackendConfig
    from llmcompare.backends import hf_transformers
    from llmcompare.errors import UserError
    from llmcompare.models import resolve_model

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(hf_transformers, "_gptq_checkpoint", lambda config: str(tmp_path))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", offline)
    config = BackendConfig(model=resolve_model("synthetic:smollm2-135m"), variant="gptq", options={}, device="cuda")
    with pytest.raises(UserError, match=r"Machete, fetches CUTLASS.*-o transformers.gptq_backend=gptq_marlin"):
        hf_transformers.load_model(config)
