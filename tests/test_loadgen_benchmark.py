"""benchmarks/loadgen_capacity.py: its CPU bookkeeping, and its smallest configuration end to end.

The smoke run starts llmcompare's mock server, measures the raw-socket TTFT floor, drives two
closed-loop levels through the real ``llmcompare load`` CLI and checks what the JSON says.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_model

pytestmark = pytest.mark.engine  # the engine tier: whole runs, live servers or real engines

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "loadgen_capacity.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("loadgen_capacity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_interp_holds_flat_outside_and_is_linear_between(bench):
    series = [(10.0, 0.0), (12.0, 1.0), (14.0, 3.0)]
    assert bench._interp(series, 9.0) == 0.0
    assert bench._interp(series, 11.0) == pytest.approx(0.5)
    assert bench._interp(series, 13.0) == pytest.approx(2.0)
    assert bench._interp(series, 20.0) == 3.0


def test_cores_per_role_and_tree_in_a_window(bench):
    s = bench.CpuSampler()
    s.roles = {1: "server:main", 2: "llmcompare:worker", 3: "llmcompare:client process"}
    s.samples = {1: [(0.0, 0.0), (10.0, 5.0)], 2: [(0.0, 0.0), (10.0, 8.0)], 3: [(4.0, 0.0), (10.0, 3.0)]}
    s.waits = {1: [(0.0, 0.0), (10.0, 0.0)], 2: [(0.0, 0.0), (10.0, 10.0)], 3: [(4.0, 0.0), (10.0, 0.0)]}
    s.machine = [(0.0, 0.0), (10.0, 18.0)]
    s._poll = lambda: None  # no live processes in this test
    cpu = s.cores(2.0, 6.0)
    assert cpu["by_role"] == {"llmcompare:client process": 0.25, "llmcompare:worker": 0.8, "server:main": 0.5}
    assert cpu["client"] == pytest.approx(1.05)
    assert cpu["server"] == pytest.approx(0.5)
    assert cpu["client_waiting"] == pytest.approx(1.0) and cpu["server_waiting"] == 0.0
    assert cpu["machine_busy"] == pytest.approx(1.8)


def test_run_delay_of_this_process_is_read_from_proc(bench):
    if not Path("/proc/self/task").exists():
        pytest.skip("Linux /proc only")
    first = bench.run_delay_s(os.getpid())
    assert first is not None and first >= 0.0
    assert bench.run_delay_s(2**22 + 12345) is None  # no such process


def test_roles_from_command_lines(bench):
    assert bench.role_of("llmcompare", False, ["python", "-m", "llmcompare.scenarios.clients"]) == "llmcompare:client process"
    assert bench.role_of("llmcompare", False, ["python", "-m", "llmcompare.runner.worker", "job.json"]) == "llmcompare:worker"
    assert bench.role_of("llmcompare", True, ["python", "-m", "llmcompare", "load"]) == "llmcompare:cli"
    assert bench.role_of("guidellm", False, ["python", "-c", "from multiprocessing.spawn import spawn_main"]) \
        == "guidellm:worker"
    assert bench.role_of("server", True, ["guidellm", "mock-server"]) == "server:main"


@needs_model
def test_quick_run_end_to_end(tmp_path):
    out = tmp_path / "loadgen.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--guidellm", str(tmp_path / "no-guidellm"),
                           "--json", str(out)], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert "--quick" in result["command"]
    assert any("skipped" in n for n in result["notes"])  # no GuideLLM: said so, not silently dropped
    (run,) = result["runs"]
    assert run["tool"] == "llmcompare" and run["error"] is None and run["clients"] == 1
    assert "--clients" in run["argv"] and "load" in run["argv"]
    levels = {lv["concurrency"]: lv for lv in run["levels"]}
    assert sorted(levels) == [1, 8]
    n_out = result["settings"]["output_tokens"]
    for c, lv in levels.items():
        assert lv["requests"] == 40 and lv["errors"] == 0 and lv["length_mismatch"] == 0
        assert lv["output_tokens"] == 40 * n_out
        assert lv["max_in_flight"] == c
        assert lv["output_tok_s"] > 0 and lv["ttft_ms_p50"] > 0
        assert lv["window_tok_s"] is None  # a level of N requests has no duration window
        assert set(lv["cpu_cores"]) >= {"client", "server", "client_waiting", "server_waiting", "machine_busy"}
        assert "client_tok_per_cpu_s" in lv
    (floor,) = result["raw_ttft_floor"]
    assert floor["requests"] == 20 and 0 < floor["ttft_ms_min"] <= floor["ttft_ms_p50"]
    (added,) = result["verdicts"]["added_ttft"]
    assert added["added_over_floor_ms"] == pytest.approx(levels[1]["ttft_ms_p50"] - floor["ttft_ms_p50"])
    assert "concurrent_streams" not in result["verdicts"]  # decided on the paced mock only, not run here
    assert result["environment"]["cpu_count_logical"] >= 1
    assert "| llmcompare-mock |" in proc.stdout  # the printed table
