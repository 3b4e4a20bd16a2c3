"""Temporary directories that a killed process does not leave behind for good.

A local Ray instance's session files and a Ray cell's run directory live in the system's temporary
directory. A process killed with SIGKILL (or a host that lost power) cannot remove its own, so each such
directory names its owner (a ``.owner`` file holding the pid), and the next process that makes one with
the same prefix removes those whose owner no longer runs. One without an owner file is removed only once
it is a few minutes old and no running process names it on its command line.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from llmcompare.servers.managed import pid_alive

OWNER = ".owner"
#: A local Ray instance's session files: ``<tmp>/llmc-ray-XXXX`` (short: Ray's socket paths must fit
#: 107 bytes).
RAY_PREFIX = "llmc-ray-"
#: A directory with no owner file yet may be one another process has just made: left alone this long.
YOUNG_S = 300.0


def _named_by_a_process(path: str) -> bool:
    """Whether a running process names ``path`` on its command line (a Ray raylet names its session
    directory there)."""
    import psutil

    return any(path in arg for p in psutil.process_iter(["cmdline"]) for arg in p.info["cmdline"] or ())


def stale(prefix: str, root: str | None = None) -> list[str]:
    """This user's directories ``<root>/<prefix>*`` whose owner process no longer runs."""
    out = []
    for d in glob.glob(os.path.join(root or tempfile.gettempdir(), glob.escape(prefix) + "*")):
        try:
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():  # a link is not followed
                continue
            try:
                pid = int(Path(d, OWNER).read_text().strip())
            except FileNotFoundError:
                if time.time() - st.st_mtime < YOUNG_S:
                    continue
                pid = None
            if pid is None and _named_by_a_process(d):
                continue
            if pid is None or not pid_alive(pid):  # a zombie (killed, not yet reaped) counts as gone
                out.append(d)
        except (OSError, ValueError):
            continue
    return out


def sweep(prefix: str) -> None:
    """Remove this user's directories ``<tmp>/<prefix>*`` whose owner no longer runs."""
    for d in stale(prefix):
        remove(d, wait_s=1.0)


def make(prefix: str) -> Path:
    """A new directory ``<tmp>/<prefix>XXXX`` owned by this process, after removing the stale ones."""
    sweep(prefix)
    d = Path(tempfile.mkdtemp(prefix=prefix))
    (d / OWNER).write_text(str(os.getpid()))
    return d


def remove(path: str | os.PathLike, wait_s: float = 10.0) -> bool:
    """Remove ``path``, trying again while processes that are exiting still write into it; whether it is
    gone."""
    deadline = time.monotonic() + wait_s
    while True:
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path) or time.monotonic() > deadline:
            return not os.path.lexists(path)
        time.sleep(0.2)
