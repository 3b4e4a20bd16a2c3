"""Managed servers: start an inference server, wait until it answers, stop it and all it spawned.

A :class:`ManagedServer` runs a server from an argv list (never a shell) on ``127.0.0.1`` and a
free port it picks. The argv may hold the placeholders ``{host}`` and ``{port}``, replaced in each
element before the start. Its stdout and stderr go to ``<log_dir>/<name>.server.log`` (appended,
one header line per start; a temporary directory when ``log_dir`` is None).

Process tree. The server does not run as our direct child: a small *guard* does
(``python -m llmcompare.servers.managed``, below), in a new session and so a new process group whose id
is the guard's pid. The guard

* asks Linux for ``PR_SET_PDEATHSIG = SIGTERM``, so it is told when the process that started it
  dies, even by SIGKILL (the run's isolation kills a hung worker that way), and makes itself a
  child subreaper, so whatever the server spawns and orphans stays in its tree;
* starts the server in its group, then waits for it;
* on SIGTERM (ours on :meth:`ManagedServer.stop`, or the kernel's when the parent died) sends
  SIGTERM to the whole group, waits ``stop_timeout_s``, runs the optional ``cleanup`` argv (e.g.
  ``docker rm -f NAME``: a container is not a child), then SIGKILLs what is left: the group's
  members and the guard's descendants that left the group (psutil);
* when the server exits on its own, kills what it left behind and exits with its status.

Our side is the backstop: :meth:`ManagedServer.stop` signals the guard, waits, and then kills the
group and every process it saw in the tree. ``stop`` runs on every exit path: the context manager,
an exception or KeyboardInterrupt during :meth:`ManagedServer.start`, and ``atexit``.

When the process that started the server is killed (a worker past its time limit, or llmcompare
itself), the guard's graceful stop still takes up to ``stop_timeout_s``. So that the next run does not
start while the old server still holds its GPU memory and port, each guard's pid is appended to the
file that ``LLMCOMPARE_SERVER_PIDS`` names (the run's isolation sets it per worker), and the parent
waits for those guards to end (:func:`wait_for_guards`), killing their groups when they do not.

Readiness (:class:`Readiness`): a GET route answering 2xx (``/health``, ``/v1/models``), or, for a
server with no such route, a POST (a first tiny completion) answering 2xx. Until then the process is
watched: if it exits, or is not ready within ``startup_timeout_s``, :class:`ServerFailed` says so on
one line with the last lines of its log.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcompare.errors import UserError

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_POLL_S = 0.2
_PORT_TRIES = 3
_ADDR_IN_USE = ("address already in use", "errno 98", "eaddrinuse")


class ServerFailed(UserError):
    """A managed server exited or did not become ready: one line, with its log's last lines."""


@dataclass(frozen=True)
class Readiness:
    """How to tell that a server is ready: ``path`` answers 2xx, to a GET (``body`` None) or to a
    POST of ``body`` as JSON. Build it with :meth:`get` or :meth:`post`."""

    path: str
    body: Mapping[str, Any] | None = None

    @classmethod
    def get(cls, path: str) -> Readiness:
        return cls(path)

    @classmethod
    def post(cls, path: str, body: Mapping[str, Any]) -> Readiness:
        return cls(path, dict(body))

    def describe(self) -> str:
        return f"GET {self.path}" if self.body is None else f"POST {self.path}"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now (the OS picks it; another process may take it before
    the server binds it, which :meth:`ManagedServer.start` handles by retrying on a new port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: str | os.PathLike, lines: int = 5, start: int = 0, width: int = 240) -> list[str]:
    """The last ``lines`` non-empty lines of a log file after byte ``start``, each cut to ``width``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(start, fh.tell() - 16384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    kept = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return [ln[:width] for ln in kept[-lines:]]


class ManagedServer:
    """One server process tree: :meth:`start` returns when it is ready, :meth:`stop` ends it.

    ``argv``: the command, with ``{host}``/``{port}`` placeholders. ``ready``: the readiness rule.
    ``env``: changes to this process's environment for the server (placeholders filled in; None
    removes a variable). ``cleanup``: an argv run after the server stopped (for what is not in its
    process tree, such as a container).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        ready: Readiness,
        *,
        log_dir: str | os.PathLike | None = None,
        env: Mapping[str, str | None] | None = None,
        startup_timeout_s: float = 300.0,
        stop_timeout_s: float = 10.0,
        cleanup: Sequence[str] | None = None,
    ):
        if not argv:
            raise ValueError("a managed server needs a command")
        self.name = name
        self.argv_template = tuple(argv)
        self.ready = ready
        self.env = dict(env or {})
        self.startup_timeout_s = float(startup_timeout_s)
        self.stop_timeout_s = float(stop_timeout_s)
        self.cleanup_template = tuple(cleanup) if cleanup else ()
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        if log_dir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="llmcompare-server-")
            log_dir = self._tmpdir.name
        self.log_path = Path(log_dir) / f"{_safe(name)}.server.log"
        self.host = LOOPBACK
        self.port: int | None = None
        self.argv: list[str] = []
        self.startup_s: float | None = None
        """Seconds from the start of the process to the first ready answer (last attempt)."""
        self._proc: subprocess.Popen | None = None
        self._started_at = 0.0
        self._log_start = 0

    # ---- public surface ----
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash); valid once started."""
        if self.port is None:
            raise RuntimeError(f"server {self.name!r} is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The guard's pid, which is also the process group id of the whole server tree."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> ManagedServer:
        """Start the server and return once it is ready; raise :class:`ServerFailed` otherwise.

        Nothing is left running when this raises (KeyboardInterrupt included).
        """
        if self._proc is not None:
            raise RuntimeError(f"server {self.name!r} is already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(_PORT_TRIES):
            try:
                self._launch(free_port(self.host))
                self._wait_ready()
                break
            except ServerFailed:
                self.stop()
                if attempt + 1 < _PORT_TRIES and _port_taken(self.log_tail(20)):
                    continue
                raise
            except BaseException:
                self.stop()
                raise
        self._warn_if_not_loopback()
        return self

    def stop(self) -> None:
        """Stop the whole tree: SIGTERM through the guard, wait, then SIGKILL what is left.

        Safe to call more than once, and on a server that never started.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _LIVE.discard(self)
        tree = _tree(proc.pid)
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(self.stop_timeout_s + _CLEANUP_TIMEOUT_S + 5.0)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)  # the guard hung: the group id is still its pid, so this is safe
            except ProcessLookupError:
                pass
        proc.wait()  # reap the guard here, so that psutil below never reaps our own child
        _kill_all([p for p in tree if p.pid != proc.pid])

    def pids(self) -> list[int]:
        """Live processes of the server tree (the guard, the server, their children)."""
        if self._proc is None:
            return []
        return sorted(p.pid for p in _tree(self._proc.pid))

    def listening(self) -> set[tuple[str, int]]:
        """The ``(address, port)`` pairs the server tree listens on (TCP)."""
        import psutil

        out = set()
        for pid in self.pids():
            try:
                conns = psutil.Process(pid).net_connections(kind="tcp")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out.update((c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN)
        return out

    def log_tail(self, lines: int = 5) -> list[str]:
        """The last lines the server wrote since its latest start."""
        return log_tail(self.log_path, lines, start=self._log_start)

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals ----
    def _launch(self, port: int) -> None:
        self.port = port
        self.argv = [_fill(a, self.host, port) for a in self.argv_template]
        guard_config = {
            "parent": os.getpid(),
            "grace": self.stop_timeout_s,
            "cleanup": [_fill(a, self.host, port) for a in self.cleanup_template],
        }
        command = [sys.executable, "-m", "llmcompare.servers.managed", json.dumps(guard_config), "--", *self.argv]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = _fill(value, self.host, port)
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"# llmcompare {stamp}: starting {command_line(self.argv, limit=None)}\n".encode())
            log.flush()
            self._log_start = log.tell()
            self._proc = _spawn(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        pids_file = os.environ.get(PIDS_ENV)
        if pids_file:
            with open(pids_file, "a", encoding="ascii") as fh:
                fh.write(f"{self._proc.pid}\n")
        self._started_at = time.monotonic()
        _LIVE.add(self)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = self._started_at + self.startup_timeout_s
        while True:
            status = self._proc.poll()
            if status is not None:
                raise self._failure(f"exited with status {_status(status)} before it was ready")
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._failure(
                    f"was not ready ({self.ready.describe()} answering 2xx) within {self.startup_timeout_s:g} s"
                )
            if _probe(self.url + self.ready.path, self.ready.body, timeout=max(0.5, min(left, 600.0))):
                self.startup_s = time.monotonic() - self._started_at
                return
            time.sleep(_POLL_S)

    def _failure(self, what: str) -> ServerFailed:
        tail = " | ".join(self.log_tail(5)) or "(it wrote nothing)"
        return ServerFailed(
            f"server {self.name!r} {what}; last log lines: {tail}; "
            f"check the command ({command_line(self.argv)}) and the full log: {self.log_path}"
        )

    def _warn_if_not_loopback(self) -> None:
        exposed = sorted(f"{ip}:{port}" for ip, port in self.listening() if ip not in (LOOPBACK, "::1"))
        if exposed:
            warnings.warn(f"server {self.name!r} listens beyond the loopback interface: {', '.join(exposed)}",
                          stacklevel=3)


# ---- process helpers (parent side) ----

_CLEANUP_TIMEOUT_S = 60.0
PIDS_ENV = "LLMCOMPARE_SERVER_PIDS"
"""Names a file to which each guard started in this process appends its pid (see the module docstring)."""
_LIVE: set[ManagedServer] = set()
_SPAWNER: concurrent.futures.ThreadPoolExecutor | None = None
_SPAWNER_LOCK = threading.Lock()


def _spawn(command: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """``Popen`` on one thread that lives as long as the process.

    Linux sends ``PR_SET_PDEATHSIG`` when the *thread* that forked the child ends, not the process:
    a server started from a short-lived thread would be told its parent died when that thread does.
    """
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmcompare-spawn")
    return _SPAWNER.submit(subprocess.Popen, command, **popen_kwargs).result()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


def _tree(pid: int) -> list:
    """psutil handles for ``pid``, its descendants and the other members of its process group."""
    import psutil

    try:
        root = psutil.Process(pid)
        found = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        found = {}
    for p in psutil.process_iter():
        try:
            if p.pid not in found and os.getpgid(p.pid) == pid:
                found[p.pid] = p
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return [p for p in found.values() if _alive(p)]


def _alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pid_alive(pid: int) -> bool:
    """:func:`_alive` for a pid (a zombie counts as gone: its tree has been torn down)."""
    import psutil

    try:
        return _alive(psutil.Process(pid))
    except psutil.Error:
        return False


def _kill_all(procs: list) -> None:
    import psutil

    for p in procs:
        try:
            p.kill()  # psutil checks the pid was not reused before it signals
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5.0)


def _killpg(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _probe(url: str, body: Mapping[str, Any] | None, timeout: float) -> bool:
    """True when ``url`` answers 2xx; never raises for a server that is not up yet."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"} if body is not None else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(req, timeout=timeout if body is not None else min(timeout, 5.0)) as resp:
            resp.read()
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def command_line(argv: Sequence[str], limit: int | None = 400) -> str:
    """``argv`` as one shell-quoted line (newlines shown as ``\\n``), cut to ``limit`` characters."""
    line = shlex.join(argv).replace("\n", "\\n")
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def _fill(arg: str, host: str, port: int) -> str:
    return arg.replace("{host}", host).replace("{port}", str(port))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _status(code: int) -> str:
    if code < 0:
        return signal.Signals(-code).name
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        return f"{code} ({signal.Signals(code - 128).name})"
    return str(code)


def _port_taken(lines: list[str]) -> bool:
    return any(marker in line.lower() for line in lines for marker in _ADDR_IN_USE)


def wait_for_guards(pids_file: str | os.PathLike, timeout_s: float) -> list[int]:
    """Wait until every guard listed in ``pids_file`` (one pid a line) has ended, which happens once
    its server tree is gone; after ``timeout_s``, SIGKILL the process group of each one still there.
    The file is removed. Returns the pids that had to be killed. Called by the parent of a worker
    that has just been killed or has ended, so a guard's pid cannot have been reused yet in practice."""
    path = Path(pids_file)
    try:
        pids = sorted({int(line) for line in path.read_text(encoding="ascii").split() if line.strip().isdigit()})
    except OSError:
        return []
    deadline = time.monotonic() + timeout_s
    live = [p for p in pids if pid_alive(p)]
    while live and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        live = [p for p in live if pid_alive(p)]
    for pid in live:
        _killpg(pid)
    path.unlink(missing_ok=True)
    return live


# ---- the guard (child side): python -m llmcompare.servers.managed CONFIG_JSON -- ARGV... ----

class _Stop(Exception):
    pass


def _guard(config: dict[str, Any], argv: list[str]) -> int:
    """Run ``argv`` and take its whole group down with it; see the module docstring."""
    def on_signal(signum: int, frame: object) -> None:
        raise _Stop

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    libc = ctypes.CDLL(None, use_errno=True)
    for option, value in ((_PR_SET_PDEATHSIG, signal.SIGTERM), (_PR_SET_CHILD_SUBREAPER, 1)):
        if libc.prctl(option, value, 0, 0, 0) != 0:
            print(f"llmcompare guard: prctl({option}) failed: errno {ctypes.get_errno()}", file=sys.stderr)
            return 70
    if os.getppid() != config["parent"]:
        return 71  # the parent died before prctl took effect: do not start an orphan
    server: subprocess.Popen | None = None
    try:
        try:
            server = subprocess.Popen(argv)
        except OSError as exc:
            print(f"llmcompare guard: cannot start {argv[0]!r}: {exc}", file=sys.stderr, flush=True)
            return 127
        status = server.wait()
        _guard_shutdown(config, server, graceful=False)
        return status if status >= 0 else 128 - status
    except _Stop:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        _guard_shutdown(config, server, graceful=True)
        return 0


def _guard_shutdown(config: dict[str, Any], server: subprocess.Popen | None, graceful: bool) -> None:
    me = os.getpid()
    tree = _tree(me)  # before anything dies and is reaped
    if graceful:
        _killpg(me, signal.SIGTERM)  # the server and everything it spawned in the group; we ignore it
        if server is not None:
            try:
                server.wait(float(config["grace"]))
            except subprocess.TimeoutExpired:
                server.kill()
    if config.get("cleanup"):
        try:
            subprocess.run(config["cleanup"], stdin=subprocess.DEVNULL, timeout=_CLEANUP_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"llmcompare guard: cleanup {config['cleanup']!r} failed: {exc}", file=sys.stderr, flush=True)
    if server is not None:
        server.wait()  # reap our child ourselves, so that psutil below never does
    left = {p.pid: p for p in [*tree, *_tree(me)] if p.pid != me and (server is None or p.pid != server.pid)}
    _kill_all(list(left.values()))


def _main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m llmcompare.servers.managed CONFIG_JSON -- COMMAND [ARGS...] (internal: the server guard)",
              file=sys.stderr)
        return 2
    return _guard(json.loads(args[0]), args[2:])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
