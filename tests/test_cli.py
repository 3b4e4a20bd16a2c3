"""The CLI end to end, and every user error: one line, exit 2, no traceback unless --debug."""

import json
import os
import subprocess
import sys

import pytest
from conftest import needs_model, plugin_env

import llmcompare


def _plugin_env():
    return dict(os.environ, **plugin_env("llmcompare_testplugins"))


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "llmcompare", *args], capture_output=True, text=True, env=env, cwd=cwd)


def assert_user_error(out, *fragments):
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("llmcompare: error: ")
    assert "Traceback" not in out.stderr + out.stdout
    for f in fragments:
        assert f in lines[0], lines[0]


@needs_model
def test_run_end_to_end_writes_every_report(tmp_path):
    out_dir = tmp_path / "run"
    out = cli("--backend", "echo", "-o", "per_token_ms=1", "-n", "6", "-r", "2", "-O", str(out_dir), "-q", "--no-fidelity")
    assert out.returncode == 0, out.stderr
    assert "echo" in out.stdout and "TPOT" in out.stdout
    for name in ("requests.jsonl", "results.json", "requests.csv", "summary.md", "run.json"):
        assert (out_dir / name).exists(), name
    results = json.loads((out_dir / "results.json").read_text())
    assert results["summaries"][0]["n_requests"] == 20
    env = results["environment"]
    for key in ("os", "cpu", "ram_bytes", "python", "llmcompare", "packages", "model", "plugins"):
        assert key in env
    assert env["plugins"]["llmcompare.backends.echo"] == "built-in"
    assert env["model"]["name"] == "SmolLM2-135M-Instruct" and env["model"]["quantization"] == "Q4_1"
    csv_lines = (out_dir / "requests.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 20 + 1  # header, measured, warm-up
    summary = (out_dir / "summary.md").read_text()
    assert "| echo | ok | 20 |" in summary
    assert f"- **echo**: echo {llmcompare.__version__}; device cpu; in-process; prefix cache: none across requests;" in summary
    # the report command rebuilds everything from requests.jsonl alone
    (out_dir / "results.json").unlink()
    assert cli("report", str(out_dir)).returncode == 0
    assert json.loads((out_dir / "results.json").read_text())["summaries"][0]["n_requests"] == 20


@pytest.mark.engine
@needs_model
def test_side_by_side_variants_and_options(tmp_path):
    out = cli("-b", "echo", "-b", "crashy", "--no-fidelity", "-o", "echo.per_token_ms=1", "-o", "crashy.crash_after=100",
              "-n", "4", "-r", "1", "-O", str(tmp_path / "r"), "-q",
              env=_plugin_env())
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [s["backend"] for s in results["summaries"]] == ["echo", "crashy"]
    assert results["summaries"][0]["info"]["options"]["per_token_ms"] == 1.0
    assert results["comparisons"][0]["baseline"] == "echo"
    assert results["comparisons"][0]["agreement"]["token_match"] == 1.0


@pytest.mark.engine
@needs_model
def test_failed_backend_exit_status_1_and_others_reported(tmp_path):
    out = cli("-b", "crashy", "-b", "echo", "--no-fidelity", "-o", "crashy.crash_after=0", "-n", "4", "-r", "1",
              "-O", str(tmp_path / "r"), "-q", env=_plugin_env())
    assert out.returncode == 1
    assert "failed" in out.stdout and "SIGKILL" in out.stdout
    assert "| echo | ok |" in (tmp_path / "r" / "summary.md").read_text()


def test_unknown_backend_did_you_mean():
    assert_user_error(cli("--backend", "ctranslate"), "unknown backend 'ctranslate'", "did you mean 'ctranslate2'")


def test_unknown_variant():
    assert_user_error(cli("--backend", "transformers:bf61"), "no variant 'bf61'", "did you mean 'bf16'")


@pytest.mark.engine
def test_engine_not_installed_gives_pip_command():
    assert_user_error(cli("--backend", "notinstalled", env=_plugin_env()),
                      "not installed", "pip install 'llmcompare[notinstalled]'")


def test_missing_model_path(tmp_path):
    assert_user_error(cli("--backend", "echo", "--model", str(tmp_path / "nope.gguf")), "not found", "nope.gguf")


def test_unknown_synthetic_shape():
    assert_user_error(cli("--backend", "echo", "--model", "synthetic:llama-2-7"), "did you mean 'llama-2-7b'")


@needs_model
@pytest.mark.parametrize(
    "name,content,where",
    [
        ("bad.jsonl", '{"text": "ok"}\n{"text": "fine"}\n{"text": broken}\n', "bad.jsonl:3"),
        ("bad.jsonl", '{"text": "ok"}\n{"id": "x"}\n', "bad.jsonl:2"),
        ("bad.yaml", "- one\n- two\n- [unclosed\n", "bad.yaml:4"),
        ("bad.yaml", "- one\n- 42\n", "bad.yaml:2"),
        ("bad.txt", b"fine\n\xff\xfe broken\n", "bad.txt:2"),
        ("bad.csv", "a,b\n", "unsupported prompt file type"),
    ],
)
def test_malformed_prompt_file_names_file_and_line(tmp_path, name, content, where):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = cli("--backend", "echo", "--no-fidelity", "--prompts", str(path), "-O", str(tmp_path / "r"))
    assert_user_error(out, where)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "opt,fragment",
    [
        ("ttft_ms=fast", "not a valid float"),
        ("ttft_ms=-5", "must be at least 0"),
        ("chunk=0", "must be at least 1"),
        ("tfft_ms=5", "did you mean 'ttft_ms'"),
        ("novalue", "KEY=VALUE"),
        ("nosuch.ttft_ms=5", "names no backend"),
    ],
)
def test_bad_option_value(opt, fragment):
    assert_user_error(cli("--backend", "echo", "--option", opt), fragment)


def test_bad_numbers():
    assert_user_error(cli("--backend", "echo", "--max-new-tokens", "0"), "--max-new-tokens must be at least 1")
    assert_user_error(cli("--backend", "echo", "--repeats", "0"), "--repeats must be at least 1")
    assert_user_error(cli("--backend", "echo", "--device", "tpu"), "does not run on device 'tpu'")


def test_no_backend():
    assert_user_error(cli(), "no backend given")


@pytest.mark.engine
def test_llamacpp_needs_a_variant_for_a_synthetic_model_and_refuses_one_for_a_gguf_up_front():
    assert_user_error(cli("--backend", "llamacpp", "--model", "synthetic:smollm2-135m"), "needs a variant",
                      "llamacpp:q4_0")
    assert_user_error(cli("--backend", "llamacpp-server:f16"), "drop the variant", "llamacpp-server, not")


def test_debug_shows_traceback():
    out = cli("--debug", "--backend", "ctranslate")
    assert out.returncode != 0 and "Traceback" in out.stderr


@pytest.mark.engine
def test_existing_run_dir_is_not_overwritten(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "requests.jsonl").write_text('{"type": "run"}\n')
    out = cli("--backend", "echo", "--no-fidelity", "-O", str(d))
    assert_user_error(out, "already holds a run", "--resume")
    assert (d / "requests.jsonl").read_text() == '{"type": "run"}\n'


def test_resume_of_nothing():
    assert_user_error(cli("--resume", "/nonexistent/run"), "nothing to resume")


def test_help_and_version_are_fast_and_light():
    out = cli("--version")
    assert out.returncode == 0 and "llmcompare" in out.stdout
    out = cli("--help")
    assert out.returncode == 0 and "backends" in out.stdout


@pytest.mark.engine
@needs_model
def test_label_runs_one_backend_twice_with_other_options(tmp_path):
    out = cli("-b", "echo", "-b", "echo@slow", "--no-fidelity", "-o", "slow.per_token_ms=2", "-n", "4", "-r", "1", "-w", "0",
              "-O", str(tmp_path / "r"), "-q")
    assert out.returncode == 0, out.stderr
    s = {x["backend"]: x for x in json.loads((tmp_path / "r" / "results.json").read_text())["summaries"]}
    assert s["slow"]["info"]["options"] == {"per_token_ms": 2.0, "ttft_ms": 0.0, "chunk": 1, "ballast_mb": 0}
    assert s["echo"]["info"]["options"]["per_token_ms"] == 0.0
    assert s["slow"]["tpot_ms"]["p50"] > s["echo"]["tpot_ms"]["p50"]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("--resume", "run"), "nothing to resume in run"),
        (("-b", "ctranslate", "-O", "report"), "unknown backend 'ctranslate'"),
        (("-b", "echo", "--prompts", "backends"), "unknown prompt set 'backends'"),
        (("--prompts=backends", "-b", "echo"), "unknown prompt set 'backends'"),
    ],
)
@pytest.mark.engine
def test_option_values_are_never_taken_for_commands(args, fragment, tmp_path):
    assert_user_error(cli(*args, cwd=tmp_path), fragment)


def test_command_after_global_debug_flag_and_options():
    out = cli("--debug", "backends")
    assert out.returncode == 0 and "llmcompare backends" in out.stdout


@pytest.mark.engine
@needs_model
def test_a_huge_prompt_is_refused_before_tokenizing(tmp_path):
    import time

    path = tmp_path / "huge.txt"
    path.write_text("word " * 2_600_000 + "\n")  # 13 MB on one line
    t = time.monotonic()
    out = cli("-b", "echo", "--no-fidelity", "--prompts", str(path), "-O", str(tmp_path / "r"))
    assert_user_error(out, "12,999,999 characters", "context of 8,192 tokens")
    assert time.monotonic() - t < 30
    assert not (tmp_path / "r").exists()


@pytest.mark.engine
@needs_model
def test_a_prompt_longer_than_the_context_is_refused_with_its_length():
    assert_user_error(cli("-b", "echo", "--input-tokens", "9000"), "9,000 tokens", "context of 8,192 tokens")


@pytest.mark.engine
@needs_model
def test_verify_backend_runs_the_conformance_kit_and_a_comparison(tmp_path):
    out = cli("verify-backend", "echo", "--reference", "echo@ref", "-o", "ballast_mb=64", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "conformance of 'echo': PASS" in out.stdout
    assert "echo: VERIFIED" in out.stdout and "10/10" in out.stdout
