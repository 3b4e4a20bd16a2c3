"""A child process dies with its parent: the worker, and the load driver's client processes."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "LLMCOMPARE_PARENT_PID"


def die_with_parent() -> None:
    """SIGKILL this process when the parent that started it dies (Linux), even by SIGKILL."""
    parent = os.environ.get(PARENT_ENV)
    if sys.platform.startswith("linux"):
        try:
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent and os.getppid() != int(parent):
        os._exit(3)  # the parent died before the request above took effect
