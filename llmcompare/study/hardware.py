"""Where a study's cells may run: the study file's ``hardware:`` entries, and what this host has.

An entry names an accelerator of llmcompare's table (:mod:`llmcompare.hardware.gpus`: ``a10g``,
``a100-40gb``, ``h100``, ``h200``, ``inf2``, ...) or ``cpu``, with a count and what an hour costs::

    hardware:
      cpu: {price_per_hour: 0.10}
      g5.12xlarge: {gpu: a10g, count: 4, price_per_hour: 5.672}

The visible GPUs of this host come from ``--gpus`` / ``LLMCOMPARE_STUDY_GPUS`` (``0,1,2,3`` or
``h100=0,1,2,3``: ids, optionally with the model they are) or else from ``nvidia-smi``. An entry is
*present* when this host has ``count`` GPUs of its kind (any kind matches ids given without one);
cells for hardware that is not present are planned and estimated, never run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from llmcompare.hardware.gpus import get_accelerator

GPUS_ENV = "LLMCOMPARE_STUDY_GPUS"


@dataclass(frozen=True)
class Hardware:
    """One hardware entry of a study file."""

    name: str
    accelerator: str | None      # key in llmcompare.hardware.gpus, or None for cpu
    count: int = 1
    price_per_hour: float | None = None
    device: str = "cpu"          # what --device the cells get
    memory_gb: float | None = None     # cpu: memory the fit check may use (GB, decimal)
    bandwidth_gbs: float | None = None  # a measured bandwidth instead of the datasheet's
    description: str = ""

    @property
    def is_gpu(self) -> bool:
        """A GPU entry: its cells hold ``count`` of the host's GPUs (whatever ``device`` their engine is
        told to use: ``device: cpu`` runs a CPU engine on a GPU instance)."""
        return self.accelerator is not None and self.accelerator != "inf2"

    def describe(self) -> str:
        if self.accelerator is None:
            return "CPU"
        acc = get_accelerator(self.accelerator)
        short = acc.key.upper() if acc.key != "inf2" else "Inferentia2"
        return f"{self.count}× {short}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hardware:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class Gpu:
    id: str
    name: str | None   # the model as nvidia-smi reports it, or as --gpus names it; None matches any
    memory_mib: int | None = None


@dataclass
class HostDevices:
    """The GPUs a study may use on this host."""

    gpus: list[Gpu] = field(default_factory=list)
    source: str = "none"

    def matching(self, hw: Hardware) -> list[Gpu]:
        """The GPUs of this host that are of ``hw``'s kind."""
        if not hw.is_gpu:
            return []
        return [g for g in self.gpus if g.name is None or gpu_matches(g.name, hw.accelerator, g.memory_mib)]

    def present(self, hw: Hardware, need: int | None = None) -> bool:
        if hw.accelerator is None:
            return True
        if not hw.is_gpu:
            return hw.device == "cpu"  # Inferentia2 is not detected here
        return len(self.matching(hw)) >= (need if need is not None else hw.count)


def gpu_matches(reported: str, accelerator: str | None, memory_mib: int | None = None) -> bool:
    """Whether a GPU that reports ``reported`` (``NVIDIA A10G``, ``NVIDIA H100 80GB HBM3``, ``h100``) is
    the accelerator ``accelerator`` of llmcompare's table."""
    if accelerator is None:
        return False
    try:
        acc = get_accelerator(reported)
        return acc.key == get_accelerator(accelerator).key
    except Exception:  # a name the table does not know: match by family below
        pass
    want = get_accelerator(accelerator)
    words = set(re.split(r"[^a-z0-9]+", reported.lower()))
    family = want.key.split("-")[0]  # a100-40gb -> a100, h100-sxm -> h100
    if family not in words:
        return False
    if family == "a100" and memory_mib:
        return abs(memory_mib / 1024 - want.memory_bytes / 2**30) < 8
    return True


def parse_gpus(text: str) -> list[Gpu]:
    """``"0,1,2,3"`` or ``"h100=0,1"`` or ``"a10g=0,1;h100=2,3"`` -> GPUs."""
    out: list[Gpu] = []
    for group in filter(None, (g.strip() for g in re.split(r"[;\s]+", text))):
        name, sep, ids = group.rpartition("=")
        for i in filter(None, (x.strip() for x in ids.split(","))):
            out.append(Gpu(i, name if sep else None))
    return out


def detect(gpus: str | None = None) -> HostDevices:
    """The host's GPUs: ``gpus`` (the ``--gpus`` value), else ``LLMCOMPARE_STUDY_GPUS``, else nvidia-smi
    (respecting ``CUDA_VISIBLE_DEVICES`` when it lists ids), else none."""
    text = gpus if gpus is not None else os.environ.get(GPUS_ENV)
    if text is not None:
        return HostDevices(parse_gpus(text), "--gpus" if gpus is not None else GPUS_ENV)
    smi = shutil.which("nvidia-smi")
    if not smi:
        return HostDevices([], "no nvidia-smi")
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return HostDevices([], "nvidia-smi failed")
    found = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0].isdigit():
            mem = int(float(parts[2])) if re.match(r"^[\d.]+$", parts[2]) else None
            found.append(Gpu(parts[0], parts[1], mem))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and all(v.strip().isdigit() for v in visible.split(",") if v.strip()):
        keep = [v.strip() for v in visible.split(",") if v.strip()]
        found = [g for g in found if g.id in keep]
    return HostDevices(found, "nvidia-smi")
