"""The batch-1 latency driver. It runs inside a worker process, one backend at a time.

For one backend: load (timed), warm-up requests (recorded with ``warmup=True``, excluded from the
statistics; the first is the cold request), then ``repeats`` passes over the prompts. Every request
is handed the same prompt token ids, asked for exactly ``max_new_tokens`` tokens, and its actual count
is checked. Each finished request is appended to ``requests.jsonl`` at once.

The runner reads :class:`~llmcompare.backend.Capabilities`; it never branches on a backend's name.
"""

from __future__ import annotations

import gc
import resource
import sys
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from .backend import Backend, BackendConfig, Generation, clock
from .models import ResolvedModel
from .plugins import get_registry
from .prompting import Prompt
from .records import BackendRecord, RecordWriter, RequestRecord


@dataclass
class Job:
    """What a worker is asked to do; crosses the process boundary as JSON."""

    run_dir: str
    label: str
    name: str
    variant: str | None
    options: dict[str, Any]
    model: dict[str, Any]
    prompts: list[dict[str, Any]]
    max_new_tokens: int
    repeats: int
    warmup: int
    device: str = "cpu"
    trust_remote_code: bool = False
    done: list[list[Any]] = field(default_factory=list)
    """Keys ``[prompt_id, repeat]`` of measured requests already recorded (``--resume``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prompt_input(backend: Backend, prompt: Prompt) -> list[int] | str:
    """What ``generate`` is handed: our token ids, or the text for a backend that only takes text."""
    return list(prompt.token_ids) if backend.capabilities.accepts_token_ids else prompt.text


def timestamp_problem(gen: Generation, t0: float, t1: float | None = None) -> str | None:
    """Why ``gen``'s timestamps cannot be trusted, or None: one per token, monotonic, not before the
    hand-over ``t0`` (and, when given, not after the call returned at ``t1``)."""
    times = gen.token_times
    if len(times) != len(gen.token_ids):
        return f"backend returned {len(gen.token_ids)} token ids but {len(times)} timestamps"
    if any(b < a for a, b in zip(times, times[1:])) or (times and times[0] < t0):
        return "backend returned timestamps that go backwards"
    if t1 is not None and times and times[-1] > t1:
        return "backend returned timestamps after the call returned"
    return None


def timed_generate(backend: Backend, label: str, prompt: Prompt, max_new_tokens: int, repeat: int,
                   warmup: bool) -> RequestRecord:
    """One request: hand over, collect tokens with timestamps, check the count."""
    feed = prompt_input(backend, prompt)
    base = dict(backend=label, prompt_id=prompt.id, repeat=repeat, warmup=warmup,
                input_tokens=len(prompt.token_ids), expected_output_tokens=max_new_tokens)
    t0 = clock()
    try:
        gen = backend.generate(feed, max_new_tokens)
    except Exception as exc:  # one failed request is a failed request, not a failed run
        return RequestRecord(**base, output_tokens=0, ttft_s=None, e2e_s=None, error=f"{type(exc).__name__}: {exc}")
    times = [t - t0 for t in gen.token_times]
    error = timestamp_problem(gen, t0)
    return RequestRecord(
        **base,
        output_tokens=len(gen.token_ids),
        ttft_s=times[0] if times else None,
        e2e_s=times[-1] if times else None,
        token_times_s=times,
        token_ids=[int(t) for t in gen.token_ids],
        engine_prompt_tokens=gen.prompt_tokens,
        finish_reason=gen.finish_reason,
        error=error,
    )


def _peak_rss() -> int:
    """This process's peak resident set. On Linux ``VmHWM`` (reset at exec, so the worker's own peak:
    ``ru_maxrss`` would carry the parent's peak across fork+exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * (1 if sys.platform == "darwin" else 1024)


def _gpu_peak() -> int | None:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            return int(torch.cuda.max_memory_allocated())
    except Exception:
        return None
    return None


def run_job(job: Job, writer: RecordWriter) -> BackendRecord:
    """Run one backend through warm-up and measurement; always returns its status record."""
    record = BackendRecord(backend=job.label, name=job.name, variant=job.variant, status="failed",
                           device=job.device, options=dict(job.options))
    backend: Backend | None = None
    try:
        spec = get_registry().get(job.name)
        cls = spec.load_class()
        record.capabilities = asdict(cls.capabilities)
        config = BackendConfig(
            model=ResolvedModel.from_dict(job.model), variant=job.variant, options=job.options,
            device=job.device, trust_remote_code=job.trust_remote_code,
        )
        backend = cls(config)
        t = clock()
        backend.load()
        record.load_s = clock() - t
        record.rss_after_load_bytes = psutil.Process().memory_info().rss
        record.versions = dict(backend.engine_version())
        prompts = [Prompt.from_dict(p) for p in job.prompts]
        for i in range(job.warmup):
            writer.write(timed_generate(backend, job.label, prompts[i % len(prompts)], job.max_new_tokens, i, True))

        done = {(p, r) for p, r in job.done}
        start = end = None
        for rep in range(job.repeats):
            for p in prompts:
                if (p.id, rep) in done:
                    continue
                t = clock()
                start = t if start is None else start
                writer.write(timed_generate(backend, job.label, p, job.max_new_tokens, rep, False))
                end = clock()
        record.measured_wall_s = (end - start) if start is not None else 0.0
        record.peak_rss_bytes = _peak_rss()
        record.gpu_peak_bytes = _gpu_peak()
        record.status = "ok"
    except Exception as exc:
        record.error = _one_line(exc)
        traceback.print_exc()
    finally:
        if backend is not None:
            try:
                backend.unload()
            except Exception:
                traceback.print_exc()
        gc.collect()
    if record.peak_rss_bytes is None:
        record.peak_rss_bytes = _peak_rss()
    writer.write(record)
    return record


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


