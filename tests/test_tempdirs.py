"""Temporary directories a killed run leaves behind are removed by the next run, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from llmcompare.runner import tempdirs
from llmcompare.servers.managed import pid_alive


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def owned(root, name, pid=None, age_s=0.0):
    d = root / name
    (d / "session_x").mkdir(parents=True)
    if pid is not None:
        (d / tempdirs.OWNER).write_text(str(pid))
    if age_s:
        t = time.time() - age_s
        os.utime(d, (t, t))
    return d


def test_only_the_directories_of_processes_that_no_longer_run_are_stale(tmp_path):
    killed = owned(tmp_path, "llmc-ray-killed", dead_pid())
    running = owned(tmp_path, "llmc-ray-running", os.getpid())
    old = owned(tmp_path, "llmc-ray-old", age_s=2 * tempdirs.YOUNG_S)            # made before owner files
    young = owned(tmp_path, "llmc-ray-young", age_s=1)                         # its owner file comes next
    named = owned(tmp_path, "llmc-ray-named", age_s=2 * tempdirs.YOUNG_S)      # a raylet names it
    other = owned(tmp_path, "llmcompare-cell-x", dead_pid())                   # another prefix
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(named)])
    try:
        time.sleep(0.2)
        assert sorted(tempdirs.stale("llmc-ray-", str(tmp_path))) == sorted([str(killed), str(old)])
    finally:
        holder.kill()
        holder.wait()
    assert running.exists() and young.exists() and other.exists()


def test_make_removes_the_stale_ones_and_names_its_owner(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    killed = owned(tmp_path, "llmc-ray-killed", dead_pid())
    d = tempdirs.make("llmc-ray-")
    assert d.parent == tmp_path and not killed.exists()
    assert (d / tempdirs.OWNER).read_text() == str(os.getpid())
    assert tempdirs.stale("llmc-ray-", str(tmp_path)) == []
    (d / "session_latest").symlink_to(d / "nowhere")
    assert tempdirs.remove(d) and not d.exists()


def test_a_zombie_owner_does_not_run(tmp_path):
    """A killed owner whose new parent has not reaped it yet still has a pid: it counts as gone."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.time() + 30
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.time() < deadline, "the child never exited"
            time.sleep(0.05)
        assert not pid_alive(child.pid)
        zombie = owned(tmp_path, "llmc-ray-zombie", child.pid)
        assert tempdirs.stale("llmc-ray-", str(tmp_path)) == [str(zombie)]
    finally:
        child.wait()
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
