"""What a result was measured on: hardware, OS and versions. Never secrets.

The block records versions and hardware facts only. It reads no environment variable values, so
tokens and keys (``HF_TOKEN``, ``OPENAI_API_KEY``, AWS credentials…) cannot leak into shared results.
The exceptions are llmcompare's own switches that change what is measured, recorded as what they did:
``LLMCOMPARE_NO_BANDWIDTH`` (:mod:`llmcompare.hardware.roofline`) and ``LLMCOMPARE_CUBLAS12_ALIAS``
(:mod:`llmcompare.hardware.cuda_compat`).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

import psutil

from llmcompare import __version__
from llmcompare.hardware import cuda_compat, roofline
from llmcompare.hardware.devices import cuda_visible_devices, gpu_info  # noqa: F401  (part of this module's API)


def dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def capture(distributions: list[str] | None = None, model: dict[str, Any] | None = None,
            device: str | None = None) -> dict[str, Any]:
    """The environment block. ``distributions`` are engine/plugin packages whose versions to record.

    ``device`` is the run's: on ``cuda`` the GPU's copy bandwidth is added (cached, else measured once
    in a child process: :func:`llmcompare.hardware.roofline.for_environment`); when not given, only a cached
    figure is. With a bandwidth, ``model_config`` keeps the model's shape (the floor's inputs).
    ``cuda_compat`` records a cuBLAS alias the workers will get, when one was asked for.
    """
    vm = psutil.virtual_memory()
    env: dict[str, Any] = {
        "llmcompare": __version__,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_bytes": int(vm.total),
        # 1, 5 and 15 minutes: work already on the CPUs when the run starts slows CPU-bound engines
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "gpus": gpu_info(),
    }
    names = sorted(set(distributions or []) | {"torch", "transformers", "pluggy", "rich", "nvidia-ml-py"})
    env["packages"] = {n: v for n in names if (v := dist_version(n))}
    torch_cuda = _torch_cuda()
    if torch_cuda:
        env["torch_cuda"] = torch_cuda
    if model is not None:
        env["model"] = model
    bandwidth = roofline.for_environment(device)
    if bandwidth is not None:
        env["bandwidth"] = bandwidth
        if bandwidth.get("bytes_per_s") and model is not None:
            shape = roofline.model_config_record(model.get("ref"))
            if shape is not None:
                env["model_config"] = shape  # the floor's inputs, for reports rebuilt without the model
    compat = cuda_compat.environment_record()
    if compat is not None:
        env["cuda_compat"] = compat
    return env


def _torch_cuda() -> dict[str, Any] | None:
    """CUDA as torch sees it; only if torch is already imported (never imported just for this)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        return {"cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0)}
    except Exception:
        return None
