"""Accelerators for ``llmcompare plan``: memory, memory bandwidth and dense 16-bit FLOPS, with sources.

Every figure is a vendor's published one (the datasheet named in the entry's ``*_source``), never a
measurement, except where the user passes a measured bandwidth (:meth:`Accelerator.with_bandwidth`).
Conventions, applied to every entry:

* **Memory** is the nominal capacity. Vendors' "GB" of GPU memory are binary (a "24 GB" A10G has
  24 GiB of GDDR6, an "80 GB" A100 has 81,920 MiB), so ``memory_bytes = N × 2**30``. The driver
  reports somewhat less (ECC, reserved pages); ``plan``'s memory reserve absorbs that.
* **Bandwidth** is in bytes per second, decimal (600 GB/s = 600e9 B/s), as datasheets state it.
* **FLOPS** are the *dense* FP16/BF16 tensor-core figure. NVIDIA's datasheets for Ampere's successors
  print the 2:4-sparsity figure with an asterisk; the dense figure is half of it.

One "device" of AWS Inferentia2 is one Inferentia2 chip: two NeuronCore-v2 sharing 32 GiB of HBM.
inf2.xlarge and inf2.8xlarge have 1 device, inf2.24xlarge 6, inf2.48xlarge 12 (24 NeuronCores).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from llmcompare.errors import UserError, did_you_mean

GIB = 2**30
GB = 10**9
TB = 10**12
TFLOPS = 10**12


@dataclass(frozen=True)
class Accelerator:
    """One accelerator (one GPU, or one Inferentia2 device) and where each figure comes from."""

    key: str
    name: str
    aliases: tuple[str, ...]
    memory_bytes: int
    bandwidth_bytes_per_s: float
    dense_fp16_flops: float
    memory_source: str
    bandwidth_source: str
    flops_source: str
    unit: str = "GPU"
    notes: str = ""

    def with_bandwidth(self, gb_per_s: float) -> Accelerator:
        """The same accelerator with a bandwidth you measured (GB/s, decimal) instead of the datasheet's."""
        if not gb_per_s > 0:
            raise UserError(f"--bandwidth-gbs must be a positive number of GB/s, got {gb_per_s}")
        return dataclasses.replace(
            self,
            bandwidth_bytes_per_s=gb_per_s * GB,
            bandwidth_source=f"measured, given by the user ({gb_per_s:g} GB/s); datasheet: {self.bandwidth_source}",
        )


_NVIDIA_A10 = "NVIDIA A10 Tensor Core GPU datasheet"
_A100 = "NVIDIA A100 Tensor Core GPU datasheet"
_H100 = "NVIDIA H100 Tensor Core GPU datasheet (SXM column)"
_H200 = "NVIDIA H200 Tensor Core GPU datasheet (H200 SXM column)"
_L4 = "NVIDIA L4 Tensor Core GPU datasheet"
_INF2 = "AWS Neuron documentation, 'Inferentia2 Architecture'"

ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator(
        key="a10g", name="NVIDIA A10G 24 GB (AWS G5)", aliases=("a10g", "nvidia-a10g", "a10g-24gb", "g5"),
        memory_bytes=24 * GIB, bandwidth_bytes_per_s=600 * GB, dense_fp16_flops=70 * TFLOPS,
        memory_source="AWS EC2 G5 instance specifications (24 GB GDDR6 per A10G)",
        bandwidth_source=f"600 GB/s: the A10's GDDR6 subsystem ({_NVIDIA_A10}), which the A10G shares",
        flops_source=("NVIDIA publishes no A10G datasheet; 70 TFLOPS dense FP16 tensor is the figure commonly quoted"
                      " for the AWS part, and the one that reproduces the JumpStart guide's critical batch of ~116"
                      " at 600 GB/s"),
        notes="the AWS variant of the A10: same memory and bandwidth, lower tensor throughput",
    ),
    Accelerator(
        key="a10", name="NVIDIA A10 24 GB", aliases=("a10", "nvidia-a10", "a10-24gb"),
        memory_bytes=24 * GIB, bandwidth_bytes_per_s=600 * GB, dense_fp16_flops=125 * TFLOPS,
        memory_source=_NVIDIA_A10, bandwidth_source=_NVIDIA_A10,
        flops_source=f"{_NVIDIA_A10}: FP16 tensor 125 TFLOPS dense (250 with sparsity)",
    ),
    Accelerator(
        key="l4", name="NVIDIA L4 24 GB", aliases=("l4", "nvidia-l4", "l4-24gb", "g6"),
        memory_bytes=24 * GIB, bandwidth_bytes_per_s=300 * GB, dense_fp16_flops=121 * TFLOPS,
        memory_source=_L4, bandwidth_source=_L4,
        flops_source=f"{_L4}: FP16 tensor 242 TFLOPS with sparsity, so 121 dense",
    ),
    Accelerator(
        key="a100-40gb", name="NVIDIA A100 40 GB (SXM4)",
        aliases=("a100-40gb", "a100", "a100-40g", "nvidia-a100", "nvidia-a100-40gb", "a100-sxm4-40gb", "p4d"),
        memory_bytes=40 * GIB, bandwidth_bytes_per_s=1555 * GB, dense_fp16_flops=312 * TFLOPS,
        memory_source=_A100, bandwidth_source=f"{_A100}: 1,555 GB/s (40 GB HBM2)",
        flops_source=f"{_A100}: FP16/BF16 tensor 312 TFLOPS dense (624 with sparsity)",
        notes="the GPU of p4d.24xlarge; plain 'a100' means this one",
    ),
    Accelerator(
        key="a100-80gb", name="NVIDIA A100 80 GB (SXM4)",
        aliases=("a100-80gb", "a100-80g", "nvidia-a100-80gb", "a100-sxm4-80gb", "p4de"),
        memory_bytes=80 * GIB, bandwidth_bytes_per_s=2039 * GB, dense_fp16_flops=312 * TFLOPS,
        memory_source=_A100, bandwidth_source=f"{_A100}: 2,039 GB/s (80 GB HBM2e, SXM; the PCIe card has 1,935)",
        flops_source=f"{_A100}: FP16/BF16 tensor 312 TFLOPS dense (624 with sparsity)",
    ),
    Accelerator(
        key="h100-sxm", name="NVIDIA H100 SXM 80 GB",
        aliases=("h100-sxm", "h100", "h100-80gb", "nvidia-h100", "h100-sxm5", "h100-sxm-80gb", "p5"),
        memory_bytes=80 * GIB, bandwidth_bytes_per_s=3.35 * TB, dense_fp16_flops=989.5 * TFLOPS,
        memory_source=_H100, bandwidth_source=f"{_H100}: 3.35 TB/s HBM3",
        flops_source=f"{_H100}: FP16/BF16 tensor 1,979 TFLOPS with sparsity, so 989.5 dense",
        notes="plain 'h100' means the SXM part (the PCIe and NVL cards differ)",
    ),
    Accelerator(
        key="h200", name="NVIDIA H200 SXM 141 GB",
        aliases=("h200", "h200-sxm", "nvidia-h200", "h200-141gb", "p5e"),
        memory_bytes=141 * GIB, bandwidth_bytes_per_s=4.8 * TB, dense_fp16_flops=989.5 * TFLOPS,
        memory_source=_H200, bandwidth_source=f"{_H200}: 4.8 TB/s HBM3e",
        flops_source=f"{_H200}: FP16/BF16 tensor 1,979 TFLOPS with sparsity, so 989.5 dense",
        notes=("a large device-to-device copy measured 4.25-4.30 TB/s on an H200 (docs/results.md):"
               " pass --bandwidth-gbs 4300 for the floor at that rate"),
    ),
    Accelerator(
        key="inf2", name="AWS Inferentia2 (one device = 1 chip = 2 NeuronCore-v2)",
        aliases=("inf2", "inferentia2", "aws-inferentia2", "inferentia-2", "neuron-inf2"),
        memory_bytes=32 * GIB, bandwidth_bytes_per_s=820 * GB, dense_fp16_flops=190 * TFLOPS,
        memory_source=f"{_INF2}: 32 GiB HBM per Inferentia2 device",
        bandwidth_source=(f"{_INF2}: 820 GB/s per device (later revisions print 'GiB/sec'; the decimal reading"
                          " matches AWS's 9.8 TB/s for the 12 devices of inf2.48xlarge)"),
        flops_source=f"{_INF2}: 190 FP16/BF16 TFLOPS per device (its two NeuronCore-v2 together)",
        unit="device",
        notes=("one device = one Inferentia2 chip with two NeuronCore-v2; inf2.xlarge/8xlarge have 1,"
               " inf2.24xlarge 6, inf2.48xlarge 12: pass the device count as --n-gpus"),
    ),
)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


_BY_ALIAS: dict[str, Accelerator] = {alias: acc for acc in ACCELERATORS for alias in acc.aliases}


def known_names() -> list[str]:
    """The canonical key of every accelerator, in table order."""
    return [acc.key for acc in ACCELERATORS]


def get_accelerator(name: str) -> Accelerator:
    """Look an accelerator up by key or alias (case, spaces and underscores do not matter).

    Raises :class:`~llmcompare.errors.UserError` with a did-you-mean for an unknown name.
    """
    n = _normalise(name)
    if n in _BY_ALIAS:
        return _BY_ALIAS[n]
    if n.startswith("nvidia-") and n[len("nvidia-"):] in _BY_ALIAS:
        return _BY_ALIAS[n[len("nvidia-"):]]
    raise UserError(
        f"unknown GPU {name!r}{did_you_mean(n, _BY_ALIAS)}; pass --gpu with one of: {', '.join(known_names())}"
    )
