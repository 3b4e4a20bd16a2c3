"""GPU power and energy through NVML (``nvidia-ml-py``, the ``gpu`` extra), sampled beside a load
level, and energy per output token over the level's steady-state window.

:class:`NvmlSampler` samples, every ``interval_s`` seconds in a background thread, each GPU the worker
may use (``CUDA_VISIBLE_DEVICES``, indices or UUIDs, else every GPU): power (W), the energy counter
where the driver has it (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the driver loaded; Volta
and later), SM and memory utilisation (%), SM and memory clocks (MHz), temperature (°C) and memory
used/total (bytes). A field the GPU does not support is None. Memory is bounded: past ``max_samples``
the samples held are thinned to every other one and the interval doubles, so a long level keeps its
whole span at a coarser step (:attr:`NvmlSampler.decimations` counts it).

Energy (:func:`energy_over_window`) is counted over a window, the steady state of a level (as the
ML.ENERGY Benchmark does, arXiv 2505.06371: the ramp-up and the drain are not the engine's steady
cost): from the energy counter where every sample has it (at a window edge between two readings,
the interval's counted joules are shared in proportion to the power integral on each side), else by
integrating power over time (trapezoids, power interpolated at the edges). The counter is preferred:
on many GPUs ``nvmlDeviceGetPowerUsage`` is an average over the last second or so, not an instant
reading, so integrating it smears a short window's edges. With the tokens generated in that same
window, :func:`energy_per_token` gives joules per output token and output tokens per joule.

``pynvml`` is imported only inside functions; any module with its functions can stand in for it
(``nvml=``), as :mod:`llmcompare.telemetry.fake_nvml` does in the tests. Note that CUDA numbers GPUs
fastest first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, and NVML by PCI bus: an index in
``CUDA_VISIBLE_DEVICES`` is taken as NVML's index (as llmcompare's memory probes do); UUIDs are exact.
"""

from __future__ import annotations

import importlib
import math
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llmcompare.hardware.devices import cuda_visible_devices

FIELDS = ("power_w", "energy_j", "sm_util_pct", "mem_util_pct", "sm_clock_mhz", "mem_clock_mhz", "temp_c",
          "mem_used_bytes", "mem_total_bytes")


@dataclass(frozen=True)
class GpuSample:
    t: float
    """Unix time of the reading (the clock of the requests' ``scheduled_at``)."""
    gpu: int
    """NVML index."""
    power_w: float | None = None
    energy_j: float | None = None
    """The driver's energy counter, joules since it loaded."""
    sm_util_pct: float | None = None
    mem_util_pct: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    temp_c: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None

    def to_record(self) -> dict[str, Any]:
        """``{"type": "gpu", ...}`` for requests.jsonl."""
        return {"type": "gpu", **asdict(self)}


NVML_ENV = "LLMCOMPARE_NVML"
"""``module`` or ``module:attribute``: the NVML to sample instead of ``pynvml`` (an object or module
with pynvml's functions; a callable attribute is called with no argument to make it). Set, it also
turns GPU sampling on for a run on any device: the CPU tests inject
``llmcompare.telemetry.fake_nvml:from_env`` this way."""


def injected_nvml() -> tuple[Any, str] | None:
    """The NVML that :data:`NVML_ENV` names, and the name; None when the variable is unset. Raises
    ``ImportError``/``AttributeError`` when it names nothing importable."""
    target = os.environ.get(NVML_ENV, "").strip()
    if not target:
        return None
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    if attr:
        obj = getattr(obj, attr)
        if callable(obj) and not hasattr(obj, "nvmlInit"):
            obj = obj()
    return obj, target


def nvml_available(nvml: Any = None) -> str | None:
    """None when NVML can be used here (the module imports and a driver answers), else why not, in a
    few words: the load driver samples GPUs only where this is None."""
    try:
        if nvml is None:
            import pynvml as nvml
    except ImportError:
        return "nvidia-ml-py is not installed (pip install 'llmcompare[gpu]')"
    try:
        nvml.nvmlInit()
    except Exception as exc:
        return f"NVML did not start: {exc}"
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass
    return None


def visible_handles(nvml: Any, visible: Sequence[str] | None = None) -> list[Any]:
    """NVML handles of the GPUs this process may use: ``visible`` (default: ``CUDA_VISIBLE_DEVICES``'s
    entries) as indices or UUIDs, every GPU when there are none; an entry NVML does not know, or one
    starting with ``-``, ends the list (as it does for CUDA)."""
    if visible is None:

        visible = cuda_visible_devices()
    if not visible:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    handles = []
    for name in visible:
        name = name.strip()
        if not name or name.startswith("-"):
            break
        try:
            handles.append(nvml.nvmlDeviceGetHandleByIndex(int(name)) if name.isdigit()
                           else nvml.nvmlDeviceGetHandleByUUID(name))
        except Exception:
            break
    return handles


def read_sample(nvml: Any, handle: Any, index: int, t: float) -> GpuSample:
    """One reading of every field of one GPU; a field that fails (not supported) is None."""

    def get(fn, *args):
        try:
            return fn(handle, *args)
        except Exception:
            return None

    power = get(nvml.nvmlDeviceGetPowerUsage)
    energy = get(nvml.nvmlDeviceGetTotalEnergyConsumption)
    util = get(nvml.nvmlDeviceGetUtilizationRates)
    mem = get(nvml.nvmlDeviceGetMemoryInfo)
    return GpuSample(
        t=t, gpu=index,
        power_w=None if power is None else power / 1000.0,
        energy_j=None if energy is None else energy / 1000.0,
        sm_util_pct=None if util is None else float(util.gpu),
        mem_util_pct=None if util is None else float(util.memory),
        sm_clock_mhz=_num(get(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM)),
        mem_clock_mhz=_num(get(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_MEM)),
        temp_c=_num(get(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)),
        mem_used_bytes=None if mem is None else int(mem.used),
        mem_total_bytes=None if mem is None else int(mem.total),
    )


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


class NvmlSampler:
    """Sample the visible GPUs every ``interval_s`` seconds in a background thread.

    ``nvml``: the NVML module (default: ``import pynvml``). ``visible``: CUDA_VISIBLE_DEVICES-style
    entries (default: the environment's). ``clock``: the timestamp source (Unix seconds).
    ``start()``/``stop()`` run the thread (once per backend, or per level); ``begin(stage)``/``end()``
    take a reading at once and remember the stage's window; :meth:`energy` measures any window.
    """

    def __init__(self, *, interval_s: float = 0.1, max_samples: int = 100_000, nvml: Any = None,
                 visible: Sequence[str] | None = None, clock=time.time):
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if max_samples < 16:
            raise ValueError("max_samples must be at least 16")
        self.interval_s = float(interval_s)
        """The current interval (doubled at each thinning)."""
        self.requested_interval_s = float(interval_s)
        self.max_samples = int(max_samples)
        self.clock = clock
        self.decimations = 0
        self.errors = 0
        """Readings that raised outside the per-field guards (a GPU lost mid-run)."""
        self.windows: dict[str, tuple[float, float | None]] = {}
        """Stage -> (start, end) from :meth:`begin`/:meth:`end`."""
        self._nvml = nvml
        self._visible = visible
        self._handles: list[tuple[int, Any]] = []
        self._samples: list[GpuSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open = False
        self._stage: str | None = None

    # ---- NVML ----
    def open(self) -> list[int]:
        """Initialise NVML and find the GPUs; returns their NVML indices (empty: nothing to sample)."""
        if self._open:
            return [i for i, _ in self._handles]
        if self._nvml is None:
            import pynvml

            self._nvml = pynvml
        self._nvml.nvmlInit()
        self._open = True
        handles = visible_handles(self._nvml, self._visible)
        self._handles = []
        for h in handles:
            try:
                index = int(self._nvml.nvmlDeviceGetIndex(h))
            except Exception:
                index = len(self._handles)
            self._handles.append((index, h))
        return [i for i, _ in self._handles]

    def close(self) -> None:
        if self._open:
            try:
                self._nvml.nvmlShutdown()
            finally:
                self._open = False

    @property
    def gpus(self) -> list[int]:
        return [i for i, _ in self._handles]

    # ---- sampling ----
    def sample_once(self) -> list[GpuSample]:
        """Read every GPU now and keep the readings."""
        if not self._open:
            self.open()
        t = self.clock()
        out = []
        for index, handle in self._handles:
            try:
                out.append(read_sample(self._nvml, handle, index, t))
            except Exception:
                self.errors += 1
        with self._lock:
            self._samples.extend(out)
            if len(self._samples) > self.max_samples:
                self._thin()
        return out

    def _thin(self) -> None:
        """Keep every other reading of each GPU (the first and last kept), and sample half as often."""
        by_gpu: dict[int, list[GpuSample]] = {}
        for s in self._samples:
            by_gpu.setdefault(s.gpu, []).append(s)
        kept = []
        for series in by_gpu.values():
            half = series[::2]
            if series[-1] is not half[-1]:
                half.append(series[-1])
            kept += half
        self._samples = sorted(kept, key=lambda s: (s.t, s.gpu))
        self.interval_s *= 2
        self.decimations += 1

    def start(self) -> NvmlSampler:
        """Start the sampling thread (a reading at once, then every ``interval_s``)."""
        if self._thread is not None:
            raise RuntimeError("the sampler is already started")
        self.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="llmcompare-nvml", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread after one last reading (samples stay until :meth:`drain_records`)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=10)
            self.sample_once()

    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.close()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a slow driver call): don't bunch up
                next_at, delay = time.monotonic(), 0.0
            if self._stop.wait(delay):
                break

    # ---- stages ----
    def begin(self, stage: str) -> float:
        """A reading now; the stage's window starts here. Returns the start time."""
        self._stage = stage
        readings = self.sample_once()
        start = readings[0].t if readings else self.clock()
        self.windows[stage] = (start, None)
        return start

    def end(self) -> float:
        """A reading now; the current stage's window ends here. Returns the end time."""
        if self._stage is None:
            raise RuntimeError("end without begin")
        readings = self.sample_once()
        end = readings[0].t if readings else self.clock()
        self.windows[self._stage] = (self.windows[self._stage][0], end)
        self._stage = None
        return end

    # ---- results ----
    def samples(self) -> list[GpuSample]:
        with self._lock:
            return list(self._samples)

    def drain_records(self, keep_after: float | None = None) -> list[dict[str, Any]]:
        """``{"type": "gpu", ...}`` records of the samples held, which are then dropped (those at or
        after ``keep_after`` are kept too, for a window still open)."""
        with self._lock:
            out = [s.to_record() for s in self._samples]
            self._samples = [s for s in self._samples if keep_after is not None and s.t >= keep_after]
        return out

    def energy(self, start: float, end: float, *, output_tokens: int | None = None) -> EnergyResult:
        """Energy of the visible GPUs over ``[start, end]`` (:func:`energy_over_window`)."""
        return energy_over_window(self.samples(), start, end, output_tokens=output_tokens,
                                  gpus=self.gpus or None)


# ---------------------------------------------------------------------------------------------
# Energy over a window
# ---------------------------------------------------------------------------------------------

@dataclass
class GpuEnergy:
    gpu: int
    joules: float | None
    method: str | None
    """``counter`` (the driver's energy counter) or ``power`` (integrated power), None when neither."""
    mean_power_w: float | None
    samples: int
    covered: bool
    """Readings at or before the start and at or after the end exist (no extrapolation)."""
    joules_by_power: float | None = None
    """Integrated power, also when the counter was used (a check on the two)."""


@dataclass
class EnergyResult:
    start: float
    end: float
    joules: float | None
    """Sum over the GPUs (None when any GPU has no figure)."""
    gpus: list[GpuEnergy] = field(default_factory=list)
    output_tokens: int | None = None
    joules_per_token: float | None = None
    tokens_per_joule: float | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def mean_power_w(self) -> float | None:
        return self.joules / self.seconds if self.joules is not None and self.seconds > 0 else None

    @property
    def method(self) -> str | None:
        methods = {g.method for g in self.gpus}
        return methods.pop() if len(methods) == 1 else ("mixed" if methods else None)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "energy", "start": self.start, "end": self.end, "seconds": self.seconds,
                "joules": self.joules, "mean_power_w": self.mean_power_w, "method": self.method,
                "output_tokens": self.output_tokens, "joules_per_token": self.joules_per_token,
                "tokens_per_joule": self.tokens_per_joule, "gpus": [asdict(g) for g in self.gpus]}


def _interp(series: list[tuple[float, float]], t: float) -> float:
    """Linear interpolation of a sorted (t, v) series at ``t`` (clamped to its ends)."""
    if t <= series[0][0]:
        return series[0][1]
    if t >= series[-1][0]:
        return series[-1][1]
    lo, hi = 0, len(series) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if series[mid][0] <= t:
            lo = mid
        else:
            hi = mid
    (t0, v0), (t1, v1) = series[lo], series[hi]
    return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def _counter_at(counter: list[tuple[float, float]], power: list[tuple[float, float]], t: float) -> float:
    """The energy counter at ``t`` between two readings: the interval's counted joules shared in
    proportion to the power integral on each side of ``t`` (linear in time when there is no power)."""
    if t <= counter[0][0] or t >= counter[-1][0] or len(power) < 2:
        return _interp(counter, t)
    i = next(k for k in range(1, len(counter)) if counter[k][0] >= t)
    (t0, e0), (t1, e1) = counter[i - 1], counter[i]
    whole = integrate_power(power, t0, t1)
    if whole <= 0:
        return _interp(counter, t)
    return e0 + (e1 - e0) * integrate_power(power, t0, t) / whole


def integrate_power(series: list[tuple[float, float]], start: float, end: float) -> float:
    """Joules: the trapezoid integral over ``[start, end]`` of a (t, watts) series, linear between
    readings and interpolated at the edges (held flat beyond the first and last reading)."""
    if end <= start or not series:
        return 0.0
    pts = [(start, _interp(series, start))] + [p for p in series if start < p[0] < end] + [(end, _interp(series, end))]
    return sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in zip(pts, pts[1:]))


def energy_over_window(samples: Iterable[GpuSample], start: float, end: float, *, output_tokens: int | None = None,
                       gpus: Sequence[int] | None = None) -> EnergyResult:
    """Energy per GPU and in all over ``[start, end]`` (module docstring for the method); with
    ``output_tokens`` (the tokens generated in the same window), joules per token and tokens per joule."""
    by_gpu: dict[int, list[GpuSample]] = {}
    for s in samples:
        by_gpu.setdefault(s.gpu, []).append(s)
    result = EnergyResult(start, end, None, output_tokens=output_tokens)
    total, complete = 0.0, True
    for gpu in (gpus if gpus is not None else sorted(by_gpu)):
        series = sorted(by_gpu.get(gpu, []), key=lambda s: s.t)
        covered = bool(series) and series[0].t <= start and series[-1].t >= end
        near = [s for s in series if start <= s.t <= end]
        power = [(s.t, s.power_w) for s in series if s.power_w is not None]
        by_power = integrate_power(power, start, end) if power else None
        counter = [(s.t, s.energy_j) for s in series if s.energy_j is not None]
        joules, method = None, None
        if counter and len(counter) == len(series):
            e0, e1 = _counter_at(counter, power, start), _counter_at(counter, power, end)
            if e1 >= e0:  # a counter that went back (driver reload) is not trusted
                joules, method = e1 - e0, "counter"
        if joules is None and by_power is not None:
            joules, method = by_power, "power"
        seconds = end - start
        mean_w = joules / seconds if joules is not None and seconds > 0 else None
        result.gpus.append(GpuEnergy(gpu, joules, method, mean_w, len(near), covered, by_power))
        if joules is None:
            complete = False
        else:
            total += joules
    result.joules = total if complete and result.gpus else None
    if output_tokens is not None and result.joules is not None:
        per = energy_per_token(result.joules, output_tokens)
        result.joules_per_token, result.tokens_per_joule = per["joules_per_token"], per["tokens_per_joule"]
    return result


def energy_per_token(joules: float, output_tokens: int) -> dict[str, float | None]:
    """``joules_per_token = J / tokens`` and ``tokens_per_joule = tokens / J`` (None where undefined)."""
    return {"joules_per_token": joules / output_tokens if output_tokens > 0 else None,
            "tokens_per_joule": output_tokens / joules if joules > 0 else None}


def tokens_in_window(requests: Iterable[Any], start: float, end: float) -> int:
    """Output tokens that arrived within ``[start, end]``: each request record's ``sent_at`` plus its
    ``token_times_s`` (llmcompare's RequestRecord, or dicts with those keys). The numerator that goes
    with :func:`energy_over_window` over the same window."""
    n = 0
    for r in requests:
        get = r.get if isinstance(r, dict) else (lambda k, _r=r: getattr(_r, k, None))
        sent, times = get("sent_at"), get("token_times_s") or []
        if sent is None:
            continue
        n += sum(1 for dt in times if start <= sent + dt <= end)
    return n


def samples_from_records(records: Iterable[dict[str, Any]]) -> list[GpuSample]:
    """``{"type": "gpu", ...}`` records (as :meth:`GpuSample.to_record` wrote them, with any extra
    keys) back as samples; other records are ignored."""
    names = set(GpuSample.__dataclass_fields__)
    return [GpuSample(**{k: v for k, v in r.items() if k in names}) for r in records
            if r.get("type") == "gpu" and "t" in r and "gpu" in r]


def summarize_samples(samples: Iterable[GpuSample], start: float, end: float) -> dict[int, dict[str, Any]]:
    """Per GPU over ``[start, end]``: mean and max of each field (the reports' utilisation, clocks,
    temperature and memory; not the energy counter, whose window figure is :func:`energy_over_window`)."""
    fields = [f for f in FIELDS if f != "energy_j"]
    out: dict[int, dict[str, Any]] = {}
    for s in samples:
        if not start <= s.t <= end:
            continue
        g = out.setdefault(s.gpu, {"n": 0})
        g["n"] += 1
        for f in fields:
            v = getattr(s, f)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            acc = g.setdefault(f, {"sum": 0.0, "max": v, "n": 0})
            acc["sum"] += v
            acc["n"] += 1
            acc["max"] = max(acc["max"], v)
    for g in out.values():
        for f in fields:
            if f in g:
                acc = g[f]
                g[f] = {"mean": acc["sum"] / acc["n"], "max": acc["max"]}
    return out
