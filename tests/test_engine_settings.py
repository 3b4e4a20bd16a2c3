"""docs/engine-settings.md names each GPU engine's own benchmark command, and the settings it says
llmcompare passes are the adapters' (read from their source, so the page cannot drift from the code)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "engine-settings.md").read_text(encoding="utf-8")


def source(name: str) -> str:
    return (ROOT / "llmcompare" / "backends" / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("command", ["vllm bench latency", "vllm bench serve", "llama-bench", "test_inference.py",
                                     "inference_benchmark.py", "text-generation-benchmark", "sglang.bench_one_batch",
                                     "sglang.bench_serving", "generate_tokens", "cache_implementation=\"static\""])
def test_each_makers_command_is_named(command):
    assert command in DOC


@pytest.mark.parametrize("doc, code, where", [
    ("enable_prefix_caching=False", '"enable_prefix_caching": False', "vllm.py"),
    ("min_tokens=N, ignore_eos=True", "min_tokens=0 if stop_at_eos else max_new_tokens", "vllm.py"),
    ("--no-enable-prefix-caching", '"--enable-prefix-caching" if self.config.prefix_cache else "--no-enable-prefix-caching"',
     "served.py"),
    ("--generation-config vllm", '"--generation-config", "vllm"', "served.py"),
    ("--interrupt_requests False --cache False", '"--interrupt_requests", "False", "--cache", "False"', "served.py"),
    ("n_ctx=2048", 'n_ctx=opts.pop("n_ctx", 2048)', "llamacpp.py"),
    ("repeat_penalty=1.0, reset=True", "repeat_penalty=1.0, reset=True", "llamacpp.py"),
    ("llm_int8_threshold=6.0", "llm_int8_threshold=6.0 if int8_threshold is None", "hf_transformers.py"),
    ("bnb_4bit_use_double_quant=False", "bnb_4bit_use_double_quant=False", "hf_transformers.py"),
    ("sampling_topk=1", "sampling_topk=1", "ctranslate2.py"),
    ("ExLlamaV2Sampler.Settings.greedy()", "gen_settings=ExLlamaV2Sampler.Settings.greedy()", "exllamav2.py"),
    ("--disable-radix-cache", '[] if self.config.prefix_cache else ["--disable-radix-cache"]', "served.py"),
    ("PREFIX_CACHING=0", '"PREFIX_CACHING": "1" if self.config.prefix_cache else "0"', "served.py"),
])
def test_the_settings_the_page_states_are_the_adapters(doc, code, where):
    assert doc in DOC, doc
    assert code in source(where), (code, where)


def test_the_bitsandbytes_settings_of_the_makers_benchmark_are_options():
    pytest.importorskip("transformers")
    from llmcompare.backends.hf_transformers import bnb_config
    from llmcompare.plugins import get_registry

    assert bnb_config("int8").llm_int8_threshold == 6.0
    assert bnb_config("int8", int8_threshold=0.0).llm_int8_threshold == 0.0
    import torch

    assert bnb_config("nf4").bnb_4bit_compute_dtype == torch.float16
    assert bnb_config("nf4", nf4_compute="bf16").bnb_4bit_compute_dtype == torch.bfloat16
    spec = get_registry().get("transformers")
    assert spec.validate_options({"int8_threshold": "0"})["int8_threshold"] == 0.0
