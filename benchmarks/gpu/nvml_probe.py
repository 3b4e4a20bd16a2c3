"""What NVML gives on this GPU machine, and whether llmcompare's two energy methods agree.

Samples every GPU the process may use (CUDA_VISIBLE_DEVICES) with llmcompare.telemetry.nvml's
NvmlSampler: an idle phase, then a load phase (fp16 matmuls on every visible GPU through torch, when
torch sees CUDA; --no-load skips it). Over the middle of the load phase (its first and last second
left out, as a level's ramp and drain are) it prints, per GPU, the energy from the driver's counter
and from integrated power, their ratio, the mean power, the readings achieved against the interval
asked, and which fields the driver supports. Prints one JSON object.

    python benchmarks/gpu/nvml_probe.py [--seconds 8] [--interval 0.05] [--no-load]

Needs nvidia-ml-py (pip install 'llmcompare[gpu]').
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llmcompare.telemetry.nvml import FIELDS, NvmlSampler, summarize_samples  # noqa: E402


def load(seconds: float) -> dict:
    """fp16 matmuls on every visible GPU for ``seconds``; what ran."""
    try:
        import torch
    except ImportError:
        return {"ran": False, "why": "torch not installed"}
    if not torch.cuda.is_available():
        return {"ran": False, "why": "torch sees no CUDA device"}
    devices = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    mats = [(torch.randn(8192, 8192, device=d, dtype=torch.float16),
             torch.randn(8192, 8192, device=d, dtype=torch.float16)) for d in devices]
    done, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        for a, b in mats:
            a @ b
        done += 1
        if done % 8 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    wall = time.monotonic() - t0
    return {"ran": True, "devices": [torch.cuda.get_device_name(d) for d in devices], "seconds": wall,
            "tflops_per_gpu": 2 * 8192 ** 3 * done / wall / 1e12}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the load phase")
    ap.add_argument("--idle", type=float, default=3.0, help="length of the idle phase")
    ap.add_argument("--interval", type=float, default=0.05, help="sampling interval, seconds")
    ap.add_argument("--no-load", action="store_true", help="sample without running matmuls")
    args = ap.parse_args()

    import pynvml

    out: dict = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "interval_s": args.interval}
    sampler = NvmlSampler(interval_s=args.interval)
    gpus = sampler.open()
    out["nvml_indices"] = gpus
    out["driver"] = pynvml.nvmlSystemGetDriverVersion()
    out["names"] = {}
    for i in gpus:
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
        out["names"][str(i)] = name.decode() if isinstance(name, bytes) else name
    sampler.start()
    try:
        idle_start = sampler.begin("idle")
        time.sleep(args.idle)
        idle_end = sampler.end()
        busy_start = sampler.begin("load")
        out["load"] = {"ran": False, "why": "--no-load"} if args.no_load else load(args.seconds)
        if args.no_load:
            time.sleep(args.seconds)
        busy_end = sampler.end()
    finally:
        sampler.stop()
        sampler.close()
    samples = sampler.samples()
    steady = (busy_start + 1.0, busy_end - 1.0)
    out["windows"] = {"idle": [idle_start, idle_end], "load": [busy_start, busy_end], "steady": list(steady)}
    out["readings"] = len(samples)
    out["decimations"] = sampler.decimations
    out["errors"] = sampler.errors
    per_gpu = {}
    for label, (a, b) in (("idle", (idle_start, idle_end)), ("steady", steady)):
        energy = sampler.energy(a, b)
        stats = summarize_samples(samples, a, b)
        for g in energy.gpus:
            row = per_gpu.setdefault(str(g.gpu), {})
            row[label] = {
                "seconds": b - a, "readings": g.samples,
                "readings_per_second": g.samples / (b - a) if b > a else None,
                "joules": g.joules, "method": g.method, "joules_by_power": g.joules_by_power,
                "counter_over_power": (g.joules / g.joules_by_power
                                       if g.method == "counter" and g.joules_by_power else None),
                "mean_power_w": g.mean_power_w, "covered": g.covered,
                "stats": stats.get(g.gpu, {}),
            }
    for i in gpus:
        mine = [s for s in samples if s.gpu == i]
        per_gpu.setdefault(str(i), {})["supported"] = {f: any(getattr(s, f) is not None for s in mine) for f in FIELDS}
    out["gpus"] = per_gpu
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
