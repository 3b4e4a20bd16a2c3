"""Before measuring: does a cell fit, can it meet the SLO at all, and what does the roofline promise?

Everything here is llmcompare's own arithmetic (:func:`llmcompare.hardware.plan.plan` on the model's
shape and the accelerator table), applied per load level:

* **fit**: the weights per GPU, plus the KV cache of the level's users (per replica) at the full context
  (input + output tokens), must fit the GPU's memory less the plan's 10% reserve;
* **SLO floor**: at concurrency ``c`` one decode step reads the weights and ``c`` sequences' KV at the
  mean context, so no engine beats ``(weights + c × KV per token × context) / bandwidth`` per token;
  prefill of the prompt needs at least ``2 × parameters × input tokens / FLOPS``. A level whose SLO limit
  is below its floor cannot meet it.

A level that fails either is dropped from its cell; a cell with no level left is pruned. The same
figures estimate what a cell would measure on hardware that is not here (``not run: needs 4× A10G``):
a bound, labelled as one, never a measurement.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from llmcompare.hardware.gpus import Accelerator, get_accelerator
from llmcompare.hardware.plan import DEFAULT_RESERVE, DTYPE_BYTES, ModelConfig, load_model_config, plan
from llmcompare.study.hardware import Hardware, HostDevices
from llmcompare.study.spec import Cell, Study, tensor_parallel

GB = 1e9
DEFAULT_INPUT_TOKENS = 128   # the default prompt set is shorter; used only when the cell gives no length
DEFAULT_NEW_TOKENS = 64      # the CLI's default --max-new-tokens
DEFAULT_PROMPTS = 10         # prompts in the built-in default set (run scenario)
STARTUP_S = 12.0             # a cell's fixed cost: the CLI, its worker, tokenizer and model (echo, measured here)


@dataclass
class LevelCheck:
    level: float
    fits: bool | None = None
    meets_floor: bool | None = None
    why: list[str] = field(default_factory=list)
    floor_tpot_ms: float | None = None
    floor_ttft_ms: float | None = None
    bound_tok_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.fits is not False and self.meets_floor is not False


@dataclass
class Assessment:
    """What planning says about one cell."""

    cell_id: str
    pruned: bool = False
    reasons: list[str] = field(default_factory=list)      # why pruned, or why levels were dropped
    notes: list[str] = field(default_factory=list)        # what could not be checked
    levels: list[LevelCheck] = field(default_factory=list)
    kept_levels: list[float] = field(default_factory=list)
    present: bool = True
    not_run: str | None = None                             # "needs 4× A10G"
    estimate_s: float | None = None
    estimate_basis: str = ""
    weights_gb_per_gpu: float | None = None
    max_batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_config(study: Study, model: str | None):
    """The model's shape for the planner, or (None, why not)."""
    if model is not None and model in study.models:
        return ModelConfig.from_hf_config(study.models[model], name=model, source="the study file's models:"), None
    try:
        return load_model_config(model), None
    except Exception as exc:  # a model the planner cannot read: no pruning, and the plan says so
        return None, f"the model's shape is unknown to the planner ({str(exc).splitlines()[0]}); add it under models:"


def _accelerator(hw: Hardware):
    """The plan's accelerator for a hardware entry; for a CPU entry one built from memory_gb/bandwidth_gbs."""
    if hw.accelerator is not None:
        acc = get_accelerator(hw.accelerator)
        return acc.with_bandwidth(hw.bandwidth_gbs) if hw.bandwidth_gbs else acc
    if hw.memory_gb is None and hw.bandwidth_gbs is None:
        return None
    return Accelerator(key="cpu", name="CPU", aliases=(), memory_bytes=int((hw.memory_gb or 1e6) * GB),
                       bandwidth_bytes_per_s=(hw.bandwidth_gbs or 0.0) * GB or 1.0, dense_fp16_flops=1.0,
                       memory_source="the study file", bandwidth_source="the study file", flops_source="none",
                       unit="CPU")


def assess(study: Study, cell: Cell, host: HostDevices, cache: dict | None = None) -> Assessment:
    cache = cache if cache is not None else {}
    hw = study.hardware[cell.hardware]
    a = Assessment(cell.id)
    if not host.present(hw, cell.gpus or None):
        a.present = False
        what = hw.describe()
        if hw.is_gpu and cell.gpus and cell.gpus != hw.count:
            what = f"{cell.gpus}× {hw.describe().split('× ', 1)[-1]}"
        a.not_run = f"needs {what}" + (f" ({hw.name})" if hw.name.lower() not in what.lower() else "")
    levels = cell.levels or [1.0]
    kind = cell.level_kind or "concurrency"
    input_tokens = _max_int(cell.flags.get("input_tokens"))
    new_tokens = _max_int(cell.flags.get("max_new_tokens")) or DEFAULT_NEW_TOKENS
    if input_tokens is None:
        a.notes.append(f"no input_tokens: the plan assumes {DEFAULT_INPUT_TOKENS}-token prompts")
        input_tokens = DEFAULT_INPUT_TOKENS
    context = input_tokens + new_tokens
    mean_context = input_tokens + new_tokens / 2
    key = cell.model
    if key not in cache:
        cache[key] = model_config(study, cell.model)
    cfg, why_not = cache[key]
    acc = _accelerator(hw)
    tp, replicas = tensor_parallel(cell.options)
    n_shard = tp if (tp > 1 or replicas > 1 or not hw.accelerator) else hw.count
    if hw.accelerator and not hw.is_gpu:
        n_shard = hw.count  # Inferentia2: the entry's devices
    p = None
    if cfg is None:
        a.notes.append(why_not or "no model shape")
    elif acc is None:
        a.notes.append(f"hardware {hw.name!r} gives no memory_gb or bandwidth_gbs: fit and floor not checked")
    else:
        try:
            p = plan(cfg, acc, context, dtype=cell.weights, price_per_hour=hw.price_per_hour, n_gpus=n_shard)
        except Exception as exc:
            a.notes.append(f"plan failed: {exc}")
    if p is not None:
        a.weights_gb_per_gpu = p.weight_bytes_per_gpu / GB
        a.max_batch = p.max_batch_at_context
        check_mem = hw.accelerator is not None or hw.memory_gb is not None
        check_bw = hw.accelerator is not None or hw.bandwidth_gbs is not None
        bw = acc.bandwidth_bytes_per_s
        flops = acc.dense_fp16_flops if hw.accelerator else None
        usable = p.usable_bytes_per_gpu
        unit = acc.unit if hw.accelerator else "CPU"
        mem_txt = (f"{acc.memory_bytes / 2**30:g} GiB × (1 − {DEFAULT_RESERVE:g})" if hw.accelerator
                   else f"{hw.memory_gb:g} GB × (1 − {DEFAULT_RESERVE:g})") if check_mem else ""
        for lv in levels:
            chk = LevelCheck(lv)
            users = lv if kind == "concurrency" else 1.0
            per_replica = math.ceil(users / replicas)
            kv = per_replica * p.kv_bytes_per_token_per_gpu * context
            if check_mem:
                need = p.weight_bytes_per_gpu + kv
                chk.fits = need <= usable
                if not chk.fits:
                    chk.why.append(
                        f"{_lvl(kind, lv)} does not fit: weights {p.weight_bytes_per_gpu / GB:,.2f} GB/{unit}"
                        f" ({cfg.parameters / 1e9:,.2f} B params × {_dt_bytes(cell.weights):g} B ÷ {n_shard})"
                        f" + KV {per_replica} seq × {context:,} tokens × {p.kv_bytes_per_token_per_gpu:,} B"
                        f" = {kv / GB:,.2f} GB → {need / GB:,.2f} GB > {usable / GB:,.2f} GB usable ({mem_txt})")
            if check_bw:
                step = (p.weight_bytes_per_gpu + per_replica * p.kv_bytes_per_token_per_gpu * mean_context) / bw
                if flops:
                    step = max(step, 2 * cfg.parameters * per_replica / (flops * n_shard))
                chk.floor_tpot_ms = step * 1000
                prefill = p.weight_bytes_per_gpu / bw
                if flops:
                    prefill = max(prefill, 2 * cfg.parameters * input_tokens / (flops * n_shard))
                chk.floor_ttft_ms = prefill * 1000
                chk.bound_tok_s = (users if kind == "concurrency" else min(users, 1.0)) / step if kind == "concurrency" \
                    else min(lv * new_tokens, replicas * per_replica / step)
                limits = {"tpot_ms": chk.floor_tpot_ms, "itl_ms": chk.floor_tpot_ms, "ttft_ms": chk.floor_ttft_ms,
                          "e2e_ms": chk.floor_ttft_ms + (new_tokens - 1) * chk.floor_tpot_ms}
                misses = [k for k, v in study.slo.items() if limits[k] > v]
                chk.meets_floor = not misses
                for k in misses:
                    chk.why.append(f"{_lvl(kind, lv)} cannot meet {k} ≤ {study.slo[k]:g}: its floor is"
                                   f" {limits[k]:,.2f} ms ({_floor_txt(k, p, per_replica, mean_context, bw, cfg, input_tokens, n_shard, flops, new_tokens)})")
            a.levels.append(chk)
        a.kept_levels = [c.level for c in a.levels if c.ok]
        dropped = [c for c in a.levels if not c.ok]
        if study.prune:
            for c in dropped:
                a.reasons.extend(c.why)
            if not a.kept_levels:
                a.pruned = True
    else:
        a.levels = [LevelCheck(lv) for lv in levels]
        a.kept_levels = list(levels)
    if not study.prune:
        a.kept_levels = list(levels)
    a.estimate_s, a.estimate_basis = _estimate(study, cell, a, input_tokens, new_tokens)
    return a


def _dt_bytes(dtype: str) -> float:
    return DTYPE_BYTES[dtype]


def _floor_txt(k, p, per_replica, mean_context, bw, cfg, input_tokens, n_shard, flops, new_tokens) -> str:
    dec = (f"({p.weight_bytes_per_gpu / GB:,.2f} GB weights + {per_replica} × {p.kv_bytes_per_token_per_gpu:,} B"
           f" × {mean_context:,.0f} tokens KV) / {bw / GB:,.0f} GB/s")
    pre = (f"max({p.weight_bytes_per_gpu / GB:,.2f} GB / {bw / GB:,.0f} GB/s, 2 × {cfg.parameters / 1e9:,.2f} B ×"
           f" {input_tokens} tokens / ({flops / 1e12 if flops else 0:g} TFLOPS × {n_shard}))")
    if k in ("tpot_ms", "itl_ms"):
        return dec
    if k == "ttft_ms":
        return pre
    return f"prefill {pre} + {new_tokens - 1} decode steps of {dec}"


def _lvl(kind: str, lv: float) -> str:
    v = int(lv) if float(lv).is_integer() else lv
    return f"c={v}" if kind == "concurrency" else f"rate={v}"


def _max_int(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, list):
        return max(int(x) for x in v) if v else None
    if isinstance(v, str):
        parts = [int(x) for x in v.split(",") if x.strip().isdigit()]
        return max(parts) if parts else None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _estimate(study: Study, cell: Cell, a: Assessment, input_tokens: int, new_tokens: int) -> tuple[float | None, str]:
    """Wall time of a cell: a fixed start-up cost plus, per level, its requests in waves of its
    concurrency, each taking the roofline floor (a lower bound) or the SLO's limit (an upper bound for a
    level that meets it); a ``--duration`` level takes its duration."""
    levels = a.kept_levels or cell.levels or [1.0]
    kind = cell.level_kind or "concurrency"
    floors = {c.level: c for c in a.levels}
    total, basis = STARTUP_S, set()
    duration = cell.flags.get("duration")
    for lv in levels:
        if duration:
            total += float(duration) + 5.0
            basis.add("duration")
            continue
        n_req = cell.flags.get("requests")
        if cell.command == "run":
            reps = int(cell.flags.get("repeats", 3))
            n_req = DEFAULT_PROMPTS * reps + 1
        n_req = int(n_req or DEFAULT_PROMPTS)
        warm = int(cell.flags.get("warmup") or (lv if kind == "concurrency" else 1))
        chk = floors.get(lv)
        if chk and chk.floor_tpot_ms is not None:
            e2e = (chk.floor_ttft_ms or 0) + new_tokens * chk.floor_tpot_ms
            basis.add("roofline floor (a lower bound)")
        elif study.slo.get("e2e_ms") or ("ttft_ms" in study.slo and "tpot_ms" in study.slo):
            e2e = study.slo.get("e2e_ms") or study.slo["ttft_ms"] + new_tokens * study.slo["tpot_ms"]
            basis.add("the SLO's limits (an upper bound for levels that meet it)")
        else:
            return None, "unknown: no SLO and no roofline for this hardware"
        users = lv if kind == "concurrency" else 1
        total += math.ceil((n_req + warm) / max(1, users)) * e2e / 1000
    return total, "; ".join(sorted(basis)) or "start-up only"
