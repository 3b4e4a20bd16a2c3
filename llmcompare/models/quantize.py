"""Quantization recipes: GPTQ (gptqmodel), EXL2 (exllamav2's converter), EXL3 (exllamav3's converter) and
GGUF (llmcompare's own writer, then llama.cpp's quantizer).

Every recipe starts from one fp16 checkpoint (:func:`fp16_source`): for ``synthetic:<shape>`` the
seeded random weights that :mod:`llmcompare.models.synthetic` builds, built in fp16 on the GPU when there
is one and saved once; for any other model its own HF directory. Each output is cached by
:func:`llmcompare.models.cached_build`, keyed by the source's fingerprint, the recipe's fields and the
tool's version, so a changed source, recipe or tool converts again and nothing else does. A cache
entry holds ``model/`` (the checkpoint), ``quantize.log`` (the converter's output),
``calibration.json`` (GPTQ only: the exact token rows), ``measurement.json`` (EXL2 only: the
converter's per-layer measurement, reusable) and ``llmcompare-source.json`` (the key); a
GGUF checkpoint is the single file ``model/model.gguf``.

Every converter runs in a child process started from an argv list (no shell). GPTQ, EXL2 and EXL3 run
on CUDA; GGUF runs on the CPU. Without CUDA where it is needed, or without the tool, a recipe refuses
at once with one line that says what to do.

Calibration, stated per recipe (on random weights it is meaningless for quality: what a synthetic
checkpoint is for is the kernel path, whose speed does not depend on the weights' values):

* GPTQ: the built-in default prompts, tokenized with the source's tokenizer (no special tokens),
  concatenated and cycled into ``rows`` rows of ``row_tokens`` tokens, row ``i`` starting at prompt
  ``i``; written to ``calibration.json`` beside the checkpoint.
* EXL2 and EXL3: the converters' own bundled calibration corpora, with fewer and shorter rows than
  their defaults (so that a 7B conversion fits in a few minutes; the fields below give the counts).
* GGUF: none. Q8_0 and Q4_0 are round-to-nearest block formats (llama.cpp's quantizer without an
  importance matrix).

Command line (prints the checkpoint's directory, or the ``.gguf`` file)::

    python -m llmcompare.models.quantize exl2 -m synthetic:llama-2-7b --bits 4.0
    python -m llmcompare.models.quantize gptq -m ./Llama-2-7b-hf
    python -m llmcompare.models.quantize gguf -m synthetic:llama-2-7b --type q4_0
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from llmcompare.errors import UserError
from llmcompare.models import ResolvedModel, cache_dir, cache_entry, cached_build, fingerprint, resolve_model, synthetic
from llmcompare.models.hf_to_gguf import FLOAT_TYPES, TYPES, check, convert, is_gguf
from llmcompare.models.prompting import read_prompts

RECIPES_VERSION = "1"
FP16_VERSION = "1"
GPTQMODEL_PIN = "7.6.0"
"""The newest gptqmodel whose requirements accept the GPU machine's torch 2.11 (docs/backends/gptq.md)."""


# ---------------------------------------------------------------- recipes
class RecipeDefaults:
    """What a recipe class declares unless it says otherwise."""

    needs_cuda: ClassVar[bool] = True
    """The converter runs on a CUDA GPU (the recipe refuses without one)."""
    also_requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(module, distribution) it needs beside its tool; their versions join the cache key."""
    output_file: ClassVar[str | None] = None
    """The checkpoint's one file inside ``model/`` (GGUF); None: the directory is the checkpoint."""
    kept: ClassVar[tuple[str, ...]] = ()
    """Files of the scratch folder (paths relative to it) that move beside ``model/`` in the cache entry,
    under their own names."""

    def key_fields(self) -> dict[str, Any]:
        """The recipe's part of the cache key: its fields (a recipe that names a file keys its content)."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class GPTQRecipe(RecipeDefaults):
    """4-bit GPTQ, group size 128, no act-order, symmetric: the classic format ExLlamaV2 and the
    transformers/optimum loader both run. Quantized by gptqmodel through its Python API, in a child
    process (``python -m llmcompare.models.quantize gptq-run``)."""

    bits: int = 4
    group_size: int = 128
    desc_act: bool = False
    sym: bool = True
    rows: int = 16
    row_tokens: int = 512

    method: ClassVar[str] = "gptq"
    resumable: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ()
    module: ClassVar[str] = "gptqmodel"
    distribution: ClassVar[str] = "gptqmodel"
    kept: ClassVar[tuple[str, ...]] = ("calibration.json",)
    install: ClassVar[str] = (f"pip install --no-deps gptqmodel=={GPTQMODEL_PIN} plus its dependencies"
                              " (docs/backends/gptq.md lists them)")

    def argv(self, source: Path, out: Path, work: Path) -> list[str]:
        return [sys.executable, "-m", "llmcompare.models.quantize", "gptq-run", "--source", str(source), "--out", str(out),
                "--calibration", str(out.parent / "calibration.json"), "--bits", str(self.bits),
                "--group-size", str(self.group_size), "--desc-act", _flag(self.desc_act), "--sym", _flag(self.sym)]

    def prepare(self, source: Path, scratch: Path) -> None:
        """Write ``calibration.json``: the token rows gptqmodel calibrates on."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source))
        rows = calibration_rows(tokenizer, self.rows, self.row_tokens)
        (scratch / "calibration.json").write_text(json.dumps({"source": "built-in prompt set 'default'", "rows": rows}))


@dataclass(frozen=True)
class EXL2Recipe(RecipeDefaults):
    """EXL2 at ``bits`` bits per weight (``head_bits`` for the output layer), by exllamav2's converter
    (``python -m exllamav2.conversion.convert_exl2``) on its bundled calibration data. The row counts
    are below the converter's defaults (100 × 2048 tokens; measurement 16 × 2048).

    The converter first measures every layer's error at each candidate bit width (its longest pass:
    about 20 minutes of a 7B conversion on an H200 that another conversion shared; the rest took
    403 s), then picks the widths for ``bits``. Each
    conversion keeps that ``measurement.json`` in its cache entry; ``measurement`` names one (of the
    same source) to skip the pass, as the converter's ``-m`` does: another ``bits`` from one
    measurement, or a conversion finished on another machine. The cache key holds the file's content,
    not its path."""

    bits: float = 4.0
    head_bits: int = 6
    rows: int = 32
    length: int = 512
    measurement_rows: int = 8
    measurement_length: int = 512
    measurement: str = ""

    method: ClassVar[str] = "exl2"
    resumable: ClassVar[bool] = True
    kept: ClassVar[tuple[str, ...]] = ("job/measurement.json",)
    options: ClassVar[tuple[str, ...]] = ("bits", "head_bits")
    module: ClassVar[str] = "exllamav2"
    distribution: ClassVar[str] = "exllamav2"
    install: ClassVar[str] = "pip install 'llmcompare[exllamav2]'"

    def argv(self, source: Path, out: Path, work: Path) -> list[str]:
        # -o is the converter's working directory, -cf the finished checkpoint. A working directory that
        # holds job_new.json is resumed (the converter's default): its settings, -cf included, win.
        return [sys.executable, "-m", "exllamav2.conversion.convert_exl2", "-i", str(source), "-o", str(work),
                "-cf", str(out), "-b", f"{self.bits:g}", "-hb", str(self.head_bits),
                "-r", str(self.rows), "-l", str(self.length),
                "-mr", str(self.measurement_rows), "-ml", str(self.measurement_length),
                *(["-m", str(Path(self.measurement).resolve())] if self.measurement else [])]

    def __post_init__(self) -> None:
        if self.measurement:
            try:
                held = json.loads(Path(self.measurement).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot read the EXL2 measurement {self.measurement!r}: {exc}; pass the"
                                " measurement.json an EXL2 conversion keeps in its cache entry") from None
            if not (isinstance(held, dict) and {"measurement", "last_module_idx"} <= held.keys()):
                raise UserError(f"{self.measurement!r} is not an exllamav2 measurement.json (a finished"
                                " measurement pass writes one); pass one, or leave --measurement out")

    def key_fields(self) -> dict[str, Any]:
        fields_ = asdict(self)
        if self.measurement:
            fields_["measurement"] = "sha256:" + hashlib.sha256(Path(self.measurement).read_bytes()).hexdigest()
        return fields_

    def prepare(self, source: Path, scratch: Path) -> None:
        pass


@dataclass(frozen=True)
class EXL3Recipe(RecipeDefaults):
    """EXL3 at ``bits`` bits per weight (``head_bits`` for the output layer), by exllamav3's converter
    (``python -m exllamav3.conversion.convert_model``) on its bundled calibration corpus, on GPU 0.
    The calibration is ``cal_rows`` × ``cal_cols`` tokens (the converter's default is 250 × 2048)."""

    bits: float = 4.0
    head_bits: int = 6
    cal_rows: int = 64
    cal_cols: int = 2048

    method: ClassVar[str] = "exl3"
    resumable: ClassVar[bool] = True
    options: ClassVar[tuple[str, ...]] = ("bits", "head_bits")
    module: ClassVar[str] = "exllamav3"
    distribution: ClassVar[str] = "exllamav3"
    install: ClassVar[str] = "pip install 'llmcompare[exllamav3]'"

    def argv(self, source: Path, out: Path, work: Path) -> list[str]:
        # -r resumes the job whose args.json the working directory holds (checkpointed every 120 s)
        resume = ["-r"] if (work / "args.json").is_file() else []
        return [sys.executable, "-m", "exllamav3.conversion.convert_model", "-i", str(source), "-o", str(out),
                "-w", str(work), *resume, "-b", f"{self.bits:g}", "-hb", str(self.head_bits),
                "-cr", str(self.cal_rows), "-cc", str(self.cal_cols), "-d", "0"]

    def prepare(self, source: Path, scratch: Path) -> None:
        pass


@dataclass(frozen=True)
class GGUFRecipe(RecipeDefaults):
    """A GGUF file for llama.cpp of ``type`` f32, f16, q8_0 or q4_0, on the CPU. llmcompare writes the
    float file itself (:mod:`llmcompare.models.hf_to_gguf`: llama.cpp's tensor names and Q/K row order, the
    byte-level BPE vocabulary); q8_0 and q4_0 are then llama.cpp's quantizer run on the f16 file
    (``llama_model_quantize``, its default rules), in a child process
    (``python -m llmcompare.models.quantize gguf-run``)."""

    type: str = "q4_0"

    method: ClassVar[str] = "gguf"
    resumable: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ()
    module: ClassVar[str] = "gguf"
    distribution: ClassVar[str] = "gguf"
    install: ClassVar[str] = "pip install gguf 'llmcompare[llamacpp]'"
    needs_cuda: ClassVar[bool] = False
    also_requires: ClassVar[tuple[tuple[str, str], ...]] = (("llama_cpp", "llama_cpp_python"),)
    output_file: ClassVar[str | None] = "model.gguf"

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise UserError(f"GGUF type {self.type!r} is not one of {', '.join(TYPES)}")

    def argv(self, source: Path, out: Path, work: Path) -> list[str]:
        argv = [sys.executable, "-m", "llmcompare.models.quantize", "gguf-run", "--source", str(source),
                "--out", str(out / self.output_file), "--type", self.type]
        f16 = self.cached_f16(source)
        return argv + ["--from-f16", str(f16)] if f16 else argv

    def cached_f16(self, source: Path) -> Path | None:
        """For q8_0/q4_0: the f16 GGUF of the same source when it is cached already, which the quantizer
        then reads instead of writing its own (on a 7B, 13.5 GB of disk and a minute saved); the result is
        the same file, since the f16 conversion is deterministic."""
        if self.type in FLOAT_TYPES:
            return None
        f16 = cache_entry(self.method, recipe_key(source, GGUFRecipe("f16"))) / "model" / self.output_file
        return f16 if f16.is_file() else None

    def prepare(self, source: Path, scratch: Path) -> None:
        """Refuse, in one line, a checkpoint the converter does not write (before the child starts)."""
        check(source)


Recipe = GPTQRecipe | EXL2Recipe | EXL3Recipe | GGUFRecipe
RECIPES: dict[str, type] = {"gptq": GPTQRecipe, "exl2": EXL2Recipe, "exl3": EXL3Recipe, "gguf": GGUFRecipe}


def _flag(value: bool) -> str:
    return "true" if value else "false"


# ---------------------------------------------------------------- what a checkpoint holds
def checkpoint_format(path: str | os.PathLike) -> str:
    """``unquantized``, ``gptq``, ``exl2``, ``exl3`` (or another ``quant_method``) for an HF directory,
    read from its ``config.json`` (``quantization_config.quant_method``; a ``quantize_config.json``
    beside it also means GPTQ)."""
    p = Path(path)
    try:
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{str(p)!r} is not a model directory with a readable config.json ({exc})") from None
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method:
        return str(method).lower()
    return "gptq" if (p / "quantize_config.json").is_file() else "unquantized"


def describe_checkpoint(path: str | os.PathLike) -> str:
    """One line for the environment block: the format and its settings, from ``config.json``."""
    p = Path(path)
    kind = checkpoint_format(p)
    if kind == "unquantized":
        return "unquantized safetensors (run in fp16)"
    q = json.loads((p / "config.json").read_text(encoding="utf-8")).get("quantization_config") or {}
    if kind == "gptq":
        return (f"gptq {q.get('bits', '?')}-bit group {q.get('group_size', '?')} desc_act={q.get('desc_act', '?')}"
                f" sym={q.get('sym', '?')} format={q.get('checkpoint_format', 'gptq')}")
    return f"{kind} {q.get('bits', '?')} bpw, head {q.get('head_bits', '?')} bits (converter {q.get('version', '?')})"


# ---------------------------------------------------------------- the fp16 source
def fp16_source(model: ResolvedModel) -> Path:
    """The unquantized checkpoint every recipe (and every fp16 ExLlama run) starts from.

    ``synthetic:<shape>``: the shape's seeded weights built in fp16 (on CUDA when torch sees a GPU, as
    the transformers backend builds them there: the same weights; random draws differ between the
    CPU and CUDA generators, so where they were built is part of the key), saved with the shape's
    tokenizer, cached. A build on CUDA gives its memory back and resets torch's peak-memory counters,
    so that a run's recorded peak is the engine's. A GGUF model: its cached fp32 HF conversion. An HF
    directory: itself, unless it is already quantized.
    """
    if model.kind == "synthetic":
        import torch

        assert model.shape is not None
        device = "cuda" if torch.cuda.is_available() else "cpu"
        key = _fp16_key(model)

        def build(out: Path) -> None:
            synthetic.build_model(model.shape, dtype=torch.float16, device=device).save_pretrained(out)
            synthetic.build_tokenizer(model.shape).save_pretrained(out)
            if device == "cuda":  # a one-off conversion: its device memory is no part of the engine's peak
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()

        return cached_build("synthetic-fp16", key, build)
    if model.kind == "hub":
        raise UserError(f"quantizing needs a local model directory, not the hub id {model.ref!r}; download it first")
    path = Path(model.hf_dir())
    held = checkpoint_format(path)
    if held != "unquantized":
        raise UserError(f"model {model.ref!r} is already a {held} checkpoint; it cannot be the fp16 source of another"
                        f" conversion (run it as the {held} variant)")
    return path


def _fp16_key(model: ResolvedModel) -> dict[str, Any]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"synthetic": model.shape, "seed": synthetic.SEED, "dtype": "float16", "built_on": device, "v": FP16_VERSION}


def cached_checkpoint(model: ResolvedModel, recipe: Recipe) -> Path | None:
    """The checkpoint ``recipe`` makes of ``model`` when it is in the cache already, else None; nothing
    is built (not even the fp16 source). What ``python -m llmcompare.models.quantize ... --cached``
    answers, so that a study step can be skipped."""
    if model.kind not in ("synthetic", "hf"):
        return None  # a GGUF model's fp16 source is itself a conversion: not looked up here
    if model.kind == "synthetic":
        entry = cache_entry("synthetic-fp16", _fp16_key(model))
        if not (entry / ".complete").exists():
            return None
        source = entry
    else:
        try:
            source = fp16_source(model)
        except UserError:
            return None
    try:
        key = recipe_key(source.resolve(), recipe)
    except UserError:  # the tool is not installed here: it cannot have made anything
        return None
    entry = cache_entry(recipe.method, key)
    if not (entry / ".complete").exists():
        return None
    return entry / "model" / recipe.output_file if recipe.output_file else entry / "model"


# ---------------------------------------------------------------- calibration
def calibration_rows(tokenizer, rows: int, row_tokens: int, prompt_set: str = "default") -> list[list[int]]:
    """``rows`` rows of ``row_tokens`` ids: the prompt set's texts tokenized (no special tokens),
    concatenated and cycled, row ``i`` starting where prompt ``i mod len(prompts)`` starts."""
    pieces = [tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in read_prompts(prompt_set)]
    stream = [int(t) for ids in pieces for t in ids]
    if not stream:
        raise UserError(f"the prompt set {prompt_set!r} tokenizes to nothing; it cannot calibrate GPTQ")
    starts, at = [], 0
    for ids in pieces:
        starts.append(at)
        at += len(ids)
    return [[stream[(starts[r % len(starts)] + i) % len(stream)] for i in range(row_tokens)] for r in range(rows)]


# ---------------------------------------------------------------- running a recipe
def cuda_available() -> bool:
    """Whether torch sees a CUDA device (the GPTQ, EXL2 and EXL3 converters need one)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def tool_version(recipe: Recipe) -> str:
    """The converter's version without importing it (exllamav2 compiles its CUDA extension at import):
    the distribution's metadata, else the ``version.py`` beside the package's ``__init__``."""
    try:
        return importlib.metadata.version(recipe.distribution)
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec(recipe.module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{recipe.method.upper()} quantization needs the {recipe.distribution!r} package;"
                        f" install it with: {recipe.install}")
    version_py = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_py.read_text()) if version_py.is_file() else None
    return match.group(1) if match else "unknown"


def require(recipe: Recipe) -> None:
    """Refuse, in one line that says what to do, when the tool or CUDA (where it needs it) is missing."""
    for module, distribution in ((recipe.module, recipe.distribution), *recipe.also_requires):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{recipe.method.upper()} quantization needs the {distribution!r} package;"
                            f" install it with: {recipe.install}")
    if recipe.needs_cuda and not cuda_available():
        raise UserError(f"{recipe.method.upper()} quantization runs on a CUDA GPU and torch sees none here;"
                        " run it on a GPU machine (see docs/backends/exllama.md)")


def recipe_key(source: Path, recipe: Recipe) -> dict[str, Any]:
    """The cache key: the source's fingerprint, every recipe field and the tools' versions."""
    key = {"source": fingerprint(source), "method": recipe.method, "recipe": recipe.key_fields(),
           recipe.distribution: tool_version(recipe), "v": RECIPES_VERSION}
    for _, distribution in recipe.also_requires:
        try:
            key[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            key[distribution] = "absent"
    return key


def quantize(source: str | os.PathLike, recipe: Recipe, log_dir: str | os.PathLike | None = None) -> Path:
    """The quantized checkpoint of ``source`` by ``recipe``: ``<cache>/<method>/<key hash>/model`` (for a
    one-file format, the file inside it: ``model/model.gguf``), converted now if it is not cached yet.
    The converter's output goes to a log file in ``log_dir`` (default ``<cache>/quantize-logs``) while
    it runs, and is kept beside the checkpoint.

    The converter works in ``<cache>/<method>/<key hash>.work/`` (``job/`` its working directory, ``out/``
    the checkpoint it writes), which outlives a stopped or failed conversion: for a ``resumable``
    recipe (EXL2, EXL3) the same command then resumes where it stopped, so a 7B conversion can span
    several time-limited calls. Only a finished, checked checkpoint moves into the cache entry, and
    the scratch folder goes with it.
    """
    src = Path(source).resolve()
    key = recipe_key(src, recipe)
    entry = cache_entry(recipe.method, key)
    scratch = entry.with_name(entry.name + ".work")

    def build(tmp: Path) -> None:
        require(recipe)
        logs = Path(log_dir) if log_dir else cache_dir() / "quantize-logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{recipe.method}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        if not recipe.resumable:
            shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True, exist_ok=True)
        work, out = scratch / "job", scratch / "out"
        recipe.prepare(src, scratch)
        argv = recipe.argv(src, out, work)
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"$ {shlex.join(argv)}\n")
            log.flush()
            done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # exllamav2's and exllamav3's converters print their own argument errors and exit with status
        # 0, so the output itself is checked too.
        problem = f"exit status {done.returncode}" if done.returncode else _missing_output(out, recipe)
        if problem:
            tail = " | ".join(log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:])
            again = (f"; the same command resumes from {scratch} (delete it to start over)" if recipe.resumable
                     else "")
            raise RuntimeError(f"{recipe.method} quantization failed ({problem}){again}; log {log_path}: {tail}")
        os.replace(out, tmp / "model")
        for name in recipe.kept:  # GPTQ's calibration rows, EXL2's measurement
            if (scratch / name).is_file():
                os.replace(scratch / name, tmp / Path(name).name)
        shutil.copyfile(log_path, tmp / "quantize.log")
        shutil.rmtree(scratch, ignore_errors=True)

    model = cached_build(recipe.method, key, build) / "model"
    return model / recipe.output_file if recipe.output_file else model


def _missing_output(out: Path, recipe: Recipe) -> str | None:
    """What is wrong with a converter's output, or None: a checkpoint directory with safetensors whose
    config.json names the method, or the recipe's one file (a GGUF: its magic bytes)."""
    if recipe.output_file:
        return None if is_gguf(out / recipe.output_file) else f"no GGUF file written to {out / recipe.output_file}"
    if not any(out.glob("*.safetensors")):
        return f"no .safetensors written to {out}"
    held = checkpoint_format(out)
    return None if held == recipe.method else f"the output's config.json says {held!r}, not {recipe.method!r}"


# ---------------------------------------------------------------- command line
def _gptq_run(args: argparse.Namespace) -> None:
    """The child process of :class:`GPTQRecipe`: gptqmodel's documented load → quantize → save."""
    from gptqmodel import GPTQModel, QuantizeConfig

    rows = json.loads(Path(args.calibration).read_text())["rows"]
    calibration = [{"input_ids": row, "attention_mask": [1] * len(row)} for row in rows]
    config = QuantizeConfig(bits=args.bits, group_size=args.group_size, desc_act=args.desc_act == "true",
                            sym=args.sym == "true")
    model = GPTQModel.load(args.source, config)
    model.quantize(calibration, batch_size=1)
    model.save(args.out)


def _gguf_run(args: argparse.Namespace) -> None:
    """The child process of :class:`GGUFRecipe`."""
    convert(Path(args.source), Path(args.out), args.type, Path(args.from_f16) if args.from_f16 else None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llmcompare.models.quantize", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="method", required=True)
    for name, cls in RECIPES.items():
        p = sub.add_parser(name, help=(cls.__doc__ or "").split(".")[0])
        p.add_argument("-m", "--model", default=None, help="model reference, as llmcompare --model takes it")
        p.add_argument("--log-dir", default=None)
        p.add_argument("--json", action="store_true",
                       help='print {"checkpoint": ..., "source": ...} (the fp16 source it came from) instead')
        p.add_argument("--cached", action="store_true",
                       help="convert nothing: print the checkpoint and exit 0 when it is in the cache, else exit 1")
        for f in fields(cls):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=_arg_type(f.default), default=f.default)
    run = sub.add_parser("gptq-run", help="internal: the GPTQ child process")
    for flag in ("--source", "--out", "--calibration", "--desc-act", "--sym"):
        run.add_argument(flag, required=True)
    run.add_argument("--bits", type=int, required=True)
    run.add_argument("--group-size", type=int, required=True)
    gguf_run = sub.add_parser("gguf-run", help="internal: the GGUF child process")
    for flag in ("--source", "--out", "--type"):
        gguf_run.add_argument(flag, required=True)
    gguf_run.add_argument("--from-f16", default=None, help="a cached f16 GGUF of the same source to quantize")
    return parser


def _arg_type(default: Any):
    if isinstance(default, bool):
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    return type(default)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.method in ("gptq-run", "gguf-run"):
        (_gptq_run if args.method == "gptq-run" else _gguf_run)(args)
        return 0
    cls = RECIPES[args.method]
    try:
        recipe = cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
        if args.cached:
            held = cached_checkpoint(resolve_model(args.model), recipe)
            print(held if held else f"not cached: {args.method} of {args.model or 'the default model'}")
            return 0 if held else 1
        source = fp16_source(resolve_model(args.model))
        made = quantize(source, recipe, log_dir=args.log_dir)
        print(json.dumps({"checkpoint": str(made), "source": str(source)}) if args.json else made)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
