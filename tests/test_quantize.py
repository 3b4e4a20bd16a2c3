"""Quantization recipes (llmcompare/quantize.py), on the CPU: argv, cache keys, calibration, refusals,
and the whole convert-and-cache path through the fake converters in ``tests/fakes`` (exllamav2's
``convert_exl2`` and exllamav3's ``convert_model``, which mirror the real scripts' flags and their
habit of exiting with status 0 after an argument error). CUDA itself is never available here: the
tests that run a converter say so by replacing ``quantize.cuda_available``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from llmcompare.errors import UserError
from llmcompare.models import quantize, resolve_model, synthetic
from llmcompare.models.quantize import EXL2Recipe, EXL3Recipe, GPTQRecipe

pytest.importorskip("transformers")

FAKES = Path(__file__).parent / "fakes"
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=512, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
            tie_word_embeddings=False)


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("LLMCOMPARE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fakes(monkeypatch, tmp_path, cache):
    """The fake converters on the path of this process and of the converter subprocesses."""
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(FAKES), os.environ.get("PYTHONPATH")])))
    log = tmp_path / "converter.jsonl"
    monkeypatch.setenv("FAKE_EXL_CLI_LOG", str(log))
    yield log
    for name in [m for m in sys.modules if m.split(".")[0] in ("exllamav2", "exllamav3")]:
        del sys.modules[name]


@pytest.fixture
def source(tmp_path) -> Path:
    """An unquantized HF directory: config.json, a byte-level tokenizer, one small tensor."""
    import numpy
    from safetensors.numpy import save_file

    path = tmp_path / "fp16"
    path.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float16", **TINY}
    (path / "config.json").write_text(json.dumps(config))
    synthetic.build_tokenizer("smollm2-135m").save_pretrained(path)
    save_file({"lm_head.weight": numpy.zeros((4, 4), dtype=numpy.float16)}, str(path / "model.safetensors"))
    return path


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_each_recipe_builds_its_converters_argv(tmp_path):
    src, out, work = tmp_path / "src", tmp_path / "entry" / "model", tmp_path / "entry" / "work"
    assert EXL2Recipe(bits=3.5).argv(src, out, work) == [
        sys.executable, "-m", "exllamav2.conversion.convert_exl2", "-i", str(src), "-o", str(work),
        "-cf", str(out), "-b", "3.5", "-hb", "6", "-r", "32", "-l", "512", "-mr", "8", "-ml", "512"]
    exl3 = [sys.executable, "-m", "exllamav3.conversion.convert_model", "-i", str(src), "-o", str(out), "-w", str(work),
            "-b", "4", "-hb", "6", "-cr", "64", "-cc", "2048", "-d", "0"]
    assert EXL3Recipe().argv(src, out, work) == exl3
    work.mkdir(parents=True)
    (work / "args.json").write_text("{}")  # an interrupted job: resumed
    assert EXL3Recipe().argv(src, out, work) == exl3[:9] + ["-r"] + exl3[9:]
    assert GPTQRecipe().argv(src, out, work) == [
        sys.executable, "-m", "llmcompare.models.quantize", "gptq-run", "--source", str(src), "--out", str(out),
        "--calibration", str(tmp_path / "entry" / "calibration.json"), "--bits", "4", "--group-size", "128",
        "--desc-act", "false", "--sym", "true"]
    parsed = quantize._parser().parse_args(GPTQRecipe().argv(src, out, work)[3:])
    assert (parsed.bits, parsed.group_size, parsed.desc_act, parsed.sym) == (4, 128, "false", "true")


def test_the_cache_key_follows_the_source_the_recipe_and_the_tool(source, monkeypatch):
    monkeypatch.setattr(quantize, "tool_version", lambda recipe: "0.3.2")
    key = quantize.recipe_key(source, EXL2Recipe())
    assert key == quantize.recipe_key(source, EXL2Recipe())
    assert key["recipe"] == {"bits": 4.0, "head_bits": 6, "rows": 32, "length": 512, "measurement_rows": 8,
                             "measurement_length": 512, "measurement": ""}
    assert key["method"] == "exl2" and key["exllamav2"] == "0.3.2"
    assert quantize.recipe_key(source, EXL2Recipe(bits=5.0)) != key
    monkeypatch.setattr(quantize, "tool_version", lambda recipe: "0.3.3")
    assert quantize.recipe_key(source, EXL2Recipe()) != key
    monkeypatch.setattr(quantize, "tool_version", lambda recipe: "0.3.2")
    os.utime(source / "model.safetensors", ns=(1, 1))  # a changed source file
    assert quantize.recipe_key(source, EXL2Recipe()) != key


@pytest.mark.parametrize("recipe, install", [
    (GPTQRecipe(), "pip install --no-deps gptqmodel==7.6.0"),
    (EXL2Recipe(), "pip install 'llmcompare[exllamav2]'"),
    (EXL3Recipe(), "pip install 'llmcompare[exllamav3]'"),
])
def test_a_missing_tool_is_refused_in_one_line_with_the_install_command(source, cache, recipe, install):
    if quantize.importlib.util.find_spec(recipe.module) is not None:
        pytest.skip(f"{recipe.module} is installed here")
    with pytest.raises(UserError) as refused:
        quantize.quantize(source, recipe)
    message = str(refused.value)
    assert "\n" not in message and install in message and recipe.distribution in message
    assert not (cache / recipe.method).exists() or not any((cache / recipe.method).iterdir())


def test_no_cuda_is_refused_in_one_line_before_any_converter_runs(source, fakes):
    if quantize.cuda_available():
        pytest.skip("this machine has CUDA")
    for recipe in (EXL2Recipe(), EXL3Recipe()):
        with pytest.raises(UserError, match=r"runs on a CUDA GPU and torch sees none here; run it on a GPU machine"):
            quantize.quantize(source, recipe)
    assert calls(fakes) == []


@pytest.mark.engine
@pytest.mark.parametrize("recipe, quant_method", [(EXL2Recipe(bits=3.0), "exl2"), (EXL3Recipe(head_bits=8), "exl3")])
def test_a_recipe_runs_its_converter_once_and_caches_the_checkpoint(source, fakes, cache, monkeypatch, recipe,
                                                                    quant_method):
    monkeypatch.setattr(quantize, "cuda_available", lambda: True)
    out = quantize.quantize(source, recipe, log_dir=cache.parent / "logs")
    assert out.name == "model" and out.parent.parent == cache / quant_method
    assert quantize.checkpoint_format(out) == quant_method and any(out.glob("*.safetensors"))
    assert (out / "tokenizer.json").is_file()  # the converter copies the tokenizer
    entry = out.parent
    kept = ["measurement.json"] if quant_method == "exl2" else []  # EXL2's measurement, for reuse
    assert sorted(p.name for p in entry.iterdir()) == sorted(
        [".complete", "llmcompare-source.json", "model", "quantize.log", *kept])
    assert json.loads((entry / "llmcompare-source.json").read_text())["recipe"] == dataclasses.asdict(recipe)
    assert (entry / "quantize.log").read_text().startswith(f"$ {sys.executable} -m ")
    assert len(list((cache.parent / "logs").glob(f"{quant_method}-*.log"))) == 1
    assert quantize.quantize(source, recipe) == out  # cached: no second run
    assert len(calls(fakes)) == 1
    quantize.quantize(source, type(recipe)(bits=2.5))  # another recipe converts again
    assert len(calls(fakes)) == 2


@pytest.mark.engine
def test_an_exl2_measurement_is_kept_and_reused_keyed_by_its_content(source, fakes, cache, monkeypatch, tmp_path):
    """The measurement pass is most of a 7B EXL2 conversion: each conversion keeps its measurement.json,
    and ``measurement=`` (``--measurement``) hands one to the converter's ``-m``, skipping the pass. The
    key holds the file's content, so a copy elsewhere is the same recipe and an edited one is not."""
    monkeypatch.setattr(quantize, "cuda_available", lambda: True)
    first = quantize.quantize(source, EXL2Recipe())
    assert "Measuring quantization impact" in (first.parent / "quantize.log").read_text()
    copy = tmp_path / "elsewhere" / "measurement.json"
    copy.parent.mkdir()
    shutil.copyfile(first.parent / "measurement.json", copy)
    reused = quantize.quantize(source, EXL2Recipe(bits=5.0, measurement=str(copy)), log_dir=tmp_path / "logs")
    argv = calls(fakes)[-1]
    assert argv[argv.index("-m") + 1] == str(copy) and argv[argv.index("-b") + 1] == "5"
    log = (reused.parent / "quantize.log").read_text()
    assert "Reusing measurement" in log and "Measuring" not in log
    key = json.loads((reused.parent / "llmcompare-source.json").read_text())["recipe"]
    assert key["measurement"] == "sha256:" + hashlib.sha256(copy.read_bytes()).hexdigest()
    moved = tmp_path / "moved.json"
    shutil.copyfile(copy, moved)
    assert quantize.quantize(source, EXL2Recipe(bits=5.0, measurement=str(moved))) == reused  # same content
    assert len(calls(fakes)) == 2
    held = json.loads(moved.read_text())
    held["last_module_idx"] = 1
    moved.write_text(json.dumps(held))
    assert quantize.recipe_key(source, EXL2Recipe(bits=5.0, measurement=str(moved))) != \
        quantize.recipe_key(source, EXL2Recipe(bits=5.0, measurement=str(copy)))
    # the command line takes it too
    assert quantize.main(["exl2", "-m", str(source), "--bits", "5.0", "--measurement", str(copy)]) == 0
    assert len(calls(fakes)) == 2  # a cache hit


def test_a_bad_exl2_measurement_is_refused_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    with pytest.raises(UserError, match="cannot read the EXL2 measurement"):
        EXL2Recipe(measurement=str(missing))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"bits": 4}))
    with pytest.raises(UserError) as refused:
        EXL2Recipe(measurement=str(other))
    assert "is not an exllamav2 measurement.json" in str(refused.value) and "\n" not in str(refused.value)
    assert quantize.main(["exl2", "-m", "synthetic:smollm2-135m", "--measurement", str(missing)]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read the EXL2 measurement")


def test_a_converter_that_exits_0_without_a_checkpoint_is_a_failure(source, fakes, cache, monkeypatch):
    monkeypatch.setattr(quantize, "cuda_available", lambda: True)
    with pytest.raises(RuntimeError) as failed:
        quantize.quantize(source, EXL2Recipe(head_bits=7))  # exllamav2 has no 7-bit head option
    assert "no .safetensors written" in str(failed.value) and "is not a supported option" in str(failed.value)
    assert not [p for p in (cache / "exl2").iterdir() if p.is_dir() and not p.name.endswith(".work")]  # none cached


@pytest.mark.engine
@pytest.mark.parametrize("recipe, quant_method", [(EXL2Recipe(), "exl2"), (EXL3Recipe(), "exl3")])
def test_a_stopped_conversion_resumes_on_the_next_call(source, fakes, cache, monkeypatch, recipe, quant_method):
    """A 7B EXL2 conversion outlasts one 600-s GPU call: the converter's job survives a stop, and the
    same call resumes it; only the finished checkpoint enters the cache, and the scratch goes."""
    monkeypatch.setattr(quantize, "cuda_available", lambda: True)
    monkeypatch.setenv("FAKE_EXL_STOP", "1")
    with pytest.raises(RuntimeError) as stopped:
        quantize.quantize(source, recipe, log_dir=cache.parent / "logs")
    assert "exit status 124" in str(stopped.value) and "the same command resumes from" in str(stopped.value)
    scratch = [p for p in (cache / quant_method).iterdir() if p.is_dir()]
    assert len(scratch) == 1 and scratch[0].name.endswith(".work") and any((scratch[0] / "job").iterdir())
    monkeypatch.delenv("FAKE_EXL_STOP")
    out = quantize.quantize(source, recipe, log_dir=cache.parent / "logs")
    assert quantize.checkpoint_format(out) == quant_method
    assert "Resuming job" in (out.parent / "quantize.log").read_text()
    assert not scratch[0].exists() and sorted(p.name for p in (cache / quant_method).iterdir() if p.is_dir()) == [
        out.parent.name]
    second = calls(fakes)[1]
    assert "-nr" not in second and (quant_method == "exl2" or "-r" in second)  # exl2: -r is its row count


def test_gptq_calibration_is_the_default_prompts_cycled_into_rows(source, tmp_path):
    from transformers import AutoTokenizer

    from llmcompare.models.prompting import read_prompts

    tokenizer = AutoTokenizer.from_pretrained(source)
    prompts = [tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in read_prompts("default")]
    stream = [t for ids in prompts for t in ids]
    n = len(stream) + 50  # longer than all the prompts together: the rows wrap around
    rows = quantize.calibration_rows(tokenizer, rows=12, row_tokens=n)
    assert len(rows) == 12 and {len(r) for r in rows} == {n}
    assert rows[0] == stream + stream[:50]
    assert rows[1][:len(prompts[1])] == prompts[1] and rows[10][:len(prompts[0])] == prompts[0]  # 10 prompts
    entry = tmp_path / "entry"
    entry.mkdir()
    GPTQRecipe(rows=3, row_tokens=16).prepare(source, entry)
    written = json.loads((entry / "calibration.json").read_text())
    assert written["rows"] == quantize.calibration_rows(tokenizer, 3, 16)


def test_checkpoint_format_and_description_read_config_json(source, tmp_path):
    assert quantize.checkpoint_format(source) == "unquantized"
    assert quantize.describe_checkpoint(source) == "unquantized safetensors (run in fp16)"
    gptq = tmp_path / "gptq"
    gptq.mkdir()
    config = json.loads((source / "config.json").read_text())
    (gptq / "config.json").write_text(json.dumps(config))
    (gptq / "quantize_config.json").write_text("{}")  # an older GPTQ layout: the settings beside config.json
    assert quantize.checkpoint_format(gptq) == "gptq"
    config["quantization_config"] = {"quant_method": "GPTQ", "bits": 4, "group_size": 128, "desc_act": False,
                                     "sym": True, "checkpoint_format": "gptq_v2"}
    (gptq / "config.json").write_text(json.dumps(config))
    assert quantize.describe_checkpoint(gptq) == "gptq 4-bit group 128 desc_act=False sym=True format=gptq_v2"
    with pytest.raises(UserError, match="readable config.json"):
        quantize.checkpoint_format(tmp_path / "missing")


def test_the_fp16_source_of_a_synthetic_shape_is_built_once_in_fp16(cache, monkeypatch):
    monkeypatch.setitem(synthetic.SHAPES, "tiny-test", TINY)
    model = resolve_model("synthetic:tiny-test")
    built = quantize.fp16_source(model)
    config = json.loads((built / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float16" and config["hidden_size"] == 64
    assert (built / "tokenizer.json").is_file() and any(built.glob("*.safetensors"))
    key = json.loads((built / "llmcompare-source.json").read_text())
    assert key == {"synthetic": "tiny-test", "seed": synthetic.SEED, "dtype": "float16", "built_on": "cpu", "v": "1"}
    stamp = (built / ".complete").stat().st_mtime_ns
    assert quantize.fp16_source(model) == built and (built / ".complete").stat().st_mtime_ns == stamp


def test_the_fp16_source_of_a_directory_is_itself_unless_already_quantized(source, tmp_path):
    assert quantize.fp16_source(resolve_model(str(source))) == source
    exl2 = tmp_path / "exl2"
    exl2.mkdir()
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "exl2", "bits": 4.0}
    (exl2 / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="already a exl2 checkpoint"):
        quantize.fp16_source(resolve_model(str(exl2)))
    with pytest.raises(UserError, match="local model directory"):
        quantize.fp16_source(resolve_model("TheBloke/Llama-2-7B-fp16"))


def test_the_command_line_prints_the_checkpoint(source, fakes, cache, monkeypatch, capsys):
    monkeypatch.setattr(quantize, "cuda_available", lambda: True)
    assert quantize.main(["exl3", "-m", str(source), "--bits", "3.25", "--cal-rows", "8"]) == 0
    out = Path(capsys.readouterr().out.strip())
    assert quantize.checkpoint_format(out) == "exl3"
    argv = calls(fakes)[0]
    assert argv[argv.index("-b") + 1] == "3.25" and argv[argv.index("-cr") + 1] == "8"
    monkeypatch.setattr(quantize, "cuda_available", lambda: False)
    assert quantize.main(["exl2", "-m", str(source)]) == 2
    assert "runs on a CUDA GPU" in capsys.readouterr().err


def test_cached_answers_from_the_cache_without_converting(source, fakes, cache, monkeypatch, capsys):
    """``--cached``: what a study step asks before it runs a conversion."""
    monkeypatch.setattr(quantize, "cuda_available", lambda: True)
    args = ["exl3", "-m", str(source), "--cal-rows", "8"]
    assert quantize.main([*args, "--cached"]) == 1
    assert "not cached" in capsys.readouterr().out and calls(fakes) == []
    assert quantize.main(args) == 0
    made = capsys.readouterr().out.strip()
    assert quantize.main([*args, "--cached"]) == 0
    assert capsys.readouterr().out.strip() == made and len(calls(fakes)) == 1
    assert quantize.main(["exl3", "-m", str(source), "--cal-rows", "9", "--cached"]) == 1  # another recipe
    assert quantize.cached_checkpoint(resolve_model("synthetic:llama-2-7b"), EXL3Recipe()) is None  # no source yet
