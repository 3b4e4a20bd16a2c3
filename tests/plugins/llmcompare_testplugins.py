"""Backends used by the test suite, loaded through LLMCOMPARE_PLUGINS like any local plugin.

``crashy`` kills its own process (SIGKILL, as the OOM killer would) after ``crash_after`` requests,
once per ``marker`` file; ``hangs`` never returns from its ``hang_after``-th request.
"""

from __future__ import annotations

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
            os.kill(os.getpid(), signal.SIGKILL)
        return super().generate(prompt, max_new_tokens)


class HangingBackend(EchoBackend):
    def generate(self, prompt, max_new_tokens):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > self.config.options["hang_after"]:
            time.sleep(3600)
        return super().generate(prompt, max_new_tokens)


class SyncEcho(EchoBackend):
    """echo with only the sync path: the load driver must serve it one request at a time."""

    @property
    def astream(self):
        raise AttributeError("astream")


@hookimpl
def register_backends(register):
    register(BackendSpec(
        name="crashy", target="llmcompare_testplugins:CrashyBackend", install="(test plugin)",
        options={"crash_after": OptionSpec(int, 3), "marker": OptionSpec(str, None)},
    ))
    register(BackendSpec(
        name="hangs", target="llmcompare_testplugins:HangingBackend", install="(test plugin)",
        options={"hang_after": OptionSpec(int, 2)},
    ))
    register(BackendSpec(
        name="syncecho", target="llmcompare_testplugins:SyncEcho", install="(test plugin)",
        options={"per_token_ms": OptionSpec(float, 0.0), "ttft_ms": OptionSpec(float, 0.0)},
        capabilities=Capabilities(model_formats=("gguf", "hf", "synthetic")),
    ))
    register(BackendSpec(
        name="notinstalled", target="llmcompare_testplugins:CrashyBackend",
        install="pip install 'llmcompare[notinstalled]'", requires=("llmcompare_no_such_engine",),
    ))
