"""The fidelity pass: definitions on hand-made records, then the real model judging unfaithful backends.

The engine comparison the issue asks for (transformers fp32 against llama.cpp Q4_1, CTranslate2 int8
and float32 on SmolLM2) is in tests/test_engines.py, on the run every engine test shares.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import needs_model

import llmcompare
from llmcompare.analysis import fidelity
from llmcompare.analysis.metrics import common_prefix
from llmcompare.config.spec import BackendRequest
from llmcompare.records import FidelityRecord, RequestRecord, RunRecords, ScoreRecord
from llmcompare.scenarios.fidelity import FidelityConfig as FidelitySpec
from llmcompare.scenarios.fidelity import strip_eos

REF = BackendRequest("transformers:fp32", "transformers", "fp32")


def judged(backend="b", prompt="p", **kw) -> FidelityRecord:
    base = dict(tokens=10, ref_tokens=10, eos=True, ref_eos=True, prefix=11, diverged=False,
                ll_sum=-5.0, ll_tokens=11, ref_ll_sum=-5.0, ref_ll_tokens=11, text="a b c", ref_text="a b c")
    base.update(kw)
    return FidelityRecord(backend=backend, reference=REF.label, prompt_id=prompt, **base)


def test_verdicts_at_the_first_divergence_follow_the_margin():
    same = judged()
    near = judged(diverged=True, prefix=4, divergence_ref_logprob=-0.70, divergence_logprob=-0.75)
    real = judged(diverged=True, prefix=4, divergence_ref_logprob=-0.10, divergence_logprob=-6.0)
    ended = judged(diverged=True, prefix=4, divergence_ref_logprob=-0.10, divergence_logprob=None)
    unscored = judged(diverged=True, prefix=4, ll_sum=None, ref_ll_sum=None)
    failed = judged(error="the backend gave no token ids")
    assert [fidelity.verdict(r, 0.5) for r in (same, near, real, ended, unscored, failed)] == [
        "same", "near-tie", "divergence", "divergence", "differs", None]
    assert fidelity.verdict(near, 0.01) == "divergence"  # the margin is the only threshold
    assert fidelity.verdict(real, 6.0) == "near-tie"


def test_eos_is_stripped_and_counted_as_a_token_of_the_comparison():
    rec = RequestRecord("b", "p", 0, False, 3, 8, 4, 0.1, 0.2, token_ids=[5, 6, 7, 2], finish_reason="stop")
    assert strip_eos(rec, {2}) == ([5, 6, 7], True)
    rec = RequestRecord("b", "p", 0, False, 3, 8, 3, 0.1, 0.2, token_ids=[5, 6, 7], finish_reason="stop")
    assert strip_eos(rec, {2}) == ([5, 6, 7], True)  # an engine that does not return the EOS id
    rec = RequestRecord("b", "p", 0, False, 3, 3, 3, 0.1, 0.2, token_ids=[5, 6, 7], finish_reason="length")
    assert strip_eos(rec, {2}) == ([5, 6, 7], False)
    assert common_prefix([1, 2, 3, 2], [1, 2, 3, 4, 5]) == 3 and common_prefix([1], [1]) == 1


def test_summary_figures_and_the_headline():
    recs = RunRecords()
    recs.fidelity = [
        judged(prompt="p1"), judged(prompt="p2"),
        judged(prompt="p3", diverged=True, prefix=4, divergence_ref_logprob=-0.7, divergence_logprob=-0.8,
               ll_sum=-6.0, text="a b d", ref_text="a b c"),
        judged(prompt="p4", diverged=True, prefix=2, divergence_ref_logprob=-0.1, divergence_logprob=-9.0,
               ll_sum=-30.0, text="zzz", ref_text="a b c"),
    ]
    recs.scores = [ScoreRecord("b", fidelity.TEXT_ID, tokens=100, nll_sum=250.0),
                   ScoreRecord("judge:transformers:fp32", fidelity.TEXT_ID, tokens=100, nll_sum=200.0)]
    spec = FidelitySpec(reference=REF, near_tie_margin=0.5, text_id=fidelity.TEXT_ID)
    [s] = fidelity.summarize(recs, spec, ["b"])
    assert (s.prompts, s.exact, s.near_ties, s.divergences) == (4, 2, 1, 1)
    assert s.exact_rate["value"] == 0.5 and s.exact_rate["lo"] <= 0.5 <= s.exact_rate["hi"]
    assert s.mean_prefix["value"] == pytest.approx((11 + 11 + 4 + 2) / 4)
    assert s.first_divergence_p50 == 3.0
    gap = ((-5 / 11) - (-30 / 11)) + ((-5 / 11) - (-6 / 11))
    assert s.ll_gap["value"] == pytest.approx(gap / 4)
    assert s.perplexity == pytest.approx(2.718281828 ** 2.5)
    assert fidelity.reference_perplexity(recs, spec) == pytest.approx(2.718281828 ** 2.0)
    assert s.headline() == "50% exact match, 1 real divergence in 4"
    assert s.similarity["value"] < 1.0 and [e["prompt_id"] for e in s.examples] == ["p4"]


def test_no_reference_is_a_note_not_a_crash():
    [s] = fidelity.summarize(RunRecords(), FidelitySpec(reference=None, reference_note="no fidelity reference: x"), ["b"])
    assert s.prompts == 0 and s.headline() == "no fidelity reference: x"


def test_bad_fidelity_options_are_one_line_errors():
    # the API names its arguments; the CLI names its flags (tests/test_cli.py)
    with pytest.raises(llmcompare.UserError, match="fidelity_tokens must be at least 1"):
        llmcompare.compare(["echo"], fidelity_tokens=0)
    with pytest.raises(llmcompare.UserError, match="near_tie_margin must be a non-negative number of nats"):
        llmcompare.compare(["echo"], near_tie_margin=-1)
    out = subprocess.run([sys.executable, "-m", "llmcompare", "-b", "echo", "--fidelity-tokens", "0"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == (
        "llmcompare: error: --fidelity-tokens must be at least 1, got 0"), out.stderr


@pytest.mark.engine
@needs_model
def test_a_backend_that_cannot_stop_at_eos_is_a_row_not_a_failure(use_plugins, run_dir):
    use_plugins("llmcompare_testplugins")  # crashy declares no natural_stop
    result = llmcompare.compare(["echo", "crashy"], options=["crashy.crash_after=1000"], max_new_tokens=2, repeats=1,
                                warmup=0, reference="echo", fidelity_tokens=8, output=run_dir)
    by = {f.backend: f for f in result.fidelity}
    assert result.summary("crashy").status == "ok"  # the timed pass is untouched
    assert by["crashy"].prompts == 0 and "cannot stop at EOS" in by["crashy"].note
    assert by["echo"].prompts == 10 and by["echo"].exact == 10  # echo against itself (no scores: no verdicts needed)


# ---- the real model judging unfaithful backends ---------------------------------------------------

needs_transformers = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "transformers")),
                                        reason="transformers not installed")


@pytest.fixture(scope="module")
def unfaithful(tmp_path_factory):
    import os

    from conftest import plugin_env

    old = {k: os.environ.get(k) for k in ("PYTHONPATH", "LLMCOMPARE_PLUGINS")}
    os.environ.update(plugin_env("fidelity_testplugins"))
    import sys

    from conftest import PLUGIN_DIR

    from llmcompare import plugins

    sys.path.insert(0, str(PLUGIN_DIR))
    plugins.get_registry(reload=True)
    try:
        yield llmcompare.compare(
            ["flipper", "broken:noisy", "broken:drop"], max_new_tokens=2, repeats=1, warmup=0,
            reference="transformers:fp32", fidelity_tokens=32, output=tmp_path_factory.mktemp("fid") / "run")
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        sys.path.remove(str(PLUGIN_DIR))
        plugins.get_registry(reload=True)


@pytest.mark.engine
@needs_model
@needs_transformers
def test_a_backend_flipping_only_near_ties_is_not_called_broken(unfaithful):
    f = next(f for f in unfaithful.fidelity if f.backend == "flipper:fp32")
    assert f.prompts == 10
    assert f.near_ties >= 1, "no prompt had a near-tie within 32 tokens: the test proves nothing"
    assert f.divergences == 0, f.examples
    assert abs(f.ll_gap["value"]) < 0.2, f.ll_gap


@pytest.mark.engine
@needs_model
@needs_transformers
@pytest.mark.parametrize("label", ["broken:noisy", "broken:drop"])
def test_a_broken_backend_is_caught_as_real_divergences(unfaithful, label):
    f = next(f for f in unfaithful.fidelity if f.backend == label)
    assert f.prompts == 10
    assert f.divergences >= 8, (f.divergences, f.near_ties)
    assert f.exact <= 1
    if label == "broken:noisy":  # text the reference finds far less likely
        assert f.ll_gap["lo"] > 0.5, f.ll_gap
    else:  # one lost token: the divergence is at that position, and the reference finds it unlikely
        assert f.first_divergence_p50 == 5
        assert f.ll_gap["value"] > 0.05


@pytest.mark.engine
@needs_model
@needs_transformers
def test_the_reports_put_fidelity_beside_speed(unfaithful):
    from llmcompare.report.base import write_all

    paths = write_all(unfaithful)
    md = paths["markdown"].read_text()
    assert "## Fidelity: does each backend still say the same thing?" in md
    assert "broken:noisy: " in md and "real divergences in 10" in md
    assert any(f"{word} than flipper:fp32" in md for word in ("faster", "slower", "no faster"))  # speed beside it
    html = paths["html"].read_text()
    assert 'id="fidelity"' in html and "near-ties" in html
    data = __import__("json").loads(paths["json"].read_text())
    assert {b["backend"] for b in data["fidelity"]["backends"]} == {"flipper:fp32", "broken:noisy", "broken:drop"}
    assert data["fidelity"]["reference_perplexity"] > 1.0


@pytest.mark.engine
@needs_model
@needs_transformers
def test_another_margin_needs_no_new_run(unfaithful):
    from llmcompare.analysis.result import load_result

    lenient = load_result(unfaithful.run_dir, overrides={"fidelity": {"near_tie_margin": 100.0}})
    f = next(f for f in lenient.fidelity if f.backend == "broken:noisy")
    assert lenient.spec.config("fidelity").near_tie_margin == 100.0
    assert f.divergences == 0 and f.near_ties == f.prompts - f.exact  # every divergence judged within 100 nats
