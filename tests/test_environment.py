"""The environment block records versions and hardware, never secrets."""

import json
import os
import subprocess
import sys

from llmcompare import environment
from conftest import needs_model

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
