"""The opt-in cuBLAS 12 → 13 alias: the link folder made from a fake cuBLAS 13 folder, the worker
environment it produces, what is recorded, and that nothing happens unless asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from llmcompare.hardware import cuda_compat, environment
from llmcompare.hardware.cuda_compat import ALIAS_ENV


@pytest.fixture
def cublas13(tmp_path):
    """A folder shaped like the GPU machine's ``nvidia/cu13/lib``: versioned files and their sonames."""
    lib = tmp_path / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    for name in ("libcublas.so.13.1.0.3", "libcublasLt.so.13.1.0.3"):
        (lib / name).write_bytes(b"\x7fELF fake")
    os.symlink("libcublas.so.13.1.0.3", lib / "libcublas.so.13")
    os.symlink("libcublasLt.so.13.1.0.3", lib / "libcublasLt.so.13")
    return lib


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOMPARE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(ALIAS_ENV, raising=False)


def test_not_asked_for_means_nothing_changes():
    env = {"LD_LIBRARY_PATH": "/opt/x", "PATH": "/bin"}
    assert cuda_compat.worker_env(env) == (env, None)
    for off in ("", "0", "false", "no"):
        assert cuda_compat.requested({ALIAS_ENV: off}) is None
    assert cuda_compat.environment_record() is None


def test_the_link_folder_points_each_soname_12_at_cublas_13(cublas13, tmp_path):
    folder = cuda_compat.alias_dir(cublas13, tmp_path / "links")
    assert sorted(p.name for p in folder.iterdir()) == ["libcublas.so.12", "libcublasLt.so.12"]
    assert os.readlink(folder / "libcublas.so.12") == str(cublas13.resolve() / "libcublas.so.13")
    assert os.readlink(folder / "libcublasLt.so.12") == str(cublas13.resolve() / "libcublasLt.so.13")
    assert (folder / "libcublas.so.12").resolve() == (cublas13 / "libcublas.so.13.1.0.3").resolve()
    assert cuda_compat.alias_dir(cublas13, tmp_path / "links") == folder  # made once, then reused


def test_a_stale_link_folder_is_rebuilt(cublas13, tmp_path):
    folder = cuda_compat.alias_dir(cublas13, tmp_path / "links")
    os.remove(folder / "libcublas.so.12")
    os.symlink("/nowhere/libcublas.so.13", folder / "libcublas.so.12")
    assert os.readlink(cuda_compat.alias_dir(cublas13, tmp_path / "links") / "libcublas.so.12").startswith(str(cublas13.resolve()))


def test_worker_env_puts_the_links_then_cublas_13_first_on_ld_library_path(cublas13, tmp_path):
    env, record = cuda_compat.worker_env({ALIAS_ENV: "1", "LD_LIBRARY_PATH": "/opt/a:/opt/b"}, candidates=[tmp_path, cublas13])
    parts = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert parts == [record["alias_dir"], str(cublas13.resolve()), "/opt/a", "/opt/b"]
    assert record["requested"] == f"{ALIAS_ENV}=1"
    assert record["links"]["libcublas.so.12"].endswith("/libcublas.so.13")
    assert "libcublas.so.12 ->" in cuda_compat.describe(record)
    env2, _ = cuda_compat.worker_env({ALIAS_ENV: str(cublas13)})  # an explicit folder instead of a search
    assert env2["LD_LIBRARY_PATH"].split(os.pathsep)[1] == str(cublas13.resolve())


def test_search_finds_cublas_13_in_the_nvidia_wheel_layout(cublas13, monkeypatch):
    monkeypatch.syspath_prepend(str(cublas13.parents[2]))  # tmp/nvidia is a namespace package now
    assert cublas13.resolve() in [d.resolve() for d in cuda_compat._nvidia_lib_dirs() if d.exists()]


def test_asked_for_but_impossible_is_recorded_and_leaves_the_environment_alone(tmp_path):
    env = {ALIAS_ENV: "1", "LD_LIBRARY_PATH": "/opt/a"}
    out, record = cuda_compat.worker_env(env, candidates=[tmp_path])
    assert out == env and "no folder with libcublas.so.13" in record["error"]
    _, record = cuda_compat.worker_env({ALIAS_ENV: str(tmp_path)})
    assert "holds no libcublas.so.13" in record["error"]
    assert "not set up" in cuda_compat.describe(record)


def test_the_environment_block_records_the_alias(cublas13, monkeypatch):
    monkeypatch.setenv(ALIAS_ENV, str(cublas13))
    block = environment.capture([])["cuda_compat"]["cublas12_alias"]
    assert block["cublas13_dir"] == str(cublas13.resolve())
    assert set(block["links"]) == {"libcublas.so.12", "libcublasLt.so.12"}


def test_a_child_started_with_worker_env_sees_the_alias_on_its_loader_path(cublas13):
    env, record = cuda_compat.worker_env({**os.environ, ALIAS_ENV: str(cublas13)})
    out = subprocess.run([sys.executable, "-c", "import os; print(os.environ['LD_LIBRARY_PATH'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split(os.pathsep)[0].strip() == record["alias_dir"]


@pytest.mark.engine
def test_a_run_asked_for_the_alias_says_so_in_its_environment_block_and_worker_log(cublas13, tmp_path):
    out_dir = tmp_path / "run"
    env = {**os.environ, ALIAS_ENV: str(cublas13)}
    done = subprocess.run([sys.executable, "-m", "llmcompare", "-b", "echo", "--no-fidelity", "-n", "2", "-r", "1", "-q",
                           "--model", "synthetic:smollm2-135m", "-O", str(out_dir)],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    block = json.loads((out_dir / "results.json").read_text())["environment"]["cuda_compat"]["cublas12_alias"]
    assert block["cublas13_dir"] == str(cublas13.resolve())
    log = next((out_dir / "logs").glob("*.log")).read_text().splitlines()[0]
    assert log.startswith("llmcompare: cuBLAS 12 alias") and block["alias_dir"] in log
