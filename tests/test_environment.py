"""The environment block records versions and hardware, never secrets; a backend's GPU memory counts
every GPU its process may use."""

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from conftest import needs_model

from llmcompare.hardware import environment

SECRETS = {
    "HF_TOKEN": "hf_SECRETSECRETSECRET1",
    "HUGGING_FACE_HUB_TOKEN": "hf_SECRETSECRETSECRET2",
    "OPENAI_API_KEY": "sk-SECRETSECRETSECRET3",
    "AWS_SECRET_ACCESS_KEY": "SECRETSECRETSECRET4",
    "AWS_ACCESS_KEY_ID": "AKIASECRETSECRET5",
}


def test_capture_has_versions_and_hardware():
    env = environment.capture(["ctranslate2"])
    for key in ("os", "cpu", "cpu_count_logical", "ram_bytes", "python", "llmcompare", "gpus", "packages"):
        assert key in env
    assert env["packages"]["pluggy"]
    assert len(env["load_average"]) == 3 and all(x >= 0 for x in env["load_average"])


def test_a_busy_host_is_named_under_the_machine_line_and_a_quiet_one_is_not():
    from llmcompare.report.base import machine_line

    base = {"cpu": "x", "cpu_count_logical": 2, "cpu_affinity": 2, "ram_bytes": 2**30, "os": "Linux", "gpus": []}
    busy = machine_line({**base, "load_average": [1.93, 1.5, 1.2]})
    assert "busy" in busy and "1.93" in busy and "2 CPUs" in busy
    assert "busy" not in machine_line({**base, "load_average": [0.4, 0.5, 0.5]})
    assert "busy" not in machine_line(base)  # a run recorded before the load average was


@pytest.mark.engine
@needs_model
def test_no_secret_reaches_any_results_file(tmp_path):
    env = dict(os.environ, **SECRETS)
    out_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "llmcompare", "-b", "echo", "--no-fidelity", "-n", "2", "-r", "1", "-q",
                          "-O", str(out_dir)],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    blob = "".join(p.read_text(errors="replace") for p in out_dir.rglob("*") if p.is_file())
    blob += out.stdout + out.stderr
    for name, value in SECRETS.items():
        assert value not in blob, name
    assert "HF_TOKEN" not in json.loads((out_dir / "results.json").read_text())["environment"].__repr__()


class _FakeNVML:
    """pynvml's calls that ``session.gpu_memory`` makes, over two GPUs."""

    used = {0: 70 * 2**30, 1: 60 * 2**30}
    uuids = {"GPU-aaaa": 0, "GPU-bbbb": 1}

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlDeviceGetCount(self): return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        if i not in self.used:
            raise ValueError(f"no GPU {i}")
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid): return self.uuids[uuid]
    def nvmlDeviceGetIndex(self, h): return h
    def nvmlDeviceGetMemoryInfo(self, h): return SimpleNamespace(used=self.used[h])

    processes: dict = {}
    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.processes.get(h, [])]


@pytest.mark.parametrize("visible, expected", [
    (None, {"0": 70 * 2**30, "1": 60 * 2**30}),     # a tensor-parallel server's worker sees both GPUs
    ("1", {"1": 60 * 2**30}),
    ("GPU-bbbb,GPU-aaaa", {"1": 60 * 2**30, "0": 70 * 2**30}),
    ("0,7,1", {"0": 70 * 2**30}),                     # CUDA stops at the first invalid entry
    ("-1", None),
])
def test_gpu_memory_counts_every_gpu_the_process_may_use(monkeypatch, visible, expected):
    from llmcompare.runner import session

    monkeypatch.setitem(sys.modules, "pynvml", _FakeNVML())
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    got = session.gpu_memory()
    if expected is None:
        assert "nvml_used" not in got
    else:
        assert got["nvml_used_per_gpu"] == expected and got["nvml_used"] == sum(expected.values())


def test_gpu_memory_counts_the_process_trees_own_memory_apart_from_other_programs(monkeypatch):
    """``nvml_process_used`` sums what NVML gives this process and its descendants (a server's engine
    under its guard) on every visible GPU, and leaves out a stranger's memory and unknown figures."""
    from llmcompare.runner import session

    guard = subprocess.Popen([sys.executable, "-c",
                              "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"])
    try:
        for _ in range(100):  # the grandchild: the guard's child
            tree = session.process_tree(os.getpid())
            if len(tree) >= 3:
                break
            time.sleep(0.05)
        grandchild = max(tree - {os.getpid(), guard.pid})
        assert session.process_tree(guard.pid) == {guard.pid, grandchild}
        nvml = _FakeNVML()
        nvml.processes = {0: [(os.getpid(), 2 * 2**30), (999_999_999, 40 * 2**30)],   # a stranger's 40 GiB
                          1: [(grandchild, 30 * 2**30), (guard.pid, None)]}           # None: not available
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        got = session.gpu_memory()
        assert got["nvml_process_used"] == 32 * 2**30
        assert got["nvml_used"] == 130 * 2**30                 # the whole devices, stranger included
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
        assert session.gpu_memory()["nvml_process_used"] == 2 * 2**30
        nvml.processes = {0: [(999_999_999, 40 * 2**30)]}      # none of ours listed: no figure, not 0
        assert "nvml_process_used" not in session.gpu_memory()
    finally:
        for pid in session.process_tree(guard.pid) - {guard.pid}:
            os.kill(pid, 9)
        guard.kill()
        guard.wait()


@pytest.mark.parametrize("probed, peak", [
    ({"torch_peak_allocated": 7 * 2**30, "nvml_process_used": 9 * 2**30}, 7 * 2**30),  # torch's figure first
    ({"nvml_process_used": 9 * 2**30, "nvml_used": 20 * 2**30}, 9 * 2**30),  # llama.cpp: its process tree's
    ({"nvml_used": 20 * 2**30}, None),  # a whole-device figure is never a backend's peak
])
def test_the_gpu_peak_is_torchs_else_the_process_trees_nvml_figure(monkeypatch, probed, peak):
    from llmcompare.config.spec import BackendRequest
    from llmcompare.models import ResolvedModel
    from llmcompare.runner import session

    monkeypatch.setattr(session, "gpu_memory", lambda: dict(probed))
    model = ResolvedModel("synthetic:smollm2-135m", "synthetic", "smollm2-135m", shape="smollm2-135m")
    with session.BackendSession(BackendRequest("echo", "echo", None), model) as s:
        pass  # loaded, then closed: the memory probe runs at the close
    assert s.record.status == "ok" and s.record.gpu_peak_bytes == peak and s.record.gpu_memory == probed
