"""The batch-1 decode floor, reported by llmcompare itself: the device's copy bandwidth and each run's
TPOT as a percentage of ``(weight bytes + KV bytes read) / bandwidth``.

Three parts, each usable alone:

* **Bandwidth.** :func:`measure_copy_bandwidth` times a large device-to-device copy (bytes read plus
  bytes written, median of several, CUDA events, random data). The result is cached per GPU, keyed by
  the GPU's name and driver version, in ``<cache_dir>/bandwidth.json``
  (:func:`llmcompare.models.cache_dir`), so it runs once per machine. :func:`for_environment` is what
  the environment block calls: on a CUDA run it returns the cached figure, or measures it in a child
  process (so the parent, which never imports an engine, does not hold a CUDA context while workers
  run). ``LLMCOMPARE_NO_BANDWIDTH=1`` turns the measurement off; the block then says so.
* **Floor.** :func:`floor` is :func:`llmcompare.hardware.plan.plan` at the measured bandwidth and the mean
  context of the decode steps TPOT covers. Weight bytes come from the variant's type, by assumption:
  fp32 4 bytes per parameter, fp16/bf16 2, int8 (and CTranslate2's ``int8_*``) 1, nf4/int4 0.5;
  quantization scales and layers kept in 16 bits are not counted, so a quantized variant's floor is a
  little low (its "% of floor" a little high). A variant of unknown type gets no floor.
* **Report.** :func:`annotate` puts ``summary.info["roofline"]`` on every CUDA summary of a latency
  run whose environment block holds a bandwidth; the ``% of floor`` column reads it
  (:mod:`llmcompare.report.columns`). With the bandwidth, the environment block keeps the model's
  shape (``model_config``), so a report rebuilt where the model files are not still has the floor.

Command line (``python -m llmcompare.hardware.roofline``, or ``llmcompare bandwidth`` once registered)::

    python -m llmcompare.hardware.roofline                # this GPU's copy bandwidth: cached, else measured
    python -m llmcompare.hardware.roofline --force        # measure again and replace the cached figure
    python -m llmcompare.hardware.roofline RUN_DIR        # a run's floor and % of floor, per backend
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmcompare.hardware.devices import cuda_visible_devices, gpu_info
from llmcompare.hardware.gpus import Accelerator
from llmcompare.hardware.plan import ModelConfig, load_model_config, plan
from llmcompare.models import cache_dir
from llmcompare.plugins import get_registry

OPT_OUT_ENV = "LLMCOMPARE_NO_BANDWIDTH"
CACHE_FILE = "bandwidth.json"
COPY_BYTES = 4 * 2**30
"""Bytes copied per timed copy (the same 4 GiB as ``benchmarks/gpu/bandwidth.py``); less when the
device has less than three times that free."""
WARMUP, REPEATS = 3, 20
MEASURE_TIMEOUT_S = 300.0

#: Weight type of each variant name the built-in backends use, for the floor's weight bytes.
ASSUMPTION = ("weight bytes = parameters × bytes of the variant's type (fp32 4, fp16/bf16 2, int8 1,"
              " nf4/int4 and GPTQ/EXL2/EXL3 at the recipes' 4 bits 0.5; quantization scales not counted);"
              " KV bytes at the mean decode context")


# ---------------------------------------------------------------------------------------------
# Bandwidth: measure, cache, look up
# ---------------------------------------------------------------------------------------------
def measure_copy_bandwidth(index: int = 0, n_bytes: int = COPY_BYTES, warmup: int = WARMUP,
                           repeats: int = REPEATS) -> dict[str, Any]:
    """Time ``repeats`` device-to-device copies of ``n_bytes`` on CUDA device ``index`` (in this process).

    Returns the entry :func:`store` caches: ``bytes_per_s`` (2 × bytes / median seconds), the GPU's
    name, the copy size, the spread and how it was taken. Raises ``RuntimeError`` without a CUDA device.
    """
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    dev = torch.device("cuda", index)
    free, _ = torch.cuda.mem_get_info(dev)
    n = min(n_bytes, free // 3 // 2**20 * 2**20)  # source, destination, and room to spare
    if n < 256 * 2**20:
        raise RuntimeError(f"only {free / 2**30:.1f} GiB free on cuda:{index}; a copy test needs at least 0.75 GiB")
    src = torch.randint(0, 256, (n,), dtype=torch.uint8, device=dev)  # random data: zeros can run faster
    dst = torch.empty_like(src)
    for _ in range(warmup):
        dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    if not torch.equal(dst[:: 2**20], src[:: 2**20]):
        raise RuntimeError("the copy test read back different bytes than it wrote")
    name = torch.cuda.get_device_name(dev)
    del src, dst
    torch.cuda.empty_cache()
    median = statistics.median(times)
    return {
        "bytes_per_s": 2 * n / median, "gpu": name, "copy_bytes": n, "median_s": median,
        "min_s": min(times), "max_s": max(times), "repeats": repeats, "warmup": warmup,
        "method": f"device-to-device copy of {n / 2**30:g} GiB, bytes read + written, median of {repeats}"
                  f" after {warmup} warm-ups, CUDA events",
        "torch": torch.__version__, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def cache_key(gpu: str, driver: str | None) -> str:
    return f"{gpu} | driver {driver or 'unknown'}"


def read_cache() -> dict[str, dict[str, Any]]:
    """Every cached entry by :func:`cache_key`; an unreadable file counts as empty."""
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def lookup(gpu: str, driver: str | None) -> dict[str, Any] | None:
    return read_cache().get(cache_key(gpu, driver))


def store(entry: dict[str, Any]) -> None:
    """Add ``entry`` (with ``gpu`` and ``driver``) to the cache, replacing that GPU's previous one."""
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = read_cache()
    entries[cache_key(entry["gpu"], entry.get("driver"))] = entry
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"entries": entries}, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def device_index(device: str | None) -> int:
    """``cuda:K`` → K; ``cuda`` (or anything else) → 0."""
    if device and device.startswith("cuda:"):
        try:
            return int(device.split(":", 1)[1])
        except ValueError:
            return 0
    return 0


def gpu_identity(index: int = 0) -> dict[str, Any] | None:
    """Name and driver of CUDA device ``index`` through NVML (None without NVML or a driver).

    ``CUDA_VISIBLE_DEVICES`` is honoured: CUDA's K-th visible device is NVML's ``visible[K]``.
    """
    gpus = gpu_info()
    visible = cuda_visible_devices()
    nvml_index = index
    if visible:
        if index >= len(visible) or not visible[index].isdigit():
            return None  # UUIDs or an out-of-range index: do not guess which GPU it is
        nvml_index = int(visible[index])
    match = [g for g in gpus if g.get("index") == nvml_index]
    return {"gpu": match[0]["name"], "driver": match[0].get("driver")} if match else None


def measured_or_cached(index: int = 0, force: bool = False) -> dict[str, Any]:
    """In this process: the cached entry for device ``index``, else a fresh measurement, cached."""
    ident = gpu_identity(index)
    if ident and not force:
        hit = lookup(ident["gpu"], ident["driver"])
        if hit:
            return {**hit, "source": "cache"}
    entry = measure_copy_bandwidth(index)
    entry["driver"] = ident["driver"] if ident else None
    if ident:
        entry["gpu"] = ident["gpu"]  # NVML's name, the one later look-ups use
    store(entry)
    return {**entry, "source": "measured"}


def _measure_in_child(device: str, python: str | None) -> dict[str, Any]:
    argv = [python or sys.executable, "-m", "llmcompare.hardware.roofline", "--json", "--device", device]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=MEASURE_TIMEOUT_S, check=False,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"bandwidth measurement did not finish: {type(exc).__name__}: {exc}"}
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    if out.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    last = (out.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return {"error": f"bandwidth measurement failed ({' '.join(argv[:3])} ... exited {out.returncode}): {last};"
                     " measure once with `python -m llmcompare.hardware.roofline` under an interpreter that has torch with"
                     " CUDA (the figure is cached)"}


def for_environment(device: str | None, python: str | None = None) -> dict[str, Any] | None:
    """The environment block's ``bandwidth`` entry for a run on ``device``, or None when not applicable.

    ``cuda[:K]``: the cached figure, else measured now in a child process under ``python`` (default
    this interpreter) and cached; ``{"skipped": ...}`` when ``LLMCOMPARE_NO_BANDWIDTH=1``;
    ``{"error": ...}`` when it cannot be measured. ``None`` (device unknown): the cached figure for
    GPU 0 if there is one, never a measurement. Any other device: None.
    """
    if device is not None and not device.startswith("cuda"):
        return None
    if os.environ.get(OPT_OUT_ENV, "").strip().lower() in ("1", "true", "yes"):
        return {"skipped": f"{OPT_OUT_ENV}=1"} if device is not None else None
    ident = gpu_identity(device_index(device))
    if ident:
        hit = lookup(ident["gpu"], ident["driver"])
        if hit:
            return {**hit, "source": "cache"}
    if device is None:
        return None
    return _measure_in_child(device, python)


# ---------------------------------------------------------------------------------------------
# The floor
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Floor:
    """Batch-1 decode floor of one variant at one context; bytes are bytes, the time is ms/token."""

    weight_dtype: str
    kv_dtype: str
    weight_bytes: int
    kv_bytes: int
    """KV cache read per decode step at ``context_tokens``."""
    context_tokens: int
    bandwidth_bytes_per_s: float
    ms_per_token: float
    n_gpus: int = 1
    """Tensor-parallel degree: each GPU reads its share of the bytes at ``bandwidth_bytes_per_s`` (the
    measured figure of one GPU; all-reduce traffic is not counted)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_dtype(variant: str | None, file_quantization: str | None = None,
                 declared: Mapping[str, str] | None = None) -> str | None:
    """The plan type (:data:`llmcompare.hardware.plan.DTYPE_BYTES`) a variant's weights are counted in, or None.

    ``declared`` is the backend's own ``BackendSpec.weight_dtypes``. A GGUF file's own type stands in when
    the backend has no variant (``Q8_*`` int8, ``Q4_*``/``IQ4_*`` int4, ``F16``/``BF16``/``F32`` as they say).
    """
    if variant:
        return (declared or {}).get(variant)
    q = (file_quantization or "").upper()
    if q in ("F16", "BF16", "F32"):
        return {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}[q]
    if q.startswith("Q8"):
        return "int8"
    if q.startswith(("Q4", "IQ4")):
        return "int4"
    return None


def mean_decode_context(input_tokens: float, output_tokens: int) -> int:
    """Mean KV length over the steps TPOT covers: token k (k = 2..n) reads input + k − 1 positions,
    whose mean is ``input + n/2`` (384 for 256 in, 256 out)."""
    return max(1, round(input_tokens + output_tokens / 2))


def floor(config: Any, dtype: str, bandwidth_bytes_per_s: float, context_tokens: int, n_gpus: int = 1) -> Floor:
    """:func:`llmcompare.hardware.plan.plan`'s batch-1 floor for ``config`` with ``dtype`` weights at a measured
    bandwidth (``config`` is a :class:`llmcompare.hardware.plan.ModelConfig`), on ``n_gpus`` in tensor parallel."""
    gpu = Accelerator(key="measured", name="measured device", aliases=(), memory_bytes=0,
                      bandwidth_bytes_per_s=float(bandwidth_bytes_per_s), dense_fp16_flops=0.0,
                      memory_source="not used for the floor", bandwidth_source="measured copy bandwidth",
                      flops_source="not used for the floor")
    p = plan(config, gpu, context_tokens, dtype=dtype, n_gpus=n_gpus)
    return Floor(weight_dtype=p.dtype, kv_dtype=p.kv_dtype, weight_bytes=p.weight_bytes,
                 kv_bytes=p.kv_bytes_at_context, context_tokens=context_tokens,
                 bandwidth_bytes_per_s=float(bandwidth_bytes_per_s), ms_per_token=p.floor_ms_per_token,
                 n_gpus=n_gpus)


def model_config_record(model_ref: str | None) -> dict[str, Any] | None:
    """The model's shape as the environment block keeps it (``model_config``), so a run's floor can be
    recomputed where the model files are not; None when the config cannot be read."""
    try:
        return asdict(load_model_config(model_ref))
    except Exception:  # a hub id, a missing gguf reader: the report then reads the model itself, or says why not
        return None


def run_model_config(environment: dict[str, Any], model_ref: str | None) -> Any:
    """The :class:`~llmcompare.hardware.plan.ModelConfig` a run recorded, else the one read from ``model_ref`` now."""
    recorded = (environment or {}).get("model_config")
    return ModelConfig(**recorded) if recorded else load_model_config(model_ref)


def annotate(summaries: list[Any], spec: Any, environment: dict[str, Any], requests: list[Any],
             max_new_tokens: int) -> None:
    """Set ``summary.info["roofline"]`` on each CUDA batch-1 summary of a run with a measured bandwidth.

    The entry holds the floor (:class:`Floor` fields), ``tpot_p50_ms`` and ``percent_of_floor``
    (floor / TPOT p50 × 100), or ``error`` saying why there is none. A backend run with ``-o
    tensor_parallel_size=N`` gets the floor of N GPUs, each reading its share. The weight type of a
    variant is the backend's own declaration (``BackendSpec.weight_dtypes``), else a GGUF file's type.
    Summaries of other devices and runs whose environment holds no bandwidth are left as they are.
    Idempotent. The batch-1 scenario calls it on its summaries (the floor is a batch-1 figure).
    """
    bandwidth = (environment or {}).get("bandwidth") or {}
    bps = bandwidth.get("bytes_per_s")
    if not bps:
        return
    cuda = [s for s in summaries if str(s.info.get("device") or "").startswith("cuda")]
    if not cuda:
        return
    try:
        config = run_model_config(environment, spec.model)
    except Exception as exc:  # an older run, and its model file gone from this machine
        for s in cuda:
            s.info["roofline"] = {"error": f"model config not readable: {exc}"}
        return
    registry = get_registry()
    backends = {b.label: b for b in spec.backends}
    for s in cuda:
        variant = s.info.get("variant")
        request = backends.get(s.backend)
        declared = registry.backends.get(request.name) if request else None
        dtype = weight_dtype(variant, config.file_quantization, declared.weight_dtypes if declared else {})
        if dtype is None:
            s.info["roofline"] = {"error": f"weight type of variant {variant!r} unknown"}
            continue
        n_in = s.input_tokens
        if n_in is None:
            lengths = [r.input_tokens for r in requests
                       if r.backend == s.backend and r.stage == s.stage and not r.warmup and r.error is None]
            n_in = sum(lengths) / len(lengths) if lengths else None
        if n_in is None:
            s.info["roofline"] = {"error": "no successful request to read the input length from"}
            continue
        try:
            n_gpus = max(1, int((request.options if request else {}).get("tensor_parallel_size") or 1))
        except (TypeError, ValueError):
            n_gpus = 1
        f = floor(config, dtype, bps, mean_decode_context(n_in, max_new_tokens), n_gpus=n_gpus)
        tpot = s.tpot_ms.get("p50")
        s.info["roofline"] = {**f.to_dict(), "tpot_p50_ms": tpot,
                              "percent_of_floor": 100.0 * f.ms_per_token / tpot if tpot else None,
                              "bandwidth_source": bandwidth.get("source"), "assumption": ASSUMPTION}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m llmcompare.hardware.roofline [--device cuda:K] [--force] [--json]``: this GPU's copy
    bandwidth, cached, else measured (how another interpreter's worker measures it for a run)."""
    p = argparse.ArgumentParser(prog="python -m llmcompare.hardware.roofline", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="CUDA device to measure, cuda or cuda:K (default cuda)")
    p.add_argument("--force", action="store_true", help="measure again even if a figure is cached")
    p.add_argument("--json", action="store_true", help="print JSON")
    return print_bandwidth(p.parse_args(argv))


def print_bandwidth(args: argparse.Namespace) -> int:
    """Print the device's bandwidth; 0 on success, 1 when it cannot be measured."""
    try:
        entry = measured_or_cached(device_index(args.device), force=args.force)
    except Exception as exc:
        print(f"llmcompare: bandwidth: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(entry))
    else:
        print(f"{entry['gpu']} (driver {entry.get('driver') or 'unknown'}): {entry['bytes_per_s'] / 1e9:,.1f} GB/s,"
              f" {entry['method']} ({entry['source']}; cache {cache_path()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
