"""A stand-in for ``pynvml`` with a known power trace and energy counter, for tests of
:mod:`llmcompare.telemetry.nvml` (and of anything built on it) on machines without a GPU.

Each :class:`FakeGpu` follows a piecewise-linear power trace (watts against the fake's clock); its
energy counter is that trace's exact integral (mJ, as the driver reports it), so a test knows the
true energy of any window. A GPU built with ``energy_counter=False`` raises ``NVMLError_NotSupported``
for the counter, as pre-Volta GPUs do. Inject it as ``NvmlSampler(nvml=FakeNVML([...]))``, or into a
whole run (its workers) with two environment variables::

    LLMCOMPARE_NVML=llmcompare.telemetry.fake_nvml:from_env
    LLMCOMPARE_FAKE_NVML='{"gpus": [{"watts": 250}, {"points": [[0, 100], [10, 300]], "energy_counter": false}]}'

(:func:`from_env`): each GPU a constant ``watts`` or a trace of ``points`` (seconds, watts), the
seconds counted from ``"t0"`` (Unix time; default: when the fake was made, i.e. when the worker
opened NVML).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 (pynvml's name)
    pass


class NVMLError_Uninitialized(NVMLError):  # noqa: N801
    pass


@dataclass
class Trace:
    """Power in watts, linear between ``points`` (t, watts) and flat beyond them."""

    points: list[tuple[float, float]]

    def power(self, t: float) -> float:
        pts = self.points
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, w0), (t1, w1) in zip(pts, pts[1:]):
            if t <= t1:
                return w0 + (w1 - w0) * (t - t0) / (t1 - t0)
        return pts[-1][1]

    def energy(self, t: float) -> float:
        """Joules from ``points[0]``'s time to ``t`` (exact for the piecewise-linear trace)."""
        pts = self.points
        if t <= pts[0][0]:
            return 0.0
        total = 0.0
        for (t0, w0), (t1, w1) in zip(pts, pts[1:]):
            if t <= t0:
                break
            hi = min(t, t1)
            total += (hi - t0) * (w0 + self.power(hi)) / 2
        if t > pts[-1][0]:
            total += (t - pts[-1][0]) * pts[-1][1]
        return total

    def between(self, a: float, b: float) -> float:
        return self.energy(b) - self.energy(a)


@dataclass
class FakeGpu:
    trace: Trace
    uuid: str = ""
    name: str = "Fake GPU"
    energy_counter: bool = True
    energy_offset_j: float = 12_345.0
    """The counter's value at the trace's start (the driver counts from its load)."""
    sm_util: int = 90
    mem_util: int = 40
    sm_clock: int = 1980
    mem_clock: int = 2619
    temp: int = 61
    mem_used: int = 30 << 30
    mem_total: int = 80 << 30
    calls: dict = field(default_factory=dict)


class FakeNVML:
    """The slice of ``pynvml`` the sampler uses. ``clock``: the time the traces are read at (the
    sampler's clock, so a test can drive both)."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported

    def __init__(self, gpus: list[FakeGpu], clock=time.time):
        self.gpus = gpus
        for i, g in enumerate(gpus):
            g.uuid = g.uuid or f"GPU-fake-{i:04d}"
        self.clock = clock
        self.initialised = 0
        self.shutdowns = 0

    # ---- library ----
    def nvmlInit(self) -> None:  # noqa: N802 (pynvml's names)
        self.initialised += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def _check(self) -> None:
        if self.initialised <= self.shutdowns:
            raise NVMLError_Uninitialized("NVML not initialised")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        self._check()
        if not 0 <= i < len(self.gpus):
            raise NVMLError(f"no GPU {i}")
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:  # noqa: N802
        self._check()
        for i, g in enumerate(self.gpus):
            if g.uuid == uuid:
                return i
        raise NVMLError(f"no GPU {uuid}")

    def nvmlDeviceGetIndex(self, h: int) -> int:  # noqa: N802
        return h

    def nvmlDeviceGetUUID(self, h: int) -> str:  # noqa: N802
        return self.gpus[h].uuid

    def nvmlDeviceGetName(self, h: int) -> str:  # noqa: N802
        return self.gpus[h].name

    # ---- readings ----
    def nvmlDeviceGetPowerUsage(self, h: int) -> int:  # noqa: N802
        self._check()
        return int(round(self.gpus[h].trace.power(self.clock()) * 1000))

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:  # noqa: N802
        self._check()
        g = self.gpus[h]
        if not g.energy_counter:
            raise NVMLError_NotSupported("Not Supported")
        return int(round((g.energy_offset_j + g.trace.energy(self.clock())) * 1000))

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:  # noqa: N802
        g = self.gpus[h]
        return SimpleNamespace(gpu=g.sm_util, memory=g.mem_util)

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:  # noqa: N802
        g = self.gpus[h]
        return g.sm_clock if kind == self.NVML_CLOCK_SM else g.mem_clock

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:  # noqa: N802
        return self.gpus[h].temp

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:  # noqa: N802
        g = self.gpus[h]
        return SimpleNamespace(used=g.mem_used, total=g.mem_total, free=g.mem_total - g.mem_used)


FAKE_ENV = "LLMCOMPARE_FAKE_NVML"


def from_env() -> FakeNVML:
    """A :class:`FakeNVML` on the real clock (Unix time) from the JSON in :data:`FAKE_ENV` (module
    docstring); one GPU at a constant 100 W when it is unset."""
    spec = json.loads(os.environ.get(FAKE_ENV) or '{"gpus": [{"watts": 100}]}')
    t0 = float(spec.get("t0", time.time()))
    gpus = []
    for g in spec.get("gpus") or []:
        points = [(t0 + float(t), float(w)) for t, w in g.get("points") or [(0.0, g.get("watts", 100.0))]]
        gpus.append(FakeGpu(Trace(points), energy_counter=bool(g.get("energy_counter", True)),
                            sm_util=int(g.get("sm_util", 90)), mem_util=int(g.get("mem_util", 40))))
    return FakeNVML(gpus, clock=time.time)
