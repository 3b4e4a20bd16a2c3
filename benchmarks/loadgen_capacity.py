"""How much load llmcompare's load driver can generate, and what latency it adds. Not a timed test.

    python benchmarks/loadgen_capacity.py --guidellm /tmp/guidellm-venv/bin/guidellm \\
        --json benchmarks/results/loadgen-cpu.json          # about 8 minutes on 2 cores

Every figure comes from the tools' own results: llmcompare is driven through its CLI
(``python -m llmcompare load -b openai ... --clients N -O DIR``) and read back with
``llmcompare.analysis.result.load_result(DIR)``; GuideLLM 0.8.1 through ``guidellm run ... --output kind=json``.
Both run without a warm-up (``--warmup 0`` for llmcompare; GuideLLM has none by default).

Servers, all on 127.0.0.1, each started here and stopped by PID when its runs are done:

* ``llmcompare-mock``: ``python -m llmcompare.servers.mock`` with zero latency (``--ttft-ms 0
  --itl-ms 0``); paced (``--itl-ms 50``, then 25), so that 1000 streams really overlap and each is
  offered 1000/ITL tokens/s; and with ``--ttft-ms 10 --itl-ms 1``, a TTFT to hold the measured one against.
* ``guidellm-mock``: ``guidellm mock-server --ttft-ms 0 --itl-ms 0`` (GuideLLM's own server, as shipped).
* ``llama-cpp-python``: ``python -m llama_cpp.server`` on the SmolLM2 GGUF, ``--interrupt_requests False``.

Per level: the tool's output tok/s, TTFT, TPOT, peak requests in flight and errors, and for every
process of the client and of the server the CPU it used and the time its threads waited for a CPU
during the level (see :class:`CpuSampler`), so a missed target can be traced to the client, the
server or the machine. The TTFT floor is a raw-socket client (connection open before the clock
starts, one ``sendall``, time to the first ``data:`` bytes): what any client sees from that server;
a tool's p50 TTFT minus that floor is the latency the tool itself adds.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlparse

import psutil

from llmcompare.analysis.result import load_result
from llmcompare.hardware import environment

LOOPBACK = "127.0.0.1"
SAMPLE_S = 0.2
RUN_TIMEOUT_S = 600.0
READY_TIMEOUT_S = 120.0


# ---------------------------------------------------------------- CPU of process trees
class CpuSampler:
    """Samples the CPU time of watched process trees, and their time spent waiting for a CPU, in a
    background thread.

    ``watch(pid, tree)`` adds a root; its descendants are found at every poll and given a role by
    :func:`role_of`. :meth:`cores` answers, for a time window (unix seconds), how many cores each role
    used (psutil's user + system time) and how many cores' worth of time its threads sat runnable on a
    run queue without a CPU (Linux ``/proc/PID/task/*/schedstat``, second field): the sign that the
    machine, not the process, was the limit. Counters are interpolated between samples; a process that
    started inside the window counts from zero at its creation time.
    """

    def __init__(self, interval_s: float = SAMPLE_S):
        self.interval_s = interval_s
        self.roots: dict[int, str] = {}
        self.roles: dict[int, str] = {}
        self.samples: dict[int, list[tuple[float, float]]] = {}  # pid -> (time, CPU seconds)
        self.waits: dict[int, list[tuple[float, float]]] = {}  # pid -> (time, seconds waiting for a CPU)
        self._raw_wait: dict[int, float] = {}
        self.machine: list[tuple[float, float]] = []  # (time, busy CPU seconds of the whole machine)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def watch(self, pid: int, tree: str) -> None:
        with self._lock:
            self.roots[pid] = tree
        self._poll()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def _poll(self) -> None:
        now = time.time()
        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        with self._lock:
            self.machine.append((now, busy))
            roots = dict(self.roots)
        for root, tree in roots.items():
            try:
                top = psutil.Process(root)
                procs = [top, *top.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                try:
                    with p.oneshot():
                        ct = p.cpu_times()
                        if p.pid not in self.roles:
                            created = p.create_time()
                            role = role_of(tree, p.pid == root, p.cmdline())
                except psutil.Error:
                    continue
                wait = run_delay_s(p.pid)
                with self._lock:
                    if p.pid not in self.roles:
                        self.roles[p.pid] = role
                        self.samples[p.pid] = [(created, 0.0)]
                        self.waits[p.pid] = [(created, 0.0)]
                    self.samples[p.pid].append((now, ct.user + ct.system))
                    if wait is not None:  # the sum drops when a thread exits: count only growth
                        grown = max(0.0, wait - self._raw_wait.get(p.pid, 0.0))
                        self._raw_wait[p.pid] = wait
                        self.waits[p.pid].append((now, self.waits[p.pid][-1][1] + grown))

    def cores(self, t0: float, t1: float) -> dict[str, Any]:
        """Per role and per side (``client``: every process of the load generator; ``server``), cores
        used and cores' worth of waiting for a CPU in [t0, t1]; and the whole machine's busy cores."""
        self._poll()
        span = t1 - t0
        if span <= 0:
            return {}
        used: dict[str, float] = {}
        waited: dict[str, float] = {}
        with self._lock:
            for pid, role in self.roles.items():
                for series, into in ((self.samples[pid], used), (self.waits[pid], waited)):
                    amount = _interp(series, t1) - _interp(series, t0)
                    if amount > 0:
                        into[role] = into.get(role, 0.0) + amount / span
            machine = (_interp(self.machine, t1) - _interp(self.machine, t0)) / span if self.machine else None

        def side(values: dict[str, float], server: bool) -> float:
            return round(sum(v for k, v in values.items() if k.startswith("server:") == server), 3)

        return {"by_role": {k: round(v, 3) for k, v in sorted(used.items())},
                "waiting_by_role": {k: round(v, 3) for k, v in sorted(waited.items())},
                "client": side(used, False), "server": side(used, True),
                "client_waiting": side(waited, False), "server_waiting": side(waited, True),
                "machine_busy": round(machine, 3) if machine is not None else None}


def run_delay_s(pid: int) -> float | None:
    """Seconds the threads of ``pid`` (those alive now) have spent runnable but waiting for a CPU."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as fh:
                total += int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def role_of(tree: str, is_root: bool, cmdline: Sequence[str]) -> str:
    """``tree:what`` for one process: the server, or the client tool's parent, workers, client processes."""
    if tree == "server":
        return "server:main" if is_root else "server:child"
    line = " ".join(cmdline)
    if tree == "llmcompare":
        if "llmcompare.scenarios.clients" in line:
            return "llmcompare:client process"
        if "llmcompare.runner.worker" in line:
            return "llmcompare:worker"
        return "llmcompare:cli" if is_root else "llmcompare:other"
    return f"{tree}:main" if is_root else f"{tree}:worker"


def _interp(series: list[tuple[float, float]], t: float) -> float:
    """The counter at time ``t``: linear between samples, held flat outside them."""
    if t <= series[0][0]:
        return series[0][1]
    for (ta, va), (tb, vb) in itertools.pairwise(series):
        if ta <= t <= tb:
            return va + (vb - va) * ((t - ta) / (tb - ta) if tb > ta else 1.0)
    return series[-1][1]


# ---------------------------------------------------------------- servers
@dataclass
class Server:
    """A started server: its name, the settings that matter, base URL, model name, process."""

    name: str
    config: dict[str, Any]
    url: str
    model: str
    proc: subprocess.Popen
    argv: list[str]

    def stop(self) -> None:
        """Terminate the server and every process it started, by PID; kill what outlives 10 s."""
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            kids = []
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        _, alive = psutil.wait_procs(kids, timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = READY_TIMEOUT_S) -> dict:
    """Poll ``GET url`` until it answers 200 (bounded); return its JSON."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def start_llmcompare_mock(ttft_ms: float, itl_ms: float, log_dir: str) -> Server:
    """``python -m llmcompare.servers.mock``, started as :func:`llmcompare.servers.mock.spawn` does but with
    its stderr in a log file: when a client drops streams (GuideLLM cancels the ones in flight at the
    end of each level) aiohttp prints a traceback for each, which would bury this script's output."""
    args = ["--ttft-ms", f"{ttft_ms:g}", "--itl-ms", f"{itl_ms:g}"]
    argv = [sys.executable, "-m", "llmcompare.servers.mock", "--host", LOOPBACK, "--port", "0", *args]
    with open(os.path.join(log_dir, "llmcompare-mock.log"), "ab") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
    server = Server("llmcompare-mock", {"ttft_ms": ttft_ms, "itl_ms": itl_ms}, "", "llmcompare-mock", proc, argv)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline() if sel.select(READY_TIMEOUT_S) else ""
    if not line.startswith("listening on "):
        server.stop()
        raise RuntimeError(f"llmcompare's mock server did not start (exit {proc.returncode}): {line.strip()!r}")
    server.url = line.split("listening on ", 1)[1].strip()
    return server


def _spawn_logged(argv: list[str], log_path: str) -> subprocess.Popen:
    """Start ``argv`` (no shell) with its stdout and stderr appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def start_guidellm_mock(guidellm: str, ttft_ms: float, itl_ms: float, log_dir: str) -> Server:
    port = free_port()
    argv = [guidellm, "mock-server", "--host", LOOPBACK, "--port", str(port), "--model", "mock",
            "--ttft-ms", f"{ttft_ms:g}", "--itl-ms", f"{itl_ms:g}"]
    proc = _spawn_logged(argv, os.path.join(log_dir, "guidellm-mock.log"))
    url = f"http://{LOOPBACK}:{port}"
    server = Server("guidellm-mock", {"ttft_ms": ttft_ms, "itl_ms": itl_ms}, url, "mock", proc, argv)
    try:
        wait_ready(url + "/health", proc)
    except BaseException:
        server.stop()
        raise
    return server


def start_llamacpp(gguf: str, log_dir: str) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", LOOPBACK, "--port", str(port),
            "--interrupt_requests", "False"]
    proc = _spawn_logged(argv, os.path.join(log_dir, "llama-cpp-server.log"))
    url = f"http://{LOOPBACK}:{port}"
    server = Server("llama-cpp-python", {"interrupt_requests": False}, url, "", proc, argv)
    try:
        models = wait_ready(url + "/v1/models", proc)
        server.model = str(models["data"][0]["id"])
    except BaseException:
        server.stop()
        raise
    return server


# ---------------------------------------------------------------- the raw TTFT floor
def raw_ttft_floor(server: Server, n: int, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Sequential requests from a bare socket: ms from ``sendall`` of the whole request (connection
    already open) to the first bytes of a ``data:`` event. Each prompt is distinct."""
    u = urlparse(server.url)
    times = []
    for i in range(n):
        words = " ".join(f"w{(i * 7919 + j) % 10007}" for j in range(input_tokens))
        body = json.dumps({"model": server.model, "prompt": words, "max_tokens": output_tokens, "stream": True,
                           "stream_options": {"include_usage": True}, "ignore_eos": True}).encode()
        head = (f"POST /v1/completions HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        with socket.create_connection((u.hostname, u.port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
            t = time.perf_counter()
            s.sendall(head + body)
            while b"data:" not in buf and len(buf) < 1 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError(f"{server.name} closed the stream before a data event: {buf[:200]!r}")
                buf += chunk
            times.append((time.perf_counter() - t) * 1000.0)
            for _ in range(100_000):  # drain the rest of the stream (bounded)
                if not s.recv(65536):
                    break
    times.sort()
    return {"requests": n, "ttft_ms_p50": statistics.median(times), "ttft_ms_p90": times[int(0.9 * (n - 1))],
            "ttft_ms_min": times[0]}


# ---------------------------------------------------------------- the two load generators
@dataclass
class Run:
    """One invocation of a tool against one server: its argv and its per-level figures."""

    tool: str
    server: str
    server_config: dict[str, Any]
    clients: int
    argv: list[str]
    variant: str = ""
    """Options that differ from the tool's defaults, in words (empty: as shipped)."""
    levels: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    error: str | None = None


def _run_tree(argv: list[str], tree: str, sampler: CpuSampler, log_path: str, env: dict | None = None) -> float:
    """Run ``argv`` to completion (bounded), its process tree watched by the sampler; return wall s."""
    t = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    sampler.watch(proc.pid, tree)
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
            with contextlib.suppress(psutil.Error):
                p.kill()
        proc.wait(timeout=10)
        raise RuntimeError(f"{argv[0]} ran past {RUN_TIMEOUT_S:.0f} s; see {log_path}") from None
    if rc != 0:
        with open(log_path, "rb") as fh:
            tail = fh.read()[-1500:].decode("utf-8", "replace")
        raise RuntimeError(f"exit {rc}: {tail.strip()}")
    return time.monotonic() - t


def run_llmcompare(server: Server, levels: Sequence[int], *, clients: int, duration_s: float | None,
                   requests: int | None, warmup: str, input_tokens: int, output_tokens: int, work: str,
                   sampler: CpuSampler, options: Sequence[str] = (), variant: str = "") -> Run:
    """``llmcompare load`` through its CLI, read back with ``load_result``. Besides llmcompare's own
    figures, ``window_tok_s`` counts the tokens that arrived within [level start, start + duration]
    over the duration: GuideLLM's definition (no ramp-down tail), computed here from the records."""
    out = tempfile.mkdtemp(prefix="llmcompare-", dir=work)
    argv = [sys.executable, "-m", "llmcompare", "load", "-b", "openai", "-o", f"url={server.url}/v1",
            "-o", f"model={server.model}", *(x for o in options for x in ("-o", o)), "-c", ",".join(map(str, levels)),
            *(["--duration", f"{duration_s:g}"] if duration_s else ["--requests", str(requests)]),
            *(["--warmup", warmup] if warmup != "default" else []),
            "--input-tokens", str(input_tokens), "-n", str(output_tokens), "--clients", str(clients),
            "--request-timeout", "120", "-q", "-O", out]
    run = Run("llmcompare", server.name, server.config, clients, argv, variant)
    try:
        run.wall_s = _run_tree(argv, "llmcompare", sampler, os.path.join(work, "llmcompare.log"))
    except RuntimeError as exc:
        run.error = str(exc)
        return run
    result = load_result(out)
    stages = {s.stage: s for s in result.records.stages}
    for lv in result.levels:
        st = stages[lv.stage]
        window = None
        if duration_s:
            end = st.started_at + duration_s
            arrived = sum(1 for r in result.requests if r.stage == lv.stage and r.session == st.session
                          and not r.warmup and r.error is None and r.sent_at is not None
                          for t in r.token_times_s if r.sent_at + t <= end)
            window = arrived / duration_s
        run.levels.append(_efficiency({
            "concurrency": lv.concurrency, "requests": lv.requests, "errors": lv.errors,
            "errors_by_kind": lv.errors_by_kind, "length_mismatch": lv.length_mismatch,
            "output_tokens": lv.output_tokens, "wall_s": lv.wall_s, "output_tok_s": lv.output_tok_s,
            "window_tok_s": window, "req_s": lv.req_s, "ttft_ms_p50": lv.ttft_ms.get("p50"), "ttft_ms_p99": lv.ttft_ms.get("p99"),
            "tpot_ms_p50": lv.tpot_ms.get("p50"), "e2e_ms_p50": lv.e2e_ms.get("p50"),
            "max_in_flight": lv.max_in_flight, "achieved_concurrency": lv.achieved_concurrency,
            "cpu_cores": sampler.cores(st.started_at, st.started_at + st.wall_s),
        }))
    return run


def run_guidellm(guidellm: str, server: Server, levels: Sequence[int], *, duration_s: float, input_tokens: int,
                 output_tokens: int, tokenizer_dir: str, work: str, sampler: CpuSampler) -> Run:
    out = os.path.join(tempfile.mkdtemp(prefix="guidellm-", dir=work), "benchmarks.json")
    argv = [guidellm, "run",
            "--backend", (f"kind=openai_http,target={server.url},validate_backend=false,model={server.model},"
                          "request_format=/v1/completions"),
            "--tokenizer", f"kind=hf_auto,model={tokenizer_dir}",
            "--profile", f"kind=concurrent,streams={levels[0]}",
            "--override", "profile.streams", ",".join(map(str, levels)),
            "--data", f"kind=synthetic_text,prompt_tokens={input_tokens},output_tokens={output_tokens}",
            "--constraint", f"kind=max_duration,seconds={duration_s:g}",
            "--output", f"kind=json,path={out}", "--disable-console"]
    run = Run("guidellm", server.name, server.config, 1, argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        run.wall_s = _run_tree(argv, "guidellm", sampler, os.path.join(work, "guidellm.log"), env=env)
    except RuntimeError as exc:
        run.error = str(exc)
        return run
    with open(out, encoding="utf-8") as fh:
        report = json.load(fh)
    for b in report["benchmarks"]:
        m = b["metrics"]

        def ok(name: str, m: dict = m) -> dict:
            return m[name]["successful"]

        totals = m["request_totals"]
        run.levels.append(_efficiency({
            "concurrency": b["config"]["strategy"]["streams"], "requests": totals["total"],
            "errors": totals["errored"], "incomplete": totals["incomplete"],
            "output_tokens": int(ok("output_token_count")["total_sum"]),
            "output_tokens_per_request": ok("output_token_count")["mean"], "wall_s": b["duration"],
            "output_tok_s": ok("output_tokens_per_second")["mean"], "req_s": ok("requests_per_second")["mean"],
            "ttft_ms_p50": ok("time_to_first_token_ms")["percentiles"]["p50"],
            "ttft_ms_p99": ok("time_to_first_token_ms")["percentiles"]["p99"],
            "tpot_ms_p50": ok("time_per_output_token_ms")["percentiles"]["p50"],
            "e2e_ms_p50": ok("request_latency")["percentiles"]["p50"] * 1000.0,
            "achieved_concurrency": ok("request_concurrency")["mean"],
            "worker_processes": b["config"]["strategy"].get("worker_count"),
            "cpu_cores": sampler.cores(b["start_time"], b["end_time"]),
        }))
    return run


def _efficiency(level: dict[str, Any]) -> dict[str, Any]:
    """Add ``client_tok_per_cpu_s``: output tokens per CPU-second the load generator spent."""
    cpu = level["cpu_cores"].get("client")
    level["client_tok_per_cpu_s"] = level["output_tok_s"] / cpu if cpu and level["output_tok_s"] else None
    return level


# ---------------------------------------------------------------- the plan
#: The openai adapter's way to take a field out of its requests: its extra_body is merged last.
NO_LOGPROBS = 'extra_body={"logprobs": null}'


@dataclass
class Settings:
    guidellm: str | None
    duration_s: float
    llama_duration_s: float
    input_tokens: int
    output_tokens: int
    paced_itl_ms: tuple[float, ...]
    paced_duration_s: float
    clients: tuple[int, ...]
    warmup: str
    parts: tuple[str, ...]
    quick: bool


def plan_and_run(s: Settings, work: str, sampler: CpuSampler) -> tuple[list[Run], list[dict], list[str]]:
    """Start each server in turn, run the tools against it, stop it. Returns runs, TTFT floors, notes."""
    from llmcompare.models import resolve_model

    runs: list[Run] = []
    floors: list[dict] = []
    notes: list[str] = []
    k, n, d = s.input_tokens, s.output_tokens, s.duration_s
    many = [c for c in s.clients if c > 1]
    if s.guidellm is None:
        notes.append("GuideLLM: no executable given (--guidellm PATH) or found on PATH; its runs were skipped")
    tok_dir = resolve_model(None).tokenizer_dir() if s.guidellm else None

    def serve(start, body) -> None:
        server = start()
        sampler.watch(server.proc.pid, "server")
        print(f"# {server.name} {server.config} at {server.url}", file=sys.stderr, flush=True)
        try:
            body(server)
        finally:
            server.stop()

    def lc(server, levels, clients=1, duration=d, requests=None, n_in=k, n_out=n, options=(), variant="") -> None:
        r = run_llmcompare(server, levels, clients=clients, duration_s=duration, requests=requests, warmup=s.warmup,
                           input_tokens=n_in, output_tokens=n_out, work=work, sampler=sampler, options=options,
                           variant=variant)
        runs.append(r)
        _progress(r)

    def gl(server, levels, duration=d, n_in=k, n_out=n) -> None:
        if s.guidellm is not None:
            r = run_guidellm(s.guidellm, server, levels, duration_s=duration, input_tokens=n_in, output_tokens=n_out,
                             tokenizer_dir=tok_dir, work=work, sampler=sampler)
            runs.append(r)
            _progress(r)

    def floor(server, count, n_out=n) -> None:
        f = raw_ttft_floor(server, count, k, n_out)
        floors.append({"server": server.name, "server_config": server.config, "output_tokens": n_out, **f})
        print(f"  raw-socket TTFT floor: p50 {f['ttft_ms_p50']:.2f} ms over {count}", file=sys.stderr, flush=True)

    if s.quick:  # the smoke configuration: seconds, llmcompare's mock only
        def quick(server):
            floor(server, 20)
            lc(server, [1, 8], duration=None, requests=40)
        serve(lambda: start_llmcompare_mock(0, 0, work), quick)
        return runs, floors, notes

    if "llmcompare-mock" in s.parts:
        def zero(server):  # zero latency: how fast can each client go
            floor(server, 200)
            lc(server, [1, 64, 1000])
            for c in many:
                lc(server, [1000], clients=c)
            gl(server, [1, 64])

        def paced(itl_ms: float, clients: Sequence[int]):
            def body(server):  # every stream lasts (n-1) x ITL: 1000 of them really overlap
                for c in clients:
                    lc(server, [1000], clients=c, duration=s.paced_duration_s)
            return body

        def ttft(server):  # a configured TTFT to hold the measured one against
            floor(server, 200, n_out=16)
            lc(server, [1], n_out=16)

        serve(lambda: start_llmcompare_mock(0, 0, work), zero)
        # 1000 streams offered 1000/ITL tokens/s each: at the target rate (the first ITL), then faster
        for i, itl in enumerate(s.paced_itl_ms):
            serve(lambda itl=itl: start_llmcompare_mock(0, itl, work), paced(itl, [1] if i == 0 else [1, *many]))
        serve(lambda: start_llmcompare_mock(10, 1, work), ttft)
    if "guidellm-mock" in s.parts:
        if s.guidellm is None:
            notes.append("guidellm-mock: skipped (it is GuideLLM's own server; no GuideLLM executable)")
        else:
            def gmock(server):
                floor(server, 200)
                lc(server, [1, 64, 1000])  # (more client processes cannot help: this server is the bound)
                gl(server, [1, 64, 1000])
            serve(lambda: start_guidellm_mock(s.guidellm, 0, 0, work), gmock)
    if "llamacpp" in s.parts:
        def llama(server):
            # 64 prompt and 64 output tokens, as the earlier GuideLLM figures docs/loadgen.md quotes. The runs
            # alternate level by level, so that the other jobs on this shared machine hit each alike.
            # llmcompare runs twice: as shipped, and with the `logprobs` field it asks for (to count
            # tokens) taken out of its requests, since that field costs this server time per token.
            for c in (1, 2, 4):
                lc(server, [c], duration=s.llama_duration_s, n_in=64, n_out=64)
                lc(server, [c], duration=s.llama_duration_s, n_in=64, n_out=64, options=[NO_LOGPROBS],
                   variant="logprobs off")
                gl(server, [c], duration=s.llama_duration_s, n_in=64, n_out=64)
        gguf = resolve_model(None).gguf_path()
        serve(lambda: start_llamacpp(gguf, work), llama)
    return runs, floors, notes


def _progress(r: Run) -> None:
    tool = f"{r.tool} ({r.variant})" if r.variant else r.tool
    if r.error:
        print(f"  {tool} clients={r.clients}: FAILED {r.error}", file=sys.stderr, flush=True)
        return
    for lv in r.levels:
        cpu = lv["cpu_cores"]
        print(f"  {tool} clients={r.clients} c={lv['concurrency']}: {lv['output_tok_s'] or 0:,.0f} tok/s,"
              f" TTFT p50 {lv['ttft_ms_p50'] or 0:.2f} ms, errors {lv['errors']},"
              f" client {cpu.get('client', 0):.2f} / server {cpu.get('server', 0):.2f} cores", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- verdicts and the table
TARGETS = {"concurrent_streams": 1000, "output_tok_s": 20_000, "added_ttft_ms": 1.0, "vs_guidellm": 3.0}
#: Streams keep pace when their TPOT p50 is within this share of the server's configured ITL.
PACE_TOLERANCE = 0.10


def verdicts(runs: list[Run], floors: list[dict]) -> dict[str, Any]:
    """The four targets, each with the figures that decide it and where they come from."""
    ok = [r for r in runs if not r.error]
    lc = [(r, lv) for r in ok if r.tool == "llmcompare" for lv in r.levels]
    on_mocks = [(r, lv) for r, lv in lc if r.server != "llama-cpp-python" and lv["errors"] == 0 and lv["output_tok_s"]]
    out: dict[str, Any] = {"targets": TARGETS}

    streams = []
    for r, lv in lc:  # paced levels: did `c` streams stay open together, at the server's pace, without error?
        itl = r.server_config.get("itl_ms") or 0
        if itl >= 10 and (lv["concurrency"] or 0) >= TARGETS["concurrent_streams"]:
            kept_pace = lv["tpot_ms_p50"] is not None and abs(lv["tpot_ms_p50"] - itl) <= PACE_TOLERANCE * itl
            streams.append({"server_config": r.server_config, "clients": r.clients, "concurrency": lv["concurrency"],
                            "max_in_flight": lv["max_in_flight"], "achieved_concurrency": lv["achieved_concurrency"],
                            "errors": lv["errors"], "ttft_ms_p50": lv["ttft_ms_p50"], "tpot_ms_p50": lv["tpot_ms_p50"],
                            "output_tok_s": lv["output_tok_s"], "kept_pace": kept_pace,
                            "met": lv["errors"] == 0 and lv["max_in_flight"] >= TARGETS["concurrent_streams"]
                                   and kept_pace})
    if streams:
        out["concurrent_streams"] = streams

    if on_mocks:
        best: dict[str, Any] = {}
        for r, lv in on_mocks:
            key = f"{r.server} {r.server_config}"
            if key not in best or lv["output_tok_s"] > best[key]["value"]:
                best[key] = {"value": lv["output_tok_s"], "clients": r.clients, "concurrency": lv["concurrency"],
                             "met": lv["output_tok_s"] >= TARGETS["output_tok_s"]}
        out["output_tok_s"] = best

    added = []
    for f in floors:
        for r in ok:
            same = (r.server, r.server_config) == (f["server"], f["server_config"]) and r.clients == 1
            lv = next((x for x in r.levels if x["concurrency"] == 1), None) if same else None
            if lv is None or lv["ttft_ms_p50"] is None:
                continue
            over = lv["ttft_ms_p50"] - f["ttft_ms_p50"]
            added.append({"tool": r.tool, "server": r.server, "server_config": r.server_config,
                          "ttft_ms_p50": lv["ttft_ms_p50"], "raw_floor_ttft_ms_p50": f["ttft_ms_p50"],
                          "added_over_floor_ms": over,
                          "added_over_configured_ms": lv["ttft_ms_p50"] - f["server_config"].get("ttft_ms", 0.0),
                          **({"met": over < TARGETS["added_ttft_ms"]} if r.tool == "llmcompare" else {})})
    if added:
        out["added_ttft"] = added

    ratios = []
    for g in (r for r in ok if r.tool == "guidellm"):
        mine = [(r, lv) for r, lv in lc if (r.server, r.server_config) == (g.server, g.server_config)]
        for glv in g.levels:
            for r, lv in mine:
                if r.clients == 1 and lv["concurrency"] == glv["concurrency"] and glv["output_tok_s"]:
                    ratios.append({"server": g.server, "concurrency": glv["concurrency"], "llmcompare_variant": r.variant,
                                   "llmcompare_tok_s": lv["output_tok_s"], "llmcompare_window_tok_s": lv["window_tok_s"],
                                   "guidellm_tok_s": glv["output_tok_s"],
                                   "ratio": (lv["output_tok_s"] or 0.0) / glv["output_tok_s"],
                                   "tok_per_client_cpu_s_ratio": _ratio(lv["client_tok_per_cpu_s"],
                                                                        glv["client_tok_per_cpu_s"])})
        best_g = max((lv["output_tok_s"] or 0.0 for lv in g.levels), default=0.0)
        best_l = max((lv["output_tok_s"] for r, lv in mine if lv["errors"] == 0 and lv["output_tok_s"]), default=0.0)
        if best_g and g.server != "llama-cpp-python":  # a mock: how fast can each tool drive it at all
            ratios.append({"server": g.server, "concurrency": "best level of each", "llmcompare_tok_s": best_l,
                           "guidellm_tok_s": best_g, "ratio": best_l / best_g,
                           "met": best_l / best_g >= TARGETS["vs_guidellm"]})
    if ratios:
        out["vs_guidellm"] = ratios
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def table(runs: list[Run]) -> str:
    cols = ["server", "server timing", "tool", "clients", "c", "requests", "errors", "output tok/s",
            "tok/s in window", "TTFT p50 ms",
            "TTFT p99 ms", "TPOT p50 ms", "peak in flight", "client cores used / waiting",
            "server cores used / waiting", "machine busy cores", "tok per client CPU-s"]
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in runs:
        timing = ", ".join(f"{k}={v}" for k, v in r.server_config.items())
        tool = f"{r.tool} ({r.variant})" if r.variant else r.tool
        if r.error:
            rows.append("| " + " | ".join([r.server, timing, tool, str(r.clients), f"failed: {r.error[:80]}"])
                        + " |" * (len(cols) - 4))
            continue
        for lv in r.levels:
            cpu = lv["cpu_cores"]
            rows.append("| " + " | ".join([
                r.server, timing, tool, str(r.clients), str(lv["concurrency"]), str(lv["requests"]),
                str(lv["errors"]), _f(lv["output_tok_s"], 0),
                _f(lv["window_tok_s"] if r.tool == "llmcompare" else lv["output_tok_s"], 0), _f(lv["ttft_ms_p50"], 2), _f(lv["ttft_ms_p99"], 1),
                _f(lv["tpot_ms_p50"], 2), str(lv.get("max_in_flight") or "–"),
                f"{_f(cpu.get('client'), 2)} / {_f(cpu.get('client_waiting'), 2)}",
                f"{_f(cpu.get('server'), 2)} / {_f(cpu.get('server_waiting'), 2)}", _f(cpu.get("machine_busy"), 2),
                _f(lv["client_tok_per_cpu_s"], 0)]) + " |")
    return "\n".join(rows)


def _f(x: float | None, digits: int) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guidellm", default=shutil.which("guidellm"),
                    help="the guidellm executable (GuideLLM 0.8.1 in its own venv); its runs are skipped without it")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per level on the zero-latency mocks")
    ap.add_argument("--paced-duration", type=float, default=10.0, help="seconds per level on the paced mock")
    ap.add_argument("--llama-duration", type=float, default=12.0, help="seconds per level on llama-cpp-python")
    ap.add_argument("--input-tokens", type=int, default=64)
    ap.add_argument("--output-tokens", type=int, default=128, help="per request on the mock servers")
    ap.add_argument("--paced-itl-ms", default="50,25",
                    help="ITLs of the paced mock: 1000 streams x 1000/ITL tokens/s each are offered")
    ap.add_argument("--clients", default="1,2", help="client-process counts for llmcompare (1 is always run)")
    ap.add_argument("--warmup", default="0",
                    help="llmcompare's --warmup per level (default 0, as GuideLLM; 'default' leaves its own default)")
    ap.add_argument("--parts", default="llmcompare-mock,guidellm-mock,llamacpp")
    ap.add_argument("--keep", default=None, help="keep run directories and server logs in this directory")
    ap.add_argument("--quick", action="store_true", help="smoke configuration: llmcompare's mock, a few seconds")
    args = ap.parse_args(argv)
    guidellm = args.guidellm
    if guidellm is not None and not (os.path.isfile(guidellm) and os.access(guidellm, os.X_OK)):
        print(f"GuideLLM executable {guidellm!r} not found: its runs are skipped", file=sys.stderr)
        guidellm = None
    s = Settings(guidellm=guidellm, duration_s=args.duration, llama_duration_s=args.llama_duration,
                 input_tokens=args.input_tokens, output_tokens=args.output_tokens, paced_itl_ms=tuple(float(x) for x in args.paced_itl_ms.split(",")),
                 paced_duration_s=args.paced_duration,
                 clients=tuple(sorted({1, *(int(c) for c in args.clients.split(","))})), warmup=args.warmup,
                 parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()), quick=args.quick)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = os.getloadavg()
    t0 = time.monotonic()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    with (contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(prefix="loadgen-")) as work, \
            CpuSampler() as sampler:
        runs, floors, notes = plan_and_run(s, work, sampler)
    guidellm_version = None
    if guidellm:
        guidellm_version = subprocess.run([guidellm, "--version"], check=False, capture_output=True,
                                          text=True, timeout=60).stdout.strip()
    result = {
        "command": " ".join(["python", "benchmarks/loadgen_capacity.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": started, "elapsed_s": time.monotonic() - t0, "load_average_at_start": load_before,
        "load_average_at_end": os.getloadavg(), "settings": {k: v for k, v in vars(s).items() if k != "guidellm"},
        "guidellm": guidellm_version, "notes": notes, "raw_ttft_floor": floors, "runs": [vars(r) for r in runs],
        "verdicts": verdicts(runs, floors),
        "environment": environment.capture(["aiohttp", "llama_cpp_python", "psutil"]),
    }
    print(table(runs))
    print(json.dumps(result["verdicts"], indent=1))
    for note in notes:
        print("note:", note)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
