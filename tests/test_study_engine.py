"""The CPU seed study, studies/tgi-vs-naive.yaml, end to end with real servers: llama-cpp-python's server
against `transformers serve --continuous-batching` on the embedded SmolLM2, under the local executor
and on a local Ray instance. Both give the same answer, and that answer is what a hand computation from
the cells' levels.csv gives. Minutes on 2 cores."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_model

pytestmark = [pytest.mark.engine, needs_model]
ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "tgi-vs-naive.yaml"
SLO = {"ttft_ms": 5000.0, "tpot_ms": 300.0}


@pytest.fixture(scope="module", autouse=True)
def engines():
    for mod in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "transformers"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"needs {mod}: pip install 'llmcompare[llamacpp-server,transformers-serve]'")


def run(executor: str, out: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "llmcompare.study", "run", str(STUDY), "-O", str(out), "--executor",
                           executor, "-q"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def by_hand(out: Path) -> dict[str, tuple[str, str] | None]:
    """The answer from levels.csv alone, without the study's code: pool each server's measurements of a
    level (its cell and any re-measurement); a level is eligible when every measurement met the SLO and
    the non-increasing fit of the margins (1 − p90/limit, the worst limit) over its two levels is ≥ 0
    there; then the highest tok/s (one price, so also the lowest $ per 1M) and the lowest ms/token."""
    m = json.loads((out / "study.json").read_text())
    rows: dict[str, dict[str, list[dict]]] = {}
    for c in m["cells"]:
        assert c["status"] == "done", c
        with open(out / "cells" / c["id"] / "levels.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                rows.setdefault(c["deployment"], {}).setdefault(row["concurrency"], []).append(row)
    eligible = {}
    for dep, by_level in rows.items():
        assert set(by_level) <= {"1", "2"}
        margin = {lv: sum(int(r["requests"]) * min(1 - float(r[f"{k[:-3]}_p90_ms"]) / v for k, v in SLO.items())
                          for r in rs) / sum(int(r["requests"]) for r in rs) for lv, rs in by_level.items()}
        weight = {lv: sum(int(r["requests"]) for r in rs) for lv, rs in by_level.items()}
        fitted = dict(margin)
        if len(margin) == 2 and margin["1"] < margin["2"]:  # a violation: pool the two
            fitted["1"] = fitted["2"] = (margin["1"] * weight["1"] + margin["2"] * weight["2"]) / sum(weight.values())
        for lv, rs in by_level.items():
            if all(r["meets_slo"] == "True" for r in rs) and fitted[lv] >= 0:
                eligible[(dep, lv)] = rs
    if not eligible:
        return {"most_cost_effective": None, "best_latency": None, "best_throughput": None}
    tok = {k: sum(float(r["output_tok_s"]) for r in v) / len(v) for k, v in eligible.items()}
    tpot = {k: sum(float(r["tpot_p50_ms"]) for r in v) / len(v) for k, v in eligible.items()}
    return {"most_cost_effective": max(tok, key=tok.get), "best_latency": min(tpot, key=tpot.get),
            "best_throughput": max(tok, key=tok.get)}


def answer(out: Path) -> dict[str, tuple[str, str] | None]:
    from llmcompare.study import report

    a = report.build(out)["answers"]
    return {k: (v["winner"]["deployment"], v["winner"]["level"].removeprefix("c=")) if v["winner"] else None
            for k, v in a.items()}


def test_tgi_vs_naive_local_and_ray_give_the_same_answer_as_the_hand_computation(tmp_path):
    pytest.importorskip("ray")
    local, ray = tmp_path / "local", tmp_path / "ray"
    run("local", local)
    run("ray", ray)
    a_local, a_ray = answer(local), answer(ray)
    assert a_local == by_hand(local), (a_local, by_hand(local))
    assert a_ray == by_hand(ray), (a_ray, by_hand(ray))
    # the same configuration is recommended whichever executor measured it (levels may differ by noise:
    # compare the server named, which is the question the study answers)
    assert {k: v and v[0] for k, v in a_local.items()} == {k: v and v[0] for k, v in a_ray.items()}
    named = {v[0] for v in a_local.values() if v}
    assert named, "no server met the SLO"
