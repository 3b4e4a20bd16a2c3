"""Telemetry beside a scenario's stages, in the worker: the server's own Prometheus metrics
(:class:`ServerMetrics`, scraped on the session's event loop during each load level) and the GPUs'
power and energy (:class:`GpuTelemetry`, an NVML sampler in a thread). Both write their raw samples
as records (``{"type": "metrics"}``, ``{"type": "gpu"}``) tagged with the backend, the session and
the stage, so every figure the reports show is rebuilt from ``requests.jsonl``
(:mod:`llmcompare.analysis.telemetry`).

Neither names a backend: the server's metrics come from ``BackendSpec.metrics_dialect`` and the
backend's ``metrics_urls()``; GPUs are sampled on a ``cuda`` run, or wherever ``LLMCOMPARE_NVML``
injects an NVML (the CPU tests' fake, :mod:`llmcompare.telemetry.fake_nvml`).
"""

from __future__ import annotations

import sys
from typing import Any

from llmcompare.records import RecordWriter
from llmcompare.redact import redact_url
from llmcompare.runner.job import Context
from llmcompare.runner.session import BackendSession, one_line
from llmcompare.telemetry import nvml as nvml_mod
from llmcompare.telemetry.prometheus import MetricsScraper, WindowSummary

GPU_INTERVAL_S = 0.1
"""Seconds between NVML readings (the sampler thins them past 100,000 and doubles the interval)."""


def _tag(record: dict[str, Any], ctx: Context, session: BackendSession, **extra: Any) -> dict[str, Any]:
    return {**record, "backend": ctx.backend.label, "session": session.id, **extra}


class ServerMetrics:
    """One :class:`MetricsScraper` per server the backend names (``metrics_urls()``, one per replica),
    in the dialect its spec declares; nothing when it declares none or names no URL."""

    def __init__(self, session: BackendSession, ctx: Context, writer: RecordWriter, interval_s: float):
        self.session, self.ctx, self.writer = session, ctx, writer
        spec = session.spec
        dialect = getattr(spec, "metrics_dialect", None) if spec is not None else None
        backend = session.backend
        urls = list(backend.metrics_urls()) if dialect and hasattr(backend, "metrics_urls") else []
        self.scrapers = [MetricsScraper(u, dialect=dialect or "auto", interval_s=interval_s) for u in urls]
        self.started = False
        if urls:
            writer.write(_tag({"type": "telemetry", "kind": "metrics", "dialect": dialect,
                               "urls": [redact_url(s.url) for s in self.scrapers], "interval_s": interval_s},
                              ctx, session))

    def __bool__(self) -> bool:
        return bool(self.scrapers)

    async def start(self) -> None:
        for s in self.scrapers:
            await s.start()
        self.started = True

    async def begin_level(self, stage: str) -> None:
        for s in self.scrapers:
            await s.begin_level(stage)

    async def mark_measured(self) -> None:
        """A scrape between the warm-up (the shared-prefix prime) and the measured requests: the
        prefix-cache hit rate of the measured phase starts here."""
        for s in self.scrapers:
            await s.scrape(mark="measured")

    async def end_level(self) -> list[WindowSummary]:
        summaries = [await s.end_level() for s in self.scrapers]
        self.flush()
        return summaries

    def flush(self) -> None:
        for i, s in enumerate(self.scrapers):
            for rec in s.drain_records():
                self.writer.write(_tag(rec, self.ctx, self.session, replica=i))

    async def stop(self) -> None:
        for s in self.scrapers:
            await s.stop()
        self.flush()


class GpuTelemetry:
    """An :class:`~llmcompare.telemetry.nvml.NvmlSampler` over the GPUs this worker may use, for a
    ``cuda`` run (or one with an injected NVML); :meth:`open` returns None elsewhere, and on a ``cuda``
    run without NVML it writes why into a ``telemetry`` record."""

    def __init__(self, sampler: nvml_mod.NvmlSampler, ctx: Context, session: BackendSession, writer: RecordWriter):
        self.sampler, self.ctx, self.session, self.writer = sampler, ctx, session, writer
        self.stage: str | None = None

    @classmethod
    def open(cls, ctx: Context, session: BackendSession, writer: RecordWriter) -> GpuTelemetry | None:
        device = ctx.spec.device
        try:
            injected = nvml_mod.injected_nvml()
        except Exception as exc:
            injected, reason = None, f"{nvml_mod.NVML_ENV} names nothing usable: {one_line(exc)}"
        else:
            reason = None
        if injected is None and not device.startswith("cuda"):
            if reason:
                print(f"llmcompare: {reason}", file=sys.stderr)
            return None
        nvml, source = injected if injected is not None else (None, "pynvml")
        if reason is None:
            reason = nvml_mod.nvml_available(nvml)
        sampler = None
        if reason is None:
            try:
                sampler = nvml_mod.NvmlSampler(interval_s=GPU_INTERVAL_S, nvml=nvml)
                gpus = sampler.open()
                if not gpus:
                    reason = "NVML shows no GPU this process may use"
            except Exception as exc:
                reason = f"NVML failed: {one_line(exc)}"
        record = {"type": "telemetry", "kind": "gpu", "source": source, "interval_s": GPU_INTERVAL_S}
        if reason is not None or sampler is None:
            writer.write(_tag({**record, "error": reason}, ctx, session))
            return None
        writer.write(_tag({**record, "gpus": sampler.gpus}, ctx, session))
        sampler.start()
        return cls(sampler, ctx, session, writer)

    def begin(self, stage: str) -> float:
        """A reading now; the stage's window starts (Unix time)."""
        self.stage = stage
        return self.sampler.begin(stage)

    def end(self) -> float:
        """A reading now; the stage's window ends; its readings are written as records."""
        end = self.sampler.end()
        self.flush(self.stage)
        self.stage = None
        return end

    def flush(self, stage: str | None) -> None:
        window = self.sampler.windows.get(stage) if stage else None
        for rec in self.sampler.drain_records():
            inside = window is not None and window[0] <= rec["t"] <= (window[1] or rec["t"])
            self.writer.write(_tag(rec, self.ctx, self.session, stage=stage if inside else None))

    def close(self) -> None:
        try:
            self.sampler.stop()
        finally:
            self.flush(None)
            self.sampler.close()
