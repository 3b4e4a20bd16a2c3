"""Plugin loading: built-ins through the hook, temporary plugins, broken plugins isolated."""

import subprocess
import sys

import pytest
from conftest import needs_model

import llmcompare
from llmcompare import plugins
from llmcompare.backend import BackendSpec
from llmcompare.errors import UnknownBackend


def test_builtins_register_through_the_hook():
    reg = plugins.get_registry(reload=True)
    for name in ("echo", "transformers", "ctranslate2", "llamacpp"):
        assert reg.backends[name].source == "built-in"
    assert reg.errors == []
    assert set(plugins.DEFAULT_PLUGINS) <= set(reg.plugins)


def test_import_is_light():
    # `import llmcompare` and the registry must not import any engine
    code = (
        "import sys, llmcompare; from llmcompare.plugins import get_registry; get_registry();"
        "heavy = [m for m in ('torch', 'transformers', 'ctranslate2', 'llama_cpp') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_temporary_plugin_registers_and_runs(use_plugins, run_dir):
    reg = use_plugins("llmcompare_testplugins")
    assert reg.backends["crashy"].source == "LLMCOMPARE_PLUGINS"
    assert reg.get("crashy").load_class().__name__ == "CrashyBackend"


@pytest.mark.engine
@needs_model
def test_temporary_plugin_runs_in_a_worker(use_plugins, run_dir):
    use_plugins("llmcompare_testplugins")
    result = llmcompare.compare(["crashy"], options=["crash_after=1000"], max_new_tokens=4, repeats=1,
                                warmup=0, output=run_dir, fidelity=False)
    assert result.summary("crashy").status == "ok"
    assert result.summary("crashy").n_requests == 10


def test_broken_plugins_are_reported_and_isolated(use_plugins):
    reg = use_plugins("broken_import_plugin", "broken_register_plugin", "llmcompare_testplugins")
    failed = {e.plugin: e.error for e in reg.errors}
    assert "ModuleNotFoundError" in failed["broken_import_plugin"]
    assert "broken on purpose" in failed["broken_register_plugin"]
    # everything else still loaded
    assert {"echo", "transformers", "ctranslate2", "llamacpp", "crashy", "hangs"} <= set(reg.backends)


def test_broken_plugin_shown_by_backends_command(use_plugins):
    use_plugins("broken_import_plugin", "llmcompare_testplugins")
    out = subprocess.run([sys.executable, "-m", "llmcompare", "backends"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "broken_import_plugin" in out.stdout and "failed to load" in out.stdout
    assert "crashy" in out.stdout and "LLMCOMPARE_PLUGINS" in out.stdout
    # a backend whose engine is missing says how to install it
    assert "pip install 'llmcompare[notinstalled]'" in out.stdout


def test_blocking_a_builtin(monkeypatch):
    monkeypatch.setenv("LLMCOMPARE_BLOCK_PLUGINS", "llmcompare.backends.llamacpp")
    reg = plugins.get_registry(reload=True)
    try:
        assert "llamacpp" not in reg.backends and "echo" in reg.backends
    finally:
        monkeypatch.undo()
        plugins.get_registry(reload=True)


def test_duplicate_name_is_reported_not_overwritten(use_plugins, monkeypatch, tmp_path):
    (tmp_path / "dup_plugin.py").write_text(
        "from llmcompare import hookimpl\nfrom llmcompare.backend import BackendSpec\n"
        "@hookimpl\ndef register_backends(register):\n"
        "    register(BackendSpec(name='echo', target='x:Y', install='pip install x'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = use_plugins("dup_plugin")
    assert reg.backends["echo"].source == "built-in"
    assert any("already registered" in e.error for e in reg.errors)


def test_unknown_backend_did_you_mean():
    with pytest.raises(UnknownBackend, match="did you mean 'ctranslate2'"):
        plugins.get_registry().get("ctranslate")


def test_spec_is_light_and_typed():
    spec = plugins.get_registry().get("echo")
    assert isinstance(spec, BackendSpec) and spec.target.endswith(":EchoBackend")
    assert spec.validate_options({"ttft_ms": "5"})["ttft_ms"] == 5.0


def test_entry_point_plugin_is_listed_with_its_distribution(tmp_path, monkeypatch):
    # what `pip install llmcompare-fake` leaves behind: a dist-info with an entry point
    dist = tmp_path / "llmcompare_fake-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llmcompare-fake\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text("[llmcompare]\nfake = fake_ep_plugin\n")
    (tmp_path / "fake_ep_plugin.py").write_text(
        "from llmcompare import hookimpl\nfrom llmcompare.backend import BackendSpec\n"
        "@hookimpl\ndef register_backends(register):\n"
        "    register(BackendSpec(name='fakeep', target='llmcompare.backends.echo:EchoBackend',"
        " install='pip install llmcompare-fake'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        reg = plugins.get_registry(reload=True)
        assert reg.backends["fakeep"].source == "llmcompare-fake==1.2"
        assert reg.plugins["fake"] == "llmcompare-fake==1.2"
    finally:
        monkeypatch.undo()
        sys.modules.pop("fake_ep_plugin", None)
        plugins.get_registry(reload=True)


def test_a_misspelt_hook_implementation_is_an_error_not_silence(use_plugins, tmp_path, monkeypatch):
    (tmp_path / "misspelt_plugin.py").write_text(
        "from llmcompare import hookimpl\n"
        "@hookimpl\ndef register_backend(register):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = use_plugins("misspelt_plugin", "llmcompare_testplugins")
    errors = {e.plugin: e.error for e in reg.errors}
    assert "misspelt_plugin" in errors and "register_backend" in errors["misspelt_plugin"]
    assert "crashy" in reg.backends and "echo" in reg.backends  # the others still load
