"""llmcompare compare RUN_A RUN_B: verdicts with confidence intervals, and the regression gate's exit codes."""

import subprocess
import sys

import pytest
from conftest import needs_model

import llmcompare
from llmcompare.analysis.comparison import Gate, compare_runs

pytestmark = [pytest.mark.engine, needs_model]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cmp")
    fast = llmcompare.compare(["echo"], options=["per_token_ms=4", "ttft_ms=5"], max_new_tokens=12, repeats=2,
                              warmup=1, output=base / "fast", fidelity=False)
    slow = llmcompare.compare(["echo"], options=["per_token_ms=6", "ttft_ms=5"], max_new_tokens=12, repeats=2,
                              warmup=1, output=base / "slow", fidelity=False)
    return str(fast.run_dir), str(slow.run_dir)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "llmcompare", *args], capture_output=True, text=True)


def test_a_known_slowdown_is_found_with_its_ratio(runs):
    fast, slow = runs
    rows = {r["metric"]: r for r in compare_runs(fast, slow)}
    tpot = rows["tpot_p50"]
    assert tpot["verdict"] == "slower" and tpot["ratio"]["ratio"] == pytest.approx(1.5, rel=0.05)
    assert tpot["ratio"]["lo"] > 1.3
    assert rows["tok_s_p50"]["verdict"] == "lower"
    back = {r["metric"]: r for r in compare_runs(slow, fast)}
    assert back["tpot_p50"]["verdict"] == "faster"


def test_a_run_against_itself_is_no_difference(runs):
    fast, _ = runs
    assert {r["verdict"] for r in compare_runs(fast, fast)} == {"no difference"}


def test_the_gate_fails_only_beyond_its_threshold_with_confidence(runs):
    fast, slow = runs
    out = cli("compare", fast, slow, "--fail-if", "tpot_p50>+20%")
    assert out.returncode == 1 and "FAIL tpot_p50>+20%" in out.stdout
    out = cli("compare", fast, slow, "--fail-if", "tpot_p50>+80%")  # 1.5x is not beyond +80%
    assert out.returncode == 0, out.stdout + out.stderr
    out = cli("compare", slow, fast, "--fail-if", "tpot_p50>+5%")  # an improvement never fails the gate
    assert out.returncode == 0
    assert cli("compare", fast, fast, "--fail-if", "tpot_p50>+0%").returncode == 0


def test_gate_expressions_are_checked():
    assert Gate.parse("tok_s_p50<-5%").threshold == pytest.approx(0.95)
    bad = cli("compare", "a", "b", "--fail-if", "tpot_p50<-5%")
    assert bad.returncode == 2 and "gets worse by going up" in bad.stderr
    bad = cli("compare", "a", "b", "--fail-if", "speed>5")
    assert bad.returncode == 2 and "must look like" in bad.stderr
