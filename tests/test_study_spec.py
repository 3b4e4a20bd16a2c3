"""Study files: validation with file:line:key errors, the matrix, argv and ids, pruning, the answer's
arithmetic (isotonic fit, eligibility, ties), escaping. Nothing here runs a cell."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmcompare.cli.main import build_parser
from llmcompare.errors import UserError
from llmcompare.study import analysis
from llmcompare.study.driver import plan_cells
from llmcompare.study.hardware import HostDevices, detect, gpu_matches, parse_gpus
from llmcompare.study.report import h, md
from llmcompare.study.spec import load_study, load_study_text

ROOT = Path(__file__).resolve().parent.parent
BASE = """\
name: t
model: synthetic:smollm2-135m
scenario: load
workload: {input_tokens: 16, max_new_tokens: 8, requests: 4}
slo: {tpot_ms: 30}
hardware:
  cpu: {price_per_hour: 1.0}
matrix:
  backend: [echo]
  concurrency: [[1, 2]]
"""


def study(text=BASE, **kw):
    return load_study_text(text, "s.yaml", **kw)


def error_of(text):
    with pytest.raises(UserError) as e:
        study(text)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_a_cell_is_an_argv_the_cli_parses_with_the_slo_and_the_price():
    s = study()
    (c,) = s.cells
    assert c.argv == ["load", "-b", "echo", "-m", "synthetic:smollm2-135m", "--input-tokens", "16",
                      "--max-new-tokens", "8", "--requests", "4", "--concurrency", "1,2", "--device", "cpu",
                      "--slo", "tpot_ms=30", "--price-per-hour", "1", "-q"]
    assert c.levels == [1.0, 2.0] and c.level_kind == "concurrency" and c.gpus == 0

    build_parser().parse_args(c.argv)


@pytest.mark.parametrize("edit, where, words", [
    (("input_tokens: 16", "input_tokns: 16"), "s.yaml:4: workload.input_tokns", "no flag --input-tokns; did you mean"),
    (("[[1, 2]]", "[[1, x]]"), "s.yaml:10: matrix.concurrency", "expected integers"),
    (("backend: [echo]", "backend: [echo, ecoh]"), "s.yaml:9: matrix.backend[1]", "unknown backend 'ecoh'"),
    (("tpot_ms: 30", "tpot: 30"), "s.yaml:5: slo.tpot", "unknown limit"),
    (("requests: 4", "requests: four"), "s.yaml:4: workload.requests", "invalid int value"),
    (("scenario: load", "scenario: lod"), "s.yaml:3: scenario", "not an llmcompare command"),
    (("name: t", "name: t\nbogus: 1"), "s.yaml:2: bogus", "unknown key"),
    (("  concurrency: [[1, 2]]", "  concurrency: [[1, 2]]\n  option: [{ttft_mss: 5}]"), "s.yaml:11: matrix.option[0]",
     "has no option 'ttft_mss'; did you mean 'ttft_ms'"),
    (("  concurrency: [[1, 2]]", "  concurrency: [[1, 2]]\n  hardware: [cpu, gpu9]"), "s.yaml:11: matrix.hardware[1]",
     "no hardware entry 'gpu9'"),
    (("  cpu: {price_per_hour: 1.0}", "  cpu: {gpu: a10x}"), "s.yaml:7: hardware.cpu.gpu", "unknown GPU"),
    (("workload: {", "workload: {output: x, "), "s.yaml:4: workload.output", "the study sets --output itself"),
    (("requests: 4}", "requests: 4}\nrepeats: 0"), "s.yaml:5: repeats", "at least 1"),
    (("matrix:", "matrix:\n  backend: [echo]\nx: ["), "s.yaml:", "not valid YAML"),
    (("  backend: [echo]", "  backend: [echo]\n  backend: [echo]"), "s.yaml:10: matrix.backend", "given twice"),
])
def test_a_mistake_is_one_line_naming_the_file_line_and_key(edit, where, words):
    msg = error_of(BASE.replace(*edit, 1))
    assert msg.startswith(where), msg
    assert words in msg, msg


def test_matrix_include_and_exclude_follow_github_actions():
    s = study(BASE.replace("  concurrency: [[1, 2]]", """\
  option: ["per_token_ms=1", "per_token_ms=2"]
  concurrency: [1, 2]
exclude:
  - {option: "per_token_ms=2", concurrency: 2}
include:
  - {option: "per_token_ms=1", input_tokens: 32}
  - {backend: echo, option: "per_token_ms=9", concurrency: 4}
"""))
    names = [c.name for c in s.cells]
    assert names == ["per_token_ms=1 · c=1 · input_tokens=32", "per_token_ms=1 · c=2 · input_tokens=32",
                     "per_token_ms=2 · c=1", "per_token_ms=9 · c=4"]
    # include extends the combinations it does not overwrite with a key the matrix lacks
    assert [c.flags.get("input_tokens") for c in s.cells] == [32, 32, 16, 16]
    assert len({c.id for c in s.cells}) == 4
    assert {c.deployment for c in s.cells} == {"per_token_ms=1 · input_tokens=32", "per_token_ms=2", "per_token_ms=9"}


def test_ids_are_stable_and_repeats_are_distinct_cells():
    a = study(BASE + "repeats: 3\n")
    b = study(BASE + "repeats: 3\n")
    assert [c.id for c in a.cells] == [c.id for c in b.cells]
    assert len({c.id for c in a.cells}) == 3 and {c.repeat for c in a.cells} == {0, 1, 2}
    assert len({c.deployment_id for c in a.cells}) == 1
    c = study(BASE.replace("requests: 4", "requests: 5"))
    assert c.cells[0].id != a.cells[0].id


def test_run_scenario_cells_skip_fidelity_and_take_no_slo_flag():
    s = study(BASE.replace("scenario: load", "scenario: run").replace(", requests: 4", "")
              .replace("  concurrency: [[1, 2]]", "  repeats: [2]"))
    (c,) = s.cells
    assert "--no-fidelity" in c.argv and "--slo" not in c.argv and "--price-per-hour" not in c.argv
    assert c.levels == []


GPU_STUDY = """\
name: g
model: synthetic:llama-2-13b
scenario: load
workload: {input_tokens: 1500, max_new_tokens: 500, requests: 8}
slo: {ttft_ms: 5000, tpot_ms: 60}
hardware:
  g5.2xlarge: {gpu: a10g, count: 1, price_per_hour: 1.212}
  g5.12xlarge: {gpu: a10g, count: 4, price_per_hour: 5.672}
matrix:
  backend: [vllm-serve]
  option: [none, quantization=gptq]
  hardware: [g5.2xlarge, g5.12xlarge]
  concurrency: [[1, 5, 20]]
"""


def test_pruning_says_why_with_the_plans_arithmetic_and_trims_levels():
    s = study(GPU_STUDY)
    planned = {p.cell.name: p for p in plan_cells(s, HostDevices([], "test"))}
    fp16_small = planned["no options · g5.2xlarge"]
    assert fp16_small.status == "pruned"
    why = " ".join(fp16_small.assessment.reasons)
    assert "does not fit: weights 26.03 GB/GPU" in why and "> 23.19 GB usable (24 GiB × (1 − 0.1))" in why
    gptq_small = planned["quantization=gptq · g5.2xlarge"]
    assert gptq_small.status == "not-run" and gptq_small.assessment.not_run == "needs 1× A10G (g5.2xlarge)"
    assert gptq_small.cell.levels == [1.0, 5.0]  # c=20 dropped: its KV does not fit
    assert "--concurrency 1,5 " in " ".join(gptq_small.cell.argv) + " "
    assert any("c=20 does not fit" in r for r in gptq_small.assessment.reasons)
    big = planned["no options · g5.12xlarge"]
    assert big.status == "not-run" and big.assessment.not_run == "needs 4× A10G (g5.12xlarge)"
    assert all(lv.floor_tpot_ms and lv.bound_tok_s for lv in big.assessment.levels)
    # --no-prune keeps everything
    s2 = study(GPU_STUDY)
    assert all(p.status != "pruned" for p in plan_cells(s2, HostDevices([], "test"), no_prune=True))


def test_a_level_that_cannot_meet_the_slo_at_the_bandwidth_floor_is_dropped():
    s = study(GPU_STUDY.replace("tpot_ms: 60", "tpot_ms: 20"))
    p = next(p for p in plan_cells(s, HostDevices([], "t")) if p.cell.name == "no options · g5.12xlarge")
    assert p.cell.levels == [1.0, 5.0]
    assert any("c=20 cannot meet tpot_ms ≤ 20: its floor is" in r and "/ 600 GB/s" in r for r in p.assessment.reasons)


def test_hardware_present_here_from_the_gpu_list():
    s = study(GPU_STUDY)
    host = HostDevices(parse_gpus("a10g=0,1,2,3"), "test")
    statuses = {p.cell.name: p.status for p in plan_cells(s, host)}
    assert statuses["quantization=gptq · g5.12xlarge"] == "pending"
    assert parse_gpus("0,1") == parse_gpus("0, 1") and parse_gpus("h100=2")[0].name == "h100"
    assert gpu_matches("NVIDIA H100 80GB HBM3", "h100") and gpu_matches("NVIDIA A10G", "a10g")
    assert not gpu_matches("NVIDIA A10G", "h100")
    assert detect("0,1").gpus[1].id == "1"


def test_gpu_cells_are_sized_by_tensor_parallel_and_replicas():
    s = study(GPU_STUDY.replace("option: [none, quantization=gptq]",
                                "option: [none, tensor_parallel_size=2, [tensor_parallel_size=1, replicas=4]]")
              .replace("hardware: [g5.2xlarge, g5.12xlarge]", "hardware: [g5.12xlarge]"))
    assert {c.name: c.gpus for c in s.cells} == {"no options": 4, "tensor_parallel_size=2": 2,
                                                 "tensor_parallel_size=1 replicas=4": 4}
    # asking for more GPUs than the entry has is a one-line error
    with pytest.raises(UserError, match=r"ask for 2 GPUs .* has 1"):
        study(GPU_STUDY.replace("option: [none, quantization=gptq]", "option: [tensor_parallel_size=2]"))


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")))
def test_every_seed_study_file_loads_and_plans(path):
    s = load_study(path)
    planned = plan_cells(s, HostDevices([], "t"))
    assert planned
    for p in planned:
        assert p.status in ("pending", "pruned", "not-run")


def test_the_sagemaker_study_plans_its_matrix_and_prunes_what_does_not_fit():
    s = load_study(ROOT / "studies" / "sagemaker-llama2.yaml")
    planned = plan_cells(s, HostDevices([], "t"))
    assert len(planned) == 96  # 3 models × 2 weights × 4 instances × 4 user counts
    pruned = [p for p in planned if p.status == "pruned"]
    assert pruned and all(p.assessment.reasons for p in pruned)
    assert {p.status for p in planned} == {"pruned", "not-run"}  # no A10G or A100 here


# ---------------------------------------------------------------------------------------------
# The answer's arithmetic
# ---------------------------------------------------------------------------------------------
def test_isotonic_fit_is_the_non_increasing_least_squares_fit():
    fit = analysis.isotonic_decreasing([1, 2, 4, 8], [0.5, 0.6, -0.1, 0.2])
    assert fit == pytest.approx({1.0: 0.55, 2.0: 0.55, 4.0: 0.05, 8.0: 0.05})
    fit = analysis.isotonic_decreasing([1, 2, 2, 4], [0.5, 0.1, 0.3, 0.4])
    assert fit[1.0] == 0.5 and fit[2.0] == pytest.approx(0.8 / 3) == fit[4.0]
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = list(range(8))
        y = list(rng.normal(size=8))
        f = analysis.isotonic_decreasing(x, y)
        vals = [f[float(i)] for i in x]
        assert all(a >= b - 1e-12 for a, b in zip(vals, vals[1:]))
        assert sum(vals) == pytest.approx(sum(y))  # PAV preserves the (weighted) mean


def pt(dep, level, tpot, tok, price, meets, margin, cell=None, kind="cell", lo=None, hi=None, reqs=10):
    return analysis.Point(cell_id=cell or f"{dep}{level}{tok}", kind=kind, deployment_id=dep, deployment=dep,
                          hardware="h", repeat=0, level_kind="concurrency", level=level, stage="", requests=reqs,
                          tok_s=tok, tpot_p50=tpot, tpot_lo=lo, tpot_hi=hi, price=price,
                          attainment=1.0 if meets else 0.5, meets=meets, margin=margin)


SLO = {"tpot_ms": 30.0}


def test_the_cheapest_configuration_that_meets_the_slo_is_named_never_one_that_misses_it():
    pts = [pt("A", 1, 20, 50, 1.0, True, 0.3), pt("A", 2, 21, 100, 1.0, True, 0.3),
           pt("B", 1, 20, 50, 3.0, True, 0.3),
           pt("C", 1, 40, 100, 0.1, False, -0.3), pt("C", 2, 41, 200, 0.1, False, -0.4)]  # cheapest, misses
    groups = analysis.build_groups(pts, SLO)
    a = analysis.answers(groups, SLO)
    assert a["most_cost_effective"]["winner"]["deployment"] == "A"
    assert a["most_cost_effective"]["winner"]["level"] == "c=2"
    assert a["best_throughput"]["winner"]["deployment"] == "A"
    named = {f["deployment"] for x in a.values() for f in [x["winner"], *x["ties"]] if f}
    assert "C" not in named


def test_overlapping_intervals_are_a_tie_and_both_are_named():
    pts = [pt("A", 1, 20.0, 50, 1.0, True, 0.3, lo=19.5, hi=20.6), pt("B", 1, 20.2, 50, 3.0, True, 0.3, lo=19.9, hi=20.4),
           pt("D", 1, 25.0, 50, 3.0, True, 0.1, lo=24.5, hi=25.5)]
    a = analysis.answers(analysis.build_groups(pts, SLO), SLO)
    lat = a["best_latency"]
    assert lat["winner"]["deployment"] == "A" and [t["deployment"] for t in lat["ties"]] == ["B"]
    # throughput: one measurement each, no interval: equal values tie, a note says why no interval
    thr = a["best_throughput"]
    assert len(thr["ties"]) == 2 and "no interval" in thr["note"]


def test_repeats_give_t_intervals():
    pts = [pt("A", 1, 20, t, 1.0, True, 0.3, cell=f"a{i}") for i, t in enumerate((98, 100, 102))]
    (g,) = analysis.build_groups(pts, SLO)
    assert g.tok_s.value == 100 and g.tok_s.n == 3
    assert g.tok_s.hi - 100 == pytest.approx(4.303 * 2 / math.sqrt(3))
    assert g.cost.lo < g.cost.value < g.cost.hi


def test_a_lucky_probe_above_a_failing_level_is_not_believed():
    # c=4 misses, c=8 passes by luck; the monotone fit pulls c=8 below zero when c=4 misses by more
    pts = [pt("A", 1, 10, 10, 1, True, 0.5), pt("A", 2, 12, 20, 1, True, 0.3), pt("A", 4, 30, 30, 1, False, -0.4),
           pt("A", 8, 20, 40, 1, True, 0.1)]
    groups = analysis.build_groups(pts, SLO)
    by = {g.level: g for g in groups}
    assert by[8.0].meets and not by[8.0].eligible and "monotone fit" in by[8.0].why_not
    assert analysis.deployment_max_load(groups)["A"].level == 2.0
    assert analysis.confirm_target(groups, "A").level == 2.0


def test_a_level_that_missed_when_re_measured_is_not_eligible():
    pts = [pt("A", 1, 10, 10, 1, True, 0.5), pt("A", 2, 12, 20, 1, True, 0.05, reqs=100),
           pt("A", 2, 31, 20, 1, False, -0.01, kind="confirm", cell="conf", reqs=10)]
    groups = analysis.build_groups(pts, SLO)
    by = {g.level: g for g in groups}
    assert by[2.0].meets  # pooled, still ≥ 90%...
    assert by[2.0].confirmed is False and not by[2.0].eligible  # ...but the re-measurement missed
    assert analysis.deployment_max_load(groups)["A"].level == 1.0


def test_pareto_frontier():
    pts = [pt("A", 1, 10, 10, 1.0, True, 0.5), pt("A", 4, 20, 40, 1.0, True, 0.3), pt("B", 1, 15, 5, 1.0, True, 0.3)]
    front = analysis.pareto(analysis.build_groups(pts, SLO), "dollar")
    assert [(g.deployment, g.level) for g in front] == [("A", 1.0), ("A", 4.0)]


def test_strings_from_runs_are_escaped():
    evil = "<script>alert(1)</script> | *x* [y](z) $5"
    assert "<" not in md(evil) and "\\|" in md(evil) and "\\*" in md(evil) and "\\[" in md(evil) and "\\$" in md(evil)
    assert "<script>" not in h(evil) and "&lt;script&gt;" in h(evil)


def test_llmcompare_and_study_plan_work_without_ray(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(BASE)
    code = ("import sys; sys.modules['ray'] = None\n"
            "import llmcompare, llmcompare.study, llmcompare.study.driver, llmcompare.study.report\n"
            "from llmcompare.study.cli import main\n"
            f"rc = main(['plan', {str(f)!r}]); assert rc == 0, rc\n"
            f"rc = main(['run', {str(f)!r}, '--executor', 'ray']); print('rc', rc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "rc 2" in out.stdout, out.stdout + out.stderr
    err = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert err == ["llmcompare: error: --executor ray needs Ray, which is not installed; install it with:"
                   " pip install 'llmcompare[ray]'"]


def test_the_study_command_is_registered_and_python_m_llmcompare_study_is_the_same(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(BASE)
    outs = []
    for entry in (["-m", "llmcompare", "study"], ["-m", "llmcompare.study"]):
        p = subprocess.run([sys.executable, *entry, "plan", str(f), "--json"], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        outs.append(json.loads(p.stdout))
    assert outs[0] == outs[1] and [c["status"] for c in outs[0]] == ["pending"]
    bad = subprocess.run([sys.executable, "-m", "llmcompare", "study", "plan", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("llmcompare: error: ") and len(bad.stderr.splitlines()) == 1


@pytest.mark.parametrize("option", ["openai.url=http://user:secret-pw@127.0.0.1:8000/v1",
                                    "url=http://127.0.0.1:8000/v1?api_key=secret-pw",
                                    'extra_body={"api_key": "secret-pw"}'])
def test_a_credential_in_a_study_is_refused_without_showing_it(option):
    """A study's files are written as given (study.yaml, study.json, each cell's command): a credential in
    one is refused, by name, never echoed; an environment variable's name is the way to pass one."""
    text = BASE.replace("backend: [echo]", "backend: [openai]").replace(
        "matrix:", f"options: ['{option}']\nmatrix:")
    msg = error_of(text)
    assert "credential" in msg and "api_key_env" in msg and "secret-pw" not in msg
    ok = study(BASE.replace("backend: [echo]", "backend: [openai]").replace(
        "matrix:", "options: ['url=http://127.0.0.1:8000/v1', 'api_key_env=MY_KEY']\nmatrix:"))
    assert "api_key_env=MY_KEY" in ok.cells[0].argv
