"""Prompt files, exact-length prompts, model resolution and the conversion cache."""

import json

import pytest
from conftest import needs_model

from llmcompare import models
from llmcompare.errors import ModelNotFound, PromptFileError, UserError
from llmcompare.models import prompting


def test_builtin_default_set():
    ps = prompting.read_prompts(None)
    assert len(ps) == 10 and len({p.id for p in ps}) == 10
    assert {p.category for p in ps} == {"coding", "writing", "arithmetic"}


def test_jsonl_yaml_txt(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "x", "text": "hello"}\n\n"bare string"\n{"prompt": "alt key"}\n')
    assert [(p.id, p.text) for p in prompting.read_prompts(str(tmp_path / "a.jsonl"))] == [
        ("x", "hello"), ("p3", "bare string"), ("p4", "alt key")]
    (tmp_path / "b.yaml").write_text("prompts:\n  - one\n  - {id: two, text: second, category: c}\n")
    ps = prompting.read_prompts(str(tmp_path / "b.yaml"))
    assert [(p.id, p.text, p.category) for p in ps] == [("p1", "one", None), ("two", "second", "c")]
    (tmp_path / "c.txt").write_text("# comment\nfirst\n\nsecond\n")
    assert [p.text for p in prompting.read_prompts(str(tmp_path / "c.txt"))] == ["first", "second"]


def test_prompt_file_errors(tmp_path):
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(PromptFileError, match="appears twice"):
        prompting.read_prompts(str(tmp_path / "dup.jsonl"))
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(PromptFileError, match="no prompts"):
        prompting.read_prompts(str(tmp_path / "empty.txt"))
    with pytest.raises(UserError, match="did you mean 'default'"):
        prompting.read_prompts("defualt")


@needs_model
def test_tokenization_and_exact_length():
    tok = models.resolve_model(None).tokenizer()
    texts = prompting.read_prompts(None)
    chat = prompting.tokenize(texts, tok, chat=True)
    raw = prompting.tokenize(texts, tok, chat=False)
    assert all(len(c.token_ids) > len(r.token_ids) for c, r in zip(chat, raw))  # template adds the turn
    exact = prompting.exact_length(texts, tok, 256)
    assert all(len(p.token_ids) == 256 for p in exact)
    assert exact[0].id == "code-fizzbuzz@256t"
    # the ids are the prompt's own text tokens, repeated
    base = tok(texts[0].text, add_special_tokens=False)["input_ids"]
    assert list(exact[0].token_ids[: len(base)]) == base


def test_resolve_model_kinds(tmp_path):
    gguf = tmp_path / "m.Q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    m = models.resolve_model(str(gguf))
    assert (m.kind, m.quantization, m.formats) == ("gguf", "Q8_0", ("gguf", "hf"))
    hf = tmp_path / "hfdir"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert models.resolve_model(str(hf)).kind == "hf"
    assert models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    syn = models.resolve_model("synthetic:llama-2-7b")
    assert syn.kind == "synthetic" and syn.identity()["parameters"] == 6_738_415_616
    assert models.resolve_model("synthetic:llama-2-13b").identity()["parameters"] == 13_015_864_320
    with pytest.raises(ModelNotFound, match="not found"):
        models.resolve_model(str(tmp_path / "missing.gguf"))
    assert models.resolve_model(str(tmp_path)).path == str(gguf.resolve())  # a folder with one GGUF
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFound, match="has no config.json"):
        models.resolve_model(str(empty))
    notgguf = tmp_path / "weights.bin"
    notgguf.write_bytes(b"x")
    with pytest.raises(ModelNotFound, match="not a .gguf"):
        models.resolve_model(str(notgguf))
    with pytest.raises(UserError, match="needs a GGUF"):
        syn.gguf_path()


def test_conversion_cache_is_keyed_by_source(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOMPARE_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "model.gguf"
    src.write_bytes(b"v1")
    builds = []

    def build(out):
        builds.append(out)
        (out / "converted.txt").write_text(src.read_text())

    key = lambda: {"src": models.fingerprint(src)}  # noqa: E731
    a = models.cached_build("test", key(), build)
    assert models.cached_build("test", key(), build) == a and len(builds) == 1  # cached
    src.write_bytes(b"version two")  # the source changed: converted again
    b = models.cached_build("test", key(), build)
    assert b != a and len(builds) == 2 and (b / "converted.txt").read_text() == "version two"
    assert json.loads((b / "llmcompare-source.json").read_text()) == key()


def test_interrupted_conversion_leaves_no_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOMPARE_CACHE_DIR", str(tmp_path / "cache"))

    def fail(out):
        (out / "half.bin").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        models.cached_build("test", {"k": 1}, fail)
    assert not [p for p in (tmp_path / "cache" / "test").iterdir() if p.is_dir()]


def test_every_extra_that_reads_the_default_gguf_has_what_the_conversion_needs():
    # transformers refuses a GGUF without accelerate; a fresh install of these extras must have it
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    extras = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("transformers", "ctranslate2", "default-model"):
        names = {d.split(">")[0].split("=")[0].split("[")[0] for d in extras[extra]}
        assert {"transformers", "torch", "gguf", "accelerate"} <= names, extra
