"""The GGUF recipe (llmcompare/quantize.py GGUFRecipe, llmcompare/hf_to_gguf.py) and the llama.cpp
variants that run it, on ``synthetic:smollm2-135m`` built on the CPU: llama.cpp on the f32 file gives
transformers fp32's greedy ids and log-probabilities on the same weights (which checks the Q/K row
order, the hyper-parameters and the vocabulary), f16 and q4_0 load and give exactly N tokens, a
second request converts nothing, and what cannot run is refused in one line.

One cache (fp16 source and GGUF files) is shared by the whole module, so each file is made once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmcompare.backend import BackendConfig
from llmcompare.backends.llamacpp import LlamaCppBackend, gguf_file
from llmcompare.backends.served import LlamaCppServer
from llmcompare.errors import UserError
from llmcompare.models import ResolvedModel, hf_to_gguf, quantize, resolve_model, synthetic

pytestmark = pytest.mark.engine  # the engine tier: whole runs, live servers or real engines

for module in ("llama_cpp", "gguf", "transformers", "torch"):
    pytest.importorskip(module)

SHAPE = "smollm2-135m"
NEW_TOKENS = 16
PROMPTS = [[1, 500, 7000, 12345], [74, 71, 78, 78, 81, 223, 89, 81, 84, 78, 70], list(range(100, 130, 3))]
"""Token-id prompts: one with bos, one the bytes of "hello world", one arbitrary ids."""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("gguf") / "cache"
        mp.setenv("LLMCOMPARE_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def model(cache) -> ResolvedModel:
    return resolve_model(f"synthetic:{SHAPE}")


@pytest.fixture(scope="module")
def source(model) -> Path:
    return quantize.fp16_source(model)


def backend(model: ResolvedModel, variant: str | None, logs: Path | None = None) -> LlamaCppBackend:
    b = LlamaCppBackend(BackendConfig(model=model, variant=variant, options={"n_threads": 2},
                                      logs_dir=str(logs) if logs else None))
    b.load()
    return b


def transformers_greedy(source: Path, prompts: list[list[int]], n: int) -> tuple[list[list[int]], list[list[float]]]:
    """Greedy ids and their log-probabilities from transformers fp32 on the same (fp16-stored) weights."""
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32).eval()
    ids_out, logps_out = [], []
    with torch.no_grad():
        for prompt in prompts:
            out = hf(torch.tensor([prompt]), use_cache=True)
            ids, logps = [], []
            for _ in range(n):
                logp = torch.log_softmax(out.logits[0, -1].double(), dim=-1)
                token = int(logp.argmax())
                ids.append(token)
                logps.append(float(logp[token]))
                out = hf(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
            ids_out.append(ids)
            logps_out.append(logps)
    return ids_out, logps_out


def test_llamacpp_on_the_f32_gguf_gives_transformers_fp32_greedy_ids(model, source):
    b = backend(model, "f32")
    try:
        runs = [b.generate(p, NEW_TOKENS) for p in PROMPTS]
        scores = [b.score(p + r.token_ids, start=len(p)).logprobs for p, r in zip(PROMPTS, runs)]
        texts = ["hello world", "Déjà vu: 3 + 4 = 7!\n\tdone", "  two  spaces,  'll it's 1234567"]
        counts = [b.count_tokens(t) for t in texts]
    finally:
        b.unload()
    expected, expected_logps = transformers_greedy(source, PROMPTS, NEW_TOKENS)
    assert [r.token_ids for r in runs] == expected
    # fp32 weights on both sides (llama.cpp keeps its KV cache in f16): 3e-4 apart at most when measured.
    # Without the Q/K row reordering they were 0.06 apart, and two of the three id sequences differed.
    worst = max(abs(a - e) for got, want in zip(scores, expected_logps) for a, e in zip(got, want))
    assert worst < 5e-3, worst
    tokenizer = model.tokenizer()
    assert counts == [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def test_the_gguf_holds_llamas_hyper_parameters_and_the_byte_level_vocabulary(source):
    import gguf

    path = quantize.quantize(source, quantize.GGUFRecipe(type="f32"))
    reader = gguf.GGUFReader(str(path))

    def value(key):
        field = reader.fields[key]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            return [field.contents(i) for i in range(len(field.data))]
        return field.contents()

    shape = synthetic.SHAPES[SHAPE]
    assert value("general.architecture") == "llama"
    assert value("llama.context_length") == shape["max_position_embeddings"]
    assert value("llama.embedding_length") == shape["hidden_size"]
    assert value("llama.block_count") == shape["num_hidden_layers"]
    assert value("llama.attention.head_count_kv") == shape["num_key_value_heads"]
    assert value("llama.rope.freq_base") == shape["rope_theta"]
    assert value("llama.rope.dimension_count") == shape["hidden_size"] // shape["num_attention_heads"]
    assert value("general.file_type") == gguf.LlamaFileType.ALL_F32
    assert value("tokenizer.ggml.model") == "gpt2" and value("tokenizer.ggml.pre") == "gpt-2"
    assert value("tokenizer.ggml.merges") == []  # present and empty: llama.cpp needs the key
    tokens = value("tokenizer.ggml.tokens")
    assert len(tokens) == shape["vocab_size"] and tokens[:3] == list(synthetic.SPECIAL)
    assert (value("tokenizer.ggml.bos_token_id"), value("tokenizer.ggml.eos_token_id")) == (1, 2)
    assert value("tokenizer.ggml.add_bos_token") is False  # the HF tokenizer adds none either
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names and "token_embd.weight" in names  # tied embeddings
    assert {t.tensor_type.name for t in reader.tensors if t.name.endswith("_norm.weight")} == {"F32"}


def test_f16_and_q4_0_load_give_exactly_n_tokens_and_q4_0_is_a_third_of_f16(model, tmp_path):
    params = synthetic.param_count(SHAPE)
    sizes, types = {}, {}
    for variant in ("f16", "q4_0"):
        b = backend(model, variant, logs=tmp_path / "logs")
        try:
            out = b.generate(PROMPTS[0], 8)
            assert len(out.token_ids) == 8 and len(out.token_times) == 8 and out.finish_reason == "length"
            facts = b.engine_version()
        finally:
            b.unload()
        sizes[variant] = Path(facts["llamacpp_gguf"]).stat().st_size
        types[variant] = facts["llamacpp_gguf_type"]
        assert facts["llamacpp_gguf_origin"].startswith(f"llmcompare.models.quantize GGUFRecipe(type={variant!r})")
    assert 1.95 < sizes["f16"] / params < 2.05  # 2 bytes a parameter (norms in f32 are few)
    # Q4_0 is 4.5 bits a weight; llama.cpp gives the tied embedding (the output matrix) Q8_0
    assert 0.5625 < sizes["q4_0"] / params < 0.75 and sizes["q4_0"] < 0.4 * sizes["f16"]
    assert types["f16"] == "MOSTLY_F16: 211 F16, 61 F32"
    assert types["q4_0"].startswith("MOSTLY_Q4_0: 210 Q4_0, 61 F32, 1 Q8_0")
    logs = [p.read_text() for p in (tmp_path / "logs").glob("gguf-*.log")]
    assert len(logs) == 2  # the conversions' logs, in the run's logs
    # q4_0 came from the f16 file cached just before, not from an f16 file of its own
    assert sum("quantizing the cached f16 file" in text and "--from-f16" in text for text in logs) == 1


def test_a_second_request_converts_nothing(model, source, monkeypatch, capsys, tmp_path):
    first = quantize.quantize(source, quantize.GGUFRecipe(type="q4_0"))
    stamp = (first.parent.parent / ".complete").stat().st_mtime_ns
    # the backend's lookup (a child process): the same file, and no conversion log in the run's logs
    chosen = gguf_file(BackendConfig(model=model, variant="q4_0", logs_dir=str(tmp_path / "logs")), "llamacpp")
    assert chosen.path == str(first) and chosen.origin.endswith(f" of {source}")
    assert not list(tmp_path.glob("logs/gguf-*.log"))

    def no_converter(*args, **kwargs):
        raise AssertionError(f"a converter ran: {args}")

    monkeypatch.setattr(quantize.subprocess, "run", no_converter)
    assert quantize.quantize(source, quantize.GGUFRecipe(type="q4_0")) == first
    assert quantize.main(["gguf", "-m", f"synthetic:{SHAPE}", "--type", "q4_0"]) == 0
    assert capsys.readouterr().out.strip() == str(first)
    assert quantize.main(["gguf", "-m", f"synthetic:{SHAPE}", "--type", "q4_0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"checkpoint": str(first), "source": str(source)}
    assert (first.parent.parent / ".complete").stat().st_mtime_ns == stamp
    assert first.name == "model.gguf" and sorted(p.name for p in first.parent.iterdir()) == ["model.gguf"]
    key = json.loads((first.parent.parent / "llmcompare-source.json").read_text())
    assert key["recipe"] == {"type": "q4_0"} and key["method"] == "gguf"
    assert {"gguf", "llama_cpp_python"} <= set(key) and key["source"] == quantize.fingerprint(source)


def test_a_llamacpp_worker_never_imports_torch(model, source, cache):
    """The GGUF is chosen in a child process, so the backend's own process stays free of torch and what it
    loads (a CUDA build of llama.cpp crashed beside it on the H200 of 2026-11-23): here a whole request,
    in a fresh interpreter."""
    script = (f"import sys, json\nfrom llmcompare.backend import BackendConfig\n"
              f"from llmcompare.backends.llamacpp import LlamaCppBackend\nfrom llmcompare.models import resolve_model\n"
              f"b = LlamaCppBackend(BackendConfig(model=resolve_model('synthetic:{SHAPE}'), variant='f16',"
              f" options={{'n_threads': 2}}))\nb.load()\nout = b.generate({PROMPTS[0]}, 4)\nb.unload()\n"
              f"print(json.dumps([len(out.token_ids), 'torch' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [4, False]


def test_a_model_that_cannot_be_converted_is_a_one_line_error_from_the_child(tmp_path):
    hub = ResolvedModel("HuggingFaceTB/SmolLM2-135M", "hub", "SmolLM2-135M", None)
    with pytest.raises(UserError) as refused:
        gguf_file(BackendConfig(model=hub, variant="f16"), "llamacpp")
    assert str(refused.value).startswith("quantizing needs a local model directory") and "\n" not in str(refused.value)


def test_a_variant_is_needed_exactly_when_the_model_is_not_a_gguf_file(model, tmp_path):
    file = tmp_path / "SmolLM2.Q4_1.gguf"
    held = ResolvedModel(str(file), "gguf", "SmolLM2", str(file), quantization="Q4_1")
    for cls, name in ((LlamaCppBackend, "llamacpp"), (LlamaCppServer, "llamacpp-server")):
        with pytest.raises(UserError) as needless:
            cls(BackendConfig(model=held, variant="q4_0"))
        assert str(needless.value).startswith("the model is already a GGUF file (Q4_1); drop the variant")
        with pytest.raises(UserError) as missing:
            cls(BackendConfig(model=model, variant=None))
        message = str(missing.value)
        assert f"{name}:f32, {name}:f16, {name}:q8_0, {name}:q4_0" in message and "synthetic" in message
        assert "\n" not in message + str(needless.value)
    assert gguf_file(BackendConfig(model=held), "llamacpp").path == str(file)  # as before: its own file
    with pytest.raises(UserError, match="is not one of f32, f16, q8_0, q4_0"):
        quantize.GGUFRecipe(type="q5_k")


def test_another_architecture_is_refused_in_one_line_before_any_conversion(tmp_path, cache, capsys):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(UserError) as refused:
        quantize.quantize(gpt2, quantize.GGUFRecipe(), log_dir=tmp_path / "logs")
    message = str(refused.value)
    assert "\n" not in message and "supports the Llama architecture (LlamaForCausalLM) only" in message
    assert "GPT2LMHeadModel" in message and not list((tmp_path / "logs").glob("*.log"))
    assert quantize.main(["gguf", "-m", str(gpt2)]) == 2
    assert "supports the Llama architecture" in capsys.readouterr().err


def test_rope_rows_go_from_rotate_half_to_adjacent_pairs():
    import numpy as np

    # one head of 4 rows: HF rotates rows (0, 2) and (1, 3); llama.cpp rotates adjacent rows
    weight = np.arange(4 * 2 * 3).reshape(8, 3)  # two heads
    out = hf_to_gguf.rope_interleave(weight, heads=2)
    assert [int(r[0] // 3) for r in out] == [0, 2, 1, 3, 4, 6, 5, 7]
