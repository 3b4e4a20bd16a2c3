"""Backends used by the test suite, loaded through LLMCOMPARE_PLUGINS like any local plugin.

``crashy`` kills its own process (SIGKILL, as the OOM killer would) after ``crash_after`` requests,
once per ``marker`` file (with an ``api_key``, its last line names the key's last four characters);
``hangs`` never returns from its ``hang_after``-th request; ``slowserver`` does the same with a managed
server beside it that takes ``stop_s`` seconds to stop on SIGTERM; ``tiredecho`` is echo that tires:
after ``slow_after`` requests, each one's first token comes ``slow_step_ms`` later than the one before (a
server whose latency keeps rising: never steady).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from llmcompare import hookimpl
from llmcompare.backend import BackendSpec, Capabilities, OptionSpec
from llmcompare.backends.echo import EchoBackend


class CrashyBackend(EchoBackend):
    def generate(self, prompt, max_new_tokens):
        self.calls = getattr(self, "calls", 0) + 1
        marker = self.config.options.get("marker")
        if self.calls > self.config.options["crash_after"] and not (marker and os.path.exists(marker)):
            if marker:
                open(marker, "w").close()
            if self.config.options.get("api_key"):  # the worker's last line: what it was handed (its end only)
                print(f"crashy: crashing with an api_key ending in {self.config.options['api_key'][-4:]}", flush=True)
            os.kill(os.getpid(), getattr(signal, self.config.options.get("signal") or "SIGKILL"))
        return super().generate(prompt, max_new_tokens)


class HangingBackend(EchoBackend):
    def generate(self, prompt, max_new_tokens):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > self.config.options["hang_after"]:
            time.sleep(3600)
        return super().generate(prompt, max_new_tokens)


SLOW_SERVER = r"""
import http.server, os, signal, sys, time
print("server pid", os.getpid(), flush=True)
def slow_stop(signum, frame):
    time.sleep(float(sys.argv[2]))  # a server's graceful shutdown: it still holds its memory meanwhile
    os._exit(0)
signal.signal(signal.SIGTERM, slow_stop)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


class SlowServerBackend(HangingBackend):
    """``hangs`` with a managed server that needs ``stop_s`` seconds to stop (a GPU server freeing memory)."""

    def load(self):
        import sys

        from llmcompare.servers import ManagedServer, Readiness

        super().load()
        self.server = ManagedServer("slowserver", [sys.executable, "-c", SLOW_SERVER, "{port}",
                                                   str(self.config.options["stop_s"])],
                                    Readiness.get("/"), log_dir=self.config.logs_dir).start()

    def unload(self):
        self.server.stop()
        super().unload()


class SyncEcho(EchoBackend):
    """echo with only the sync path: the load driver must serve it one request at a time."""

    @property
    def astream(self):
        raise AttributeError("astream")


class TiredEcho(EchoBackend):
    """echo whose requests, past the first ``slow_after``, each wait ``slow_step_ms`` more than the last."""

    calls = 0

    async def astream(self, prompt, max_new_tokens, *, stop_at_eos=False):
        self.calls += 1
        extra = max(0, self.calls - self.config.options["slow_after"]) * self.config.options["slow_step_ms"] / 1000.0
        if extra:
            await asyncio.sleep(extra)
        async for chunk in super().astream(prompt, max_new_tokens, stop_at_eos=stop_at_eos):
            yield chunk


@hookimpl
def register_backends(register):
    register(BackendSpec(
        name="crashy", target="llmcompare_testplugins:CrashyBackend", install="(test plugin)",
        options={"crash_after": OptionSpec(int, 3), "marker": OptionSpec(str, None), "signal": OptionSpec(str, None),
                 "api_key": OptionSpec(str, None)},
        crash_hint="a test crash: read the plugin's docs",
    ))
    register(BackendSpec(
        name="hangs", target="llmcompare_testplugins:HangingBackend", install="(test plugin)",
        options={"hang_after": OptionSpec(int, 2)},
    ))
    register(BackendSpec(
        name="slowserver", target="llmcompare_testplugins:SlowServerBackend", install="(test plugin)",
        options={"hang_after": OptionSpec(int, 2), "stop_s": OptionSpec(float, 3.0)},
    ))
    register(BackendSpec(
        name="syncecho", target="llmcompare_testplugins:SyncEcho", install="(test plugin)",
        options={"per_token_ms": OptionSpec(float, 0.0), "ttft_ms": OptionSpec(float, 0.0)},
        capabilities=Capabilities(model_formats=("gguf", "hf", "synthetic")),
    ))
    register(BackendSpec(
        name="tiredecho", target="llmcompare_testplugins:TiredEcho", install="(test plugin)",
        options={"per_token_ms": OptionSpec(float, 0.0), "ttft_ms": OptionSpec(float, 0.0),
                 "slow_after": OptionSpec(int, 0), "slow_step_ms": OptionSpec(float, 0.0)},
        capabilities=Capabilities(model_formats=("gguf", "hf", "synthetic"), concurrent=True),
    ))
    register(BackendSpec(
        name="notinstalled", target="llmcompare_testplugins:CrashyBackend",
        install="pip install 'llmcompare[notinstalled]'", requires=("llmcompare_no_such_engine",),
    ))
