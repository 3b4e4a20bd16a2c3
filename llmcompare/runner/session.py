"""One backend's life, as one context manager: registry → class → config → timed load → versions →
memory probes → unload → status record.

Every driver (latency, load), the conformance kit and ``benchmarks/overhead.py`` go through it::

    with BackendSession(request, model, device="cpu") as session:
        record = session.request(prompt, max_new_tokens=64, stage="latency", request_id="p1/r0")
    session.record          # BackendRecord: status, error, load time, versions, memory

An engine failure while loading or running does not escape: ``__exit__`` marks the record failed with
a one-line error and unloads, and the exception is swallowed (a failing backend is a row of the
results). Any use of a session whose load failed raises :class:`SessionFailed`, which is swallowed the
same way. Pass ``raise_errors=True`` to see the exception instead (the conformance kit does).

Both generation paths are offered whatever the backend implements: ``generate`` (sync) and
``astream`` (async chunks). An async-only backend (an HTTP client) runs on an event loop the session
owns, in one background thread, for its whole life; a sync-only backend serves ``astream`` from one
worker thread, so its requests queue one at a time, as they would in the engine.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import resource
import sys
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, TypeVar

from llmcompare.backend import Backend, BackendConfig, BackendSpec, Chunk, Generation, Scores, clock, collect
from llmcompare.config.spec import BackendRequest
from llmcompare.errors import RequestFailed
from llmcompare.limits import MAX_COUNT, MAX_ERROR_TEXT, MAX_FINISH_REASON, safe_text
from llmcompare.models import ResolvedModel
from llmcompare.models.prompting import Prompt
from llmcompare.plugins import get_registry
from llmcompare.records import BackendRecord, RecordWriter, RequestRecord
from llmcompare.redact import redact_mapping, redact_text, secret_values

T = TypeVar("T")


class SessionFailed(Exception):
    """The backend failed to load; its session cannot serve requests."""


def one_line(exc: BaseException) -> str:
    """``exc`` as one line of valid UTF-8, at most :data:`~llmcompare.limits.MAX_ERROR_TEXT` characters
    of its message (it may quote a server)."""
    msg = safe_text(str(exc), MAX_ERROR_TEXT * 2).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


def gather(chunks: Sequence[Chunk]) -> Generation:
    """:func:`~llmcompare.backend.collect`, keeping the count cross-check an adapter may put on a chunk
    (its ``count_check`` attribute, e.g. the HTTP clients' ``CheckedChunk``) as ``gen.count_check``."""
    gen = collect(chunks)
    check = None
    for c in chunks:
        check = getattr(c, "count_check", None) or check
    gen.count_check = check  # type: ignore[attr-defined]
    return gen


class _Hidden:
    """Values to redact, kept out of reprs."""

    __slots__ = ("values",)

    def __init__(self, values: list[str]):
        self.values = values

    def __repr__(self) -> str:
        return "<hidden>"


def _count(value: object) -> int | None:
    """A count an engine or server reported, or None when it is not one (see ``llmcompare.limits``)."""
    return value if type(value) is int and 0 <= value <= MAX_COUNT else None


def timestamp_problem(gen: Generation, t0: float, t1: float | None = None) -> str | None:
    """Why ``gen``'s timestamps cannot be trusted, or None: one per token (per id when the engine gives
    ids), monotonic, not before the hand-over ``t0`` (and, when given, not after the return at ``t1``)."""
    times = gen.token_times
    if gen.count_source == "ids" and len(times) != len(gen.token_ids):
        return f"backend returned {len(gen.token_ids)} token ids but {len(times)} timestamps"
    if any(b < a for a, b in zip(times, times[1:])) or (times and times[0] < t0):
        return "backend returned timestamps that go backwards"
    if t1 is not None and times and times[-1] > t1:
        return "backend returned timestamps after the call returned"
    return None


def peak_rss() -> int:
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


def gpu_memory() -> dict[str, Any]:
    """Device memory in use: torch's allocator peaks (where the engine used torch on CUDA) and the
    used memory of every GPU this process may use through NVML (whole devices: the driver may not give
    per-process figures). ``nvml_used`` is their sum, so a server spread over two GPUs (tensor
    parallel, or one replica per GPU) counts both; ``nvml_used_per_gpu`` maps each NVML index to its
    figure. The GPUs are those ``CUDA_VISIBLE_DEVICES`` names (indices or UUIDs), else all of them.

    ``nvml_process_used`` is the part of it NVML gives to this process and its descendants (a
    server's engine processes), where the driver reports per-process memory: unlike the whole-device
    figures, it leaves out other programs on the same GPU. Absent where none of them is listed."""
    out: dict[str, Any] = {}
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            out["torch_peak_allocated"] = int(torch.cuda.max_memory_allocated())
            out["torch_peak_reserved"] = int(torch.cuda.max_memory_reserved())
    except Exception:
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            per_gpu: dict[str, int] = {}
            ours: list[int] = []
            tree = process_tree(os.getpid())
            for h in _visible_nvml_handles(pynvml):
                per_gpu[str(pynvml.nvmlDeviceGetIndex(h))] = int(pynvml.nvmlDeviceGetMemoryInfo(h).used)
                try:
                    processes = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                except Exception:
                    processes = []
                # usedGpuMemory is None where the driver withholds it (NVML_VALUE_NOT_AVAILABLE)
                ours += [int(p.usedGpuMemory) for p in processes if p.pid in tree and p.usedGpuMemory is not None]
            if per_gpu:
                out["nvml_used"] = sum(per_gpu.values())
                out["nvml_used_per_gpu"] = per_gpu
            if ours:
                out["nvml_process_used"] = sum(ours)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    return out


def process_tree(root: int) -> set[int]:
    """``root`` and every process descended from it (``{root}`` alone if psutil cannot read them)."""
    import psutil

    try:
        return {root, *(child.pid for child in psutil.Process(root).children(recursive=True))}
    except psutil.Error:
        return {root}


def _visible_nvml_handles(pynvml: Any) -> list[Any]:
    """NVML handles of the GPUs ``CUDA_VISIBLE_DEVICES`` names (all when it is unset); a name NVML
    does not know ends the list, as it does for CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    handles = []
    for name in (v.strip() for v in visible.split(",")):
        if not name or name.startswith("-"):
            break  # CUDA stops at the first invalid entry
        try:
            handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(name)) if name.isdigit()
                           else pynvml.nvmlDeviceGetHandleByUUID(name))
        except Exception:
            break
    return handles


class BackendSession:
    """A loaded backend and its status record. See the module docstring."""

    def __init__(self, request: BackendRequest, model: ResolvedModel, *, device: str = "cpu",
                 trust_remote_code: bool = False, logs_dir: str | None = None,
                 writer: RecordWriter | None = None, raise_errors: bool = False,
                 spec: BackendSpec | None = None, prefix_cache: bool = False):
        self.backend_request = request
        self.model = model
        self.device = device
        self.trust_remote_code = trust_remote_code
        self.logs_dir = logs_dir
        self.writer = writer
        self.raise_errors = raise_errors
        self.spec = spec
        self.prefix_cache = prefix_cache
        """The run's workload needs the prefix cache on (:attr:`BackendConfig.prefix_cache`)."""
        self.id = uuid.uuid4().hex[:12]
        self._secrets = _Hidden(secret_values(dict(request.options)))
        """Secret values in the options (a URL's password, keys in ``extra_body``): never shown."""
        self.record = BackendRecord(backend=request.label, name=request.name, variant=request.variant,
                                    status="failed", device=device, options=redact_mapping(dict(request.options)),
                                    session=self.id, python=sys.executable)
        self.epoch_offset = time.time() - clock()
        """Add to a :data:`clock` reading to get Unix time."""
        self._backend: Backend | None = None
        self._failed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._serial: ThreadPoolExecutor | None = None

    # ---- lifecycle ----
    def __enter__(self) -> BackendSession:
        try:
            self._open()
        except Exception as exc:
            self._fail(exc)
            self._close()
            if self.raise_errors:
                raise
        return self

    def __exit__(self, et, exc, tb) -> bool:
        if exc is not None and isinstance(exc, Exception) and not isinstance(exc, SessionFailed):
            self._fail(exc)
        self._close()
        if isinstance(exc, SessionFailed):
            return not self.raise_errors
        return isinstance(exc, Exception) and not self.raise_errors

    def _open(self) -> None:
        spec = self.spec or get_registry().get(self.backend_request.name)
        self.spec = spec
        self.record.capabilities = asdict(spec.capabilities)
        cls = spec.load_class()
        config = BackendConfig(model=self.model, variant=self.backend_request.variant, options=dict(self.backend_request.options),
                               device=self.device, trust_remote_code=self.trust_remote_code, logs_dir=self.logs_dir,
                               label=self.backend_request.label, prefix_cache=self.prefix_cache)
        backend = cls(config)
        self._backend = backend
        t = clock()
        backend.load()
        self.record.load_s = clock() - t
        self.record.versions = {safe_text(k, 100): self._redact(safe_text(v, 500))
                                for k, v in dict(backend.engine_version()).items()}

    def _fail(self, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            self.record.status = "failed"
            self.record.error = self._redact(one_line(exc))
            # the traceback quotes the message, which may quote a secret
            print(self._redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="")

    def _close(self) -> None:
        backend, self._backend = self._backend, None
        self.record.peak_rss_bytes = peak_rss()
        self.record.gpu_memory = gpu_memory()
        # torch's peak where the engine allocates through torch; else what NVML gives this process tree
        # (llama.cpp, a server's engine), which includes the CUDA context
        self.record.gpu_peak_bytes = (self.record.gpu_memory.get("torch_peak_allocated")
                                      or self.record.gpu_memory.get("nvml_process_used"))
        if backend is not None:
            try:
                if hasattr(backend, "aclose") and self._loop is not None:
                    self._submit(backend.aclose()).result(timeout=30)
            except Exception:
                traceback.print_exc()
            try:
                backend.unload()
            except Exception as exc:
                self._fail(exc)
        self._stop_loop()
        gc.collect()
        if not self._failed:
            self.record.status = "ok"
        if self.writer is not None:
            self.writer.write(self.record)

    def _redact(self, text: str) -> str:
        return redact_text(text, self._secrets.values)

    @property
    def ok(self) -> bool:
        return self._backend is not None and not self._failed

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise SessionFailed(self.record.error or "the backend is not loaded")
        return self._backend

    @property
    def concurrent(self) -> bool:
        """Many requests may be in flight at once (the backend declares it and streams asynchronously)."""
        return bool(self.spec and self.spec.capabilities.concurrent and hasattr(self._backend, "astream"))

    # ---- the event loop the async path runs on ----
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            self._loop_thread = threading.Thread(target=run, name=f"llmcompare-loop-{self.backend_request.label}", daemon=True)
            self._loop_thread.start()
            ready.wait()
            self._loop = loop
        return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T]):
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the session's event loop and wait for it (drivers' async code runs here)."""
        return self._submit(coro).result()

    def _stop_loop(self) -> None:
        if self._loop is not None:
            loop = self._loop
            loop.call_soon_threadsafe(loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=10)
            loop.close()
            self._loop = None
        if self._serial is not None:
            self._serial.shutdown(wait=False, cancel_futures=True)
            self._serial = None

    # ---- generation ----
    def feed(self, prompt: Prompt) -> list[int] | str:
        """What the backend is handed: our token ids, or the text for a backend that only takes text."""
        assert self.spec is not None
        return list(prompt.token_ids) if self.spec.capabilities.accepts_token_ids else prompt.text

    @staticmethod
    def _stop_kw(stop_at_eos: bool) -> dict[str, bool]:
        """The keyword is passed only when asked for, so a backend without ``natural_stop`` never sees it."""
        return {"stop_at_eos": True} if stop_at_eos else {}

    def check_natural_stop(self) -> None:
        assert self.spec is not None
        if not self.spec.capabilities.natural_stop:
            raise RequestFailed("unsupported", f"backend {self.spec.name!r} cannot stop at EOS"
                                " (it does not declare Capabilities.natural_stop)")

    def generate(self, feed: Sequence[int] | str, max_new_tokens: int, *, stop_at_eos: bool = False) -> Generation:
        """Synchronous generation through whichever path the backend has."""
        backend = self.backend
        if hasattr(backend, "generate"):
            return backend.generate(feed, max_new_tokens, **self._stop_kw(stop_at_eos))
        return self.run(self._collect(feed, max_new_tokens, stop_at_eos))

    async def _collect(self, feed: Sequence[int] | str, max_new_tokens: int, stop_at_eos: bool = False) -> Generation:
        return gather([c async for c in self.backend.astream(feed, max_new_tokens, **self._stop_kw(stop_at_eos))])

    async def astream(self, feed: Sequence[int] | str, max_new_tokens: int, *,
                      stop_at_eos: bool = False) -> AsyncIterator[Chunk]:
        """Chunks as they arrive; a sync-only backend answers from one worker thread, one at a time."""
        backend = self.backend
        if hasattr(backend, "astream"):
            async for chunk in backend.astream(feed, max_new_tokens, **self._stop_kw(stop_at_eos)):
                yield chunk
            return
        if self._serial is None:
            self._serial = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmcompare-serial")
        call = functools.partial(backend.generate, feed, max_new_tokens, **self._stop_kw(stop_at_eos))
        gen = await asyncio.get_running_loop().run_in_executor(self._serial, call)
        for i, t in enumerate(gen.token_times):
            last = i == len(gen.token_times) - 1
            ids = gen.token_ids[i:i + 1] if gen.count_source == "ids" else []
            yield Chunk(ids, t, n_tokens=1, finish_reason=gen.finish_reason if last else None,
                        prompt_tokens=gen.prompt_tokens if last else None,
                        engine_output_tokens=gen.engine_output_tokens if last else None,
                        count_source=gen.count_source if gen.count_source != "ids" else None)

    def score(self, token_ids: Sequence[int], start: int, top_k: int = 0) -> Scores:
        """The backend's own teacher-forced log-probabilities (``score``, or ``ascore`` on the loop)."""
        assert self.spec is not None
        if not self.spec.capabilities.scores:
            raise RequestFailed("unsupported", f"backend {self.spec.name!r} gives no log-probabilities")
        backend = self.backend
        if hasattr(backend, "score"):
            return backend.score(token_ids, start, top_k)
        return self.run(backend.ascore(token_ids, start, top_k))

    # ---- timed requests, as records ----
    def request(self, prompt: Prompt, max_new_tokens: int, *, stage: str = "latency", request_id: str = "",
                repeat: int = 0, warmup: bool = False, stop_at_eos: bool = False) -> RequestRecord:
        """One timed request at batch 1: hand over, collect tokens with timestamps, check the count.
        With ``stop_at_eos`` the backend decodes greedily until EOS (the fidelity pass)."""
        feed = self.feed(prompt)
        t0 = clock()
        try:
            if stop_at_eos:
                self.check_natural_stop()
            gen = self.generate(feed, max_new_tokens, stop_at_eos=stop_at_eos)
        except SessionFailed:
            raise
        except Exception as exc:  # one failed request is a failed request, not a failed run
            return self.failed_record(prompt, max_new_tokens, exc, stage=stage, request_id=request_id,
                                      repeat=repeat, warmup=warmup, sent=t0)
        return self.make_record(prompt, max_new_tokens, gen, t0, stage=stage, request_id=request_id,
                                repeat=repeat, warmup=warmup, t1=clock())

    async def arequest(self, prompt: Prompt, max_new_tokens: int, *, stage: str, request_id: str,
                       scheduled: float | None = None, warmup: bool = False,
                       timeout_s: float | None = None) -> RequestRecord:
        """One timed request through the async path, for the load driver. ``scheduled`` is the
        :data:`clock` time it was due (open loop); latencies are kept from the actual send and the
        record carries both times, so reports can count from the scheduled one."""
        feed = self.feed(prompt)
        t0 = clock()
        chunks: list[Chunk] = []

        async def consume() -> None:
            async for c in self.astream(feed, max_new_tokens):
                chunks.append(c)

        try:
            await (asyncio.wait_for(consume(), timeout_s) if timeout_s else consume())
        except SessionFailed:
            raise
        except Exception as exc:
            if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and not isinstance(exc, RequestFailed):
                exc = RequestFailed("timeout_total", f"no answer within {timeout_s:g} s")
            rec = self.failed_record(prompt, max_new_tokens, exc, stage=stage, request_id=request_id,
                                     warmup=warmup, sent=t0, scheduled=scheduled)
            partial = gather(chunks)
            rec.token_times_s = [t - t0 for t in partial.token_times]
            rec.token_ids = [int(t) for t in partial.token_ids]
            rec.output_tokens = len(partial.token_times)
            return rec
        return self.make_record(prompt, max_new_tokens, gather(chunks), t0, stage=stage, request_id=request_id,
                                warmup=warmup, scheduled=scheduled)

    def make_record(self, prompt: Prompt, max_new_tokens: int, gen: Generation, t0: float, *, stage: str,
                    request_id: str, repeat: int = 0, warmup: bool = False, scheduled: float | None = None,
                    t1: float | None = None) -> RequestRecord:
        """The record of one finished request. The output count is the number of timestamps the
        backend gave (one per token: the adapters spread a server's own count over them, bounded by
        ``llmcompare.limits``), never a figure taken on trust; the engine's own counts are kept only
        when they are counts, and an adapter's count cross-check (``gen.count_check``) is kept as is."""
        times = [t - t0 for t in gen.token_times]
        error = timestamp_problem(gen, t0, t1)
        finish = gen.finish_reason
        return RequestRecord(
            backend=self.backend_request.label, prompt_id=prompt.id, repeat=repeat, warmup=warmup,
            input_tokens=len(prompt.token_ids), expected_output_tokens=max_new_tokens, output_tokens=len(times),
            ttft_s=times[0] if times else None, e2e_s=times[-1] if times else None, token_times_s=times,
            token_ids=[int(t) for t in gen.token_ids], engine_prompt_tokens=_count(gen.prompt_tokens),
            engine_output_tokens=_count(gen.engine_output_tokens), count_source=gen.count_source,
            finish_reason=safe_text(finish, MAX_FINISH_REASON) if finish is not None else None,
            error=error, error_kind="timestamps" if error else None,
            stage=stage, request_id=request_id, session=self.id,
            scheduled_at=(scheduled if scheduled is not None else t0) + self.epoch_offset,
            sent_at=t0 + self.epoch_offset, count_check=getattr(gen, "count_check", None),
        )

    def failed_record(self, prompt: Prompt, max_new_tokens: int, exc: BaseException, *, stage: str, request_id: str,
                      sent: float, repeat: int = 0, warmup: bool = False, scheduled: float | None = None) -> RequestRecord:
        return RequestRecord(
            backend=self.backend_request.label, prompt_id=prompt.id, repeat=repeat, warmup=warmup,
            input_tokens=len(prompt.token_ids), expected_output_tokens=max_new_tokens, output_tokens=0,
            ttft_s=None, e2e_s=None, error=self._redact(one_line(exc)),
            error_kind=exc.kind if isinstance(exc, RequestFailed) else "engine",
            stage=stage, request_id=request_id, session=self.id,
            scheduled_at=(scheduled if scheduled is not None else sent) + self.epoch_offset,
            sent_at=sent + self.epoch_offset,
        )
