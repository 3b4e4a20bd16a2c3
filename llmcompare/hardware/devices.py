"""The GPUs this machine has (NVML, through ``nvidia-ml-py``) and which of them a process may use
(``CUDA_VISIBLE_DEVICES``)."""

from __future__ import annotations

import os
from typing import Any


def cuda_visible_devices() -> list[str]:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs), stripped, empty ones dropped; an
    empty list when it is unset (every GPU is visible then)."""
    return [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]


def gpu_info() -> list[dict[str, Any]]:
    """GPUs through NVML (``nvidia-ml-py``), when it is installed and a driver answers."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    gpus = []
    try:
        driver = _s(pynvml.nvmlSystemGetDriverVersion())
        try:
            cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
            cuda_s = f"{cuda // 1000}.{(cuda % 1000) // 10}"
        except Exception:
            cuda_s = None
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            g = {"index": i, "name": _s(pynvml.nvmlDeviceGetName(h)), "memory_bytes": int(mem.total),
                 "driver": driver, "cuda_driver": cuda_s}
            for key, clock in (("sm_clock_mhz", pynvml.NVML_CLOCK_SM), ("mem_clock_mhz", pynvml.NVML_CLOCK_MEM)):
                try:
                    g[key] = pynvml.nvmlDeviceGetClockInfo(h, clock)
                    g["max_" + key] = pynvml.nvmlDeviceGetMaxClockInfo(h, clock)
                except Exception:
                    pass
            gpus.append(g)
    finally:
        pynvml.nvmlShutdown()
    return gpus


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
