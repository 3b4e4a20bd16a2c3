"""The roofline: the floor against plan's own figures, the per-GPU bandwidth cache, the environment
entry, and the "% of floor" column (present only when the environment block holds a bandwidth)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from llmcompare.analysis.metrics import summarize
from llmcompare.config.spec import BackendRequest, RunSpec
from llmcompare.hardware import environment, gpus, roofline
from llmcompare.hardware.plan import load_model_config, plan
from llmcompare.plugins import get_registry
from llmcompare.records import BackendRecord, RequestRecord
from llmcompare.report.columns import FLOOR_PCT, latency_columns, summary_notes
from llmcompare.scenarios.latency import LatencyConfig

H200 = {"gpu": "NVIDIA H200", "driver": "580.159.04"}
BW = 4263.8e9  # an H200's measured copy bandwidth (benchmarks/results/2026-11-22-h200)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOMPARE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(roofline.OPT_OUT_ENV, raising=False)
    return tmp_path / "cache" / roofline.CACHE_FILE


@pytest.fixture(scope="module")
def llama2():
    return load_model_config("synthetic:llama-2-7b")


# ---- the floor -----------------------------------------------------------------------------------
def test_floor_is_plans_floor_at_the_measured_bandwidth_and_the_mean_decode_context(llama2):
    assert roofline.mean_decode_context(256, 256) == 384
    f = roofline.floor(llama2, "fp16", BW, 384)
    p = plan(llama2, gpus.get_accelerator("h200").with_bandwidth(BW / 1e9), 384)
    assert f.weight_bytes == p.weight_bytes == 13_476_831_232
    assert f.kv_bytes == 2 * 32 * 32 * 128 * 2 * 384 == p.kv_bytes_at_context
    assert f.ms_per_token == pytest.approx(p.floor_ms_per_token)
    assert round(f.ms_per_token, 3) == 3.208  # the floor docs/results.md gives the 7B shape on that H200
    assert f.ms_per_token == pytest.approx((f.weight_bytes + f.kv_bytes) / BW * 1000)


def declared(name: str) -> dict[str, str]:
    """A backend's own weight types per variant (``BackendSpec.weight_dtypes``)."""
    return dict(get_registry().get(name).weight_dtypes)


def test_quantized_variants_count_their_weight_bytes_and_keep_a_16_bit_kv_cache(llama2):
    fp16, int8, nf4 = (roofline.floor(llama2, roofline.weight_dtype(v, None, declared("transformers")), BW, 384)
                       for v in ("fp16", "int8", "nf4"))
    assert int8.weight_bytes == fp16.weight_bytes // 2
    assert nf4.weight_bytes == fp16.weight_bytes // 4
    assert int8.kv_bytes == nf4.kv_bytes == fp16.kv_bytes and int8.kv_dtype == "fp16"
    assert nf4.ms_per_token < int8.ms_per_token < fp16.ms_per_token


def test_weight_type_of_each_variant_is_the_backends_own_declaration():
    ct2, hf, gguf = declared("ctranslate2"), declared("transformers"), declared("llamacpp")
    assert [roofline.weight_dtype(v, None, ct2) for v in ("float16", "bfloat16", "float32", "int8_float16", "int8")] == [
        "fp16", "bf16", "fp32", "int8", "int8"]
    assert [roofline.weight_dtype(v, None, hf) for v in ("fp16", "bf16", "fp32", "int8", "nf4", "gptq")] == [
        "fp16", "bf16", "fp32", "int8", "int4", "int4"]
    assert [roofline.weight_dtype(v, None, gguf) for v in ("f32", "f16", "q8_0", "q4_0")] == ["fp32", "fp16", "int8", "int4"]
    assert declared("exllamav2")["exl2"] == declared("exllamav3")["exl3"] == "int4"
    assert roofline.weight_dtype("awq-marlin", None, hf) is None  # unknown: no floor rather than a guess
    assert roofline.weight_dtype("fp16") is None  # a variant no backend declared
    assert roofline.weight_dtype(None, "Q4_1") == "int4"
    assert roofline.weight_dtype(None, "Q8_0") == "int8"
    assert roofline.weight_dtype(None, "F16") == "fp16"
    assert roofline.weight_dtype(None, None) is None


# ---- the cache -----------------------------------------------------------------------------------
def test_cache_round_trip_is_keyed_by_gpu_name_and_driver(cache):
    assert roofline.lookup(**H200) is None
    roofline.store({**H200, "bytes_per_s": BW, "method": "copy"})
    roofline.store({"gpu": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "bytes_per_s": 3.0e12})
    assert roofline.lookup(**H200)["bytes_per_s"] == BW
    assert roofline.lookup("NVIDIA H200", "590.1") is None  # another driver: measured again
    assert len(json.loads(cache.read_text())["entries"]) == 2
    roofline.store({**H200, "bytes_per_s": 4.1e12})  # --force replaces that GPU's entry only
    assert roofline.lookup(**H200)["bytes_per_s"] == 4.1e12
    assert len(roofline.read_cache()) == 2


def test_an_unreadable_cache_counts_as_empty(cache):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert roofline.read_cache() == {}
    roofline.store({**H200, "bytes_per_s": BW})
    assert roofline.lookup(**H200)["bytes_per_s"] == BW


def test_cuda_visible_devices_maps_the_cuda_index_to_nvmls(monkeypatch):
    monkeypatch.setattr(roofline, "gpu_info", lambda: [{"index": 0, "name": "A", "driver": "1"},
                                                          {"index": 3, "name": "B", "driver": "1"}])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,0")
    assert roofline.gpu_identity(0) == {"gpu": "B", "driver": "1"}
    assert roofline.gpu_identity(1) == {"gpu": "A", "driver": "1"}
    assert roofline.gpu_identity(2) is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert roofline.gpu_identity(0)["gpu"] == "A"
    assert roofline.device_index("cuda:3") == 3 and roofline.device_index("cuda") == 0


# ---- the environment entry -----------------------------------------------------------------------
def test_environment_entry_by_device(cache, monkeypatch):
    monkeypatch.setattr(roofline, "gpu_identity", lambda index=0: dict(H200))
    children = []
    monkeypatch.setattr(roofline, "_measure_in_child",
                        lambda device, python: children.append(device) or {**H200, "bytes_per_s": BW, "source": "measured"})
    assert roofline.for_environment("cpu") is None
    assert roofline.for_environment(None) is None  # device unknown and nothing cached: never measures
    assert roofline.for_environment("cuda")["source"] == "measured"
    assert children == ["cuda"]
    roofline.store({**H200, "bytes_per_s": BW})
    assert roofline.for_environment("cuda:0") == {**H200, "bytes_per_s": BW, "source": "cache"}
    assert roofline.for_environment(None)["source"] == "cache"
    assert children == ["cuda"]  # a cached figure is never measured again
    monkeypatch.setenv(roofline.OPT_OUT_ENV, "1")
    assert roofline.for_environment("cuda") == {"skipped": "LLMCOMPARE_NO_BANDWIDTH=1"}


def test_capture_records_the_bandwidth_and_the_floors_inputs_only_for_a_cuda_run(cache, monkeypatch):
    monkeypatch.setattr(roofline, "gpu_identity", lambda index=0: dict(H200))
    roofline.store({**H200, "bytes_per_s": BW})
    env = environment.capture([], model={"ref": "synthetic:llama-2-7b"}, device="cuda")
    assert env["bandwidth"]["bytes_per_s"] == BW
    assert env["model_config"]["parameters"] == 6_738_415_616 and env["model_config"]["num_key_value_heads"] == 32
    cpu = environment.capture([], model={"ref": "synthetic:llama-2-7b"}, device="cpu")
    assert "bandwidth" not in cpu and "model_config" not in cpu


def test_measuring_without_a_cuda_device_is_an_error_entry_not_a_crash(cache):
    entry = roofline._measure_in_child("cuda", None)  # this machine: torch without CUDA, or no torch
    assert "error" in entry and "python -m llmcompare.hardware.roofline" in entry["error"]
    assert not cache.exists()


def test_command_line_prints_the_cached_figure(cache, monkeypatch, capsys):
    monkeypatch.setattr(roofline, "gpu_identity", lambda index=0: dict(H200))
    roofline.store({**H200, "bytes_per_s": BW, "method": "copy"})
    assert roofline.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {**H200, "bytes_per_s": BW, "method": "copy", "source": "cache"}


# ---- the report column ---------------------------------------------------------------------------
def _summary(label, variant, device, tpot_s=0.0046, n=256):
    times = [0.015 + i * tpot_s for i in range(n)]
    reqs = [RequestRecord(label, f"p{i}", 0, False, 256, n, n, times[0], times[-1], token_times_s=times,
                          token_ids=list(range(n)), stage="latency") for i in range(3)]
    backend = BackendRecord(label, label.split(":")[0], variant, "ok", device=device)
    return summarize(label, reqs, [backend], "latency"), reqs


def _result(environment_block, *rows):
    """Rows of (label, variant, device); a label whose first part is no backend runs vllm."""
    built = [_summary(*row) for row in rows]
    names = [row[0].split(":")[0] for row in rows]
    spec = RunSpec(backends=tuple(BackendRequest(row[0], name if name in get_registry().backends else "vllm", row[1])
                                  for row, name in zip(rows, names)),
                   scenarios=(LatencyConfig(max_new_tokens=256, input_tokens=(256,)),), model="synthetic:llama-2-7b")
    return SimpleNamespace(environment=environment_block, spec=spec, summaries=[s for s, _ in built],
                           requests=[r for _, rs in built for r in rs])


def annotate(result) -> None:
    """What the batch-1 scenario does with its summaries."""
    roofline.annotate(result.summaries, result.spec, result.environment, result.requests, 256)


def test_percent_of_floor_column_when_the_environment_has_a_bandwidth():
    result = _result({"bandwidth": {"bytes_per_s": BW, "source": "cache"}},
                     ("vllm:fp16", "fp16", "cuda"), ("transformers:int8", "int8", "cuda"), ("llamacpp", None, "cuda"))
    annotate(result)
    vllm, int8, gguf = result.summaries
    assert vllm.info["roofline"]["context_tokens"] == 384
    assert vllm.info["roofline"]["percent_of_floor"] == pytest.approx(100 * 3.2082 / vllm.tpot_ms["p50"], rel=1e-3)
    assert FLOOR_PCT.cell(vllm) == f"{vllm.info['roofline']['percent_of_floor']:.1f}%"
    assert int8.info["roofline"]["weight_bytes"] == 13_476_831_232 // 2
    assert "error" in gguf.info["roofline"] and FLOOR_PCT.cell(gguf) == "–"
    cols = [c.key for c in latency_columns(result.summaries)]
    assert cols.index("floor_pct") == cols.index("tpot_p90_ms") + 1
    notes = [text for _, text in summary_notes(result.summaries, 256)]
    assert any("3.208 ms/token" in t and "4,263.8 GB/s" in t for t in notes)
    annotate(result)  # idempotent
    assert vllm.info["roofline"]["percent_of_floor"] == pytest.approx(100 * 3.2082 / vllm.tpot_ms["p50"], rel=1e-3)


def test_a_report_rebuilt_without_the_model_files_uses_the_recorded_shape(llama2):
    gone = _result({"bandwidth": {"bytes_per_s": BW}}, ("ctranslate2:float16", "float16", "cuda"))
    gone.spec = dataclasses.replace(gone.spec, model="/nonexistent/l7b-hf")
    annotate(gone)
    assert "model config not readable" in gone.summaries[0].info["roofline"]["error"]
    gone.environment["model_config"] = roofline.model_config_record("synthetic:llama-2-7b")
    annotate(gone)
    assert round(gone.summaries[0].info["roofline"]["ms_per_token"], 3) == 3.208


def test_no_column_without_a_bandwidth_and_a_dash_for_cpu_rows():
    bare = _result({}, ("vllm:fp16", "fp16", "cuda"))
    annotate(bare)
    assert "roofline" not in bare.summaries[0].info
    assert "floor_pct" not in [c.key for c in latency_columns(bare.summaries)]
    skipped = _result({"bandwidth": {"skipped": "LLMCOMPARE_NO_BANDWIDTH=1"}}, ("vllm:fp16", "fp16", "cuda"))
    annotate(skipped)
    assert "floor_pct" not in [c.key for c in latency_columns(skipped.summaries)]
    mixed = _result({"bandwidth": {"bytes_per_s": BW}}, ("vllm:fp16", "fp16", "cuda"), ("ctranslate2:int8", "int8", "cpu"))
    annotate(mixed)
    assert FLOOR_PCT.cell(mixed.summaries[1]) == "–"


def test_a_tensor_parallel_run_gets_the_floor_of_its_gpus_each_reading_its_share(llama2):
    result = _result({"bandwidth": {"bytes_per_s": BW, "source": "cache"}},
                     ("tp1", "fp16", "cuda"), ("tp2", "fp16", "cuda"))
    tp2 = result.spec.backends[1]
    result.spec = dataclasses.replace(result.spec, backends=(
        result.spec.backends[0], dataclasses.replace(tp2, options={"tensor_parallel_size": 2})))
    annotate(result)
    one, two = (s.info["roofline"] for s in result.summaries)
    assert one["n_gpus"] == 1 and two["n_gpus"] == 2
    assert two["weight_bytes"] == one["weight_bytes"]  # the model's bytes; each GPU reads half of them
    expected = plan(llama2, gpus.get_accelerator("h200").with_bandwidth(BW / 1e9), 384, n_gpus=2).floor_ms_per_token
    assert two["ms_per_token"] == pytest.approx(expected) == pytest.approx(one["ms_per_token"] / 2, rel=1e-3)
    assert two["percent_of_floor"] == pytest.approx(one["percent_of_floor"] / 2, rel=1e-3)  # same TPOT, half the floor
    notes = [text for _, text in summary_notes(result.summaries, 256)]
    assert any(t.startswith("tp2") and "/ 2 GPUs /" in t for t in notes)
    assert not any(t.startswith("tp1") and "GPUs /" in t for t in notes)
