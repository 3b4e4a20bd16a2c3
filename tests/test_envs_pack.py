"""``llmcompare env pack`` and ``env create --from``: a wheelhouse for a host with no network, and the
environment built from it offline.

No network: the "index" is a folder of wheels that ``pip wheel`` builds here from trivial local
packages (an engine and its dependency), llmcompare's wheel is zipped from this checkout, and the
"target" is this Python, whose packages the pack is told the target has (a ``pip freeze`` of it). The
round trip really runs pip: ``pip download`` for the pack, ``python -m venv`` and ``pip install
--no-index`` for the environment, then the import check.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from llmcompare import __version__
from llmcompare.backend import EnvRecipe
from llmcompare.cli.main import main
from llmcompare.envs import pack as packmod
from llmcompare.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
RECIPE = EnvRecipe(extra="", check_module="lcfake_engine", engine_distribution="lcfake-engine",
                   requirements=("lcfake-engine==1.0",), build_note="wheels only (a test engine)")
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


BACKEND = """
# A PEP 517 build backend in 30 lines (standard library only), so that pip wheel builds this package
# here with no setuptools, wheel or network.
import base64, hashlib, json, os, zipfile

CFG = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pkg.json")))
DIST = CFG["name"].replace("-", "_") + "-" + CFG["version"]


def _metadata():
    lines = ["Metadata-Version: 2.1", "Name: " + CFG["name"], "Version: " + CFG["version"]]
    return "\\n".join(lines + ["Requires-Dist: " + r for r in CFG["requires"]]) + "\\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = os.path.join(metadata_directory, DIST + ".dist-info")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "METADATA"), "w").write(_metadata())
    return DIST + ".dist-info"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {CFG["module"] + "/__init__.py": open(os.path.join(CFG["module"], "__init__.py")).read(),
             DIST + ".dist-info/METADATA": _metadata(),
             DIST + ".dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
    rec = [p + ",sha256=" + base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b"=").decode()
           + "," + str(len(t.encode())) for p, t in files.items()]
    files[DIST + ".dist-info/RECORD"] = "\\n".join(rec + [DIST + ".dist-info/RECORD,,"]) + "\\n"
    name = DIST + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
        for p, t in files.items():
            zf.writestr(p, t)
    return name
"""


def _local_package(root: Path, name: str, module: str, body: str, requires: list[str]) -> Path:
    src = root / name
    (src / module).mkdir(parents=True)
    (src / module / "__init__.py").write_text(body)
    (src / "pkg.json").write_text(json.dumps({"name": name, "version": "1.0", "module": module, "requires": requires}))
    (src / "backend.py").write_text(BACKEND)
    (src / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n')
    return src


def _llmcompare_wheel(directory: Path) -> Path:
    """A wheel of this checkout's llmcompare package with llmcompare's declared requirements, zipped
    here (building one with pip needs setuptools from an index)."""
    name = f"llmcompare-{__version__}"
    files: dict[str, bytes] = {}
    for path in sorted((ROOT / "llmcompare").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(ROOT).as_posix()] = path.read_bytes()
    requires = importlib.metadata.requires("llmcompare") or []
    extras = sorted({r.split("extra ==")[1].strip().strip("\"'") for r in requires if "extra ==" in r})
    meta = ["Metadata-Version: 2.1", "Name: llmcompare", f"Version: {__version__}",
            *[f"Provides-Extra: {e}" for e in extras], *[f"Requires-Dist: {r}" for r in requires]]
    files[f"{name}.dist-info/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[f"{name}.dist-info/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},{len(b)}"
              for p, b in files.items()]
    files[f"{name}.dist-info/RECORD"] = ("\n".join([*record, f"{name}.dist-info/RECORD,,"]) + "\n").encode()
    out = directory / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p, b in files.items():
            zf.writestr(p, b)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An index folder (the engine and its dependency, built by pip wheel), llmcompare's wheel, and a
    freeze file of this Python (the target's packages)."""
    tmp = tmp_path_factory.mktemp("pack-world")
    index = tmp / "index"
    index.mkdir()
    dep = _local_package(tmp / "src", "lcfake-dep", "lcfake_dep", "VALUE = 41\n", [])
    eng = _local_package(tmp / "src", "lcfake-engine", "lcfake_engine",
                         "from lcfake_dep import VALUE as _V\nVALUE = _V + 1\n", ["lcfake-dep>=1.0", "rich"])
    for src in (dep, eng):
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(index), str(src)], check=True, capture_output=True)
    freeze = tmp / "target-freeze.txt"
    lines = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
                    if d.metadata["Name"] and packmod.canonical(d.metadata["Name"]) not in ("llmcompare",)})
    freeze.write_text("# this Python, as the target\n-e git+https://example.invalid/x#egg=x\n" + "\n".join(lines) + "\n")
    return {"index": index, "wheel": _llmcompare_wheel(tmp), "freeze": freeze, "tmp": tmp}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOMPARE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(packmod, "recipe_for", lambda name, device: RECIPE)
    return tmp_path / "cache"


def _pack(world, out: Path, **kw) -> dict:
    lines: list[str] = []
    manifest = packmod.pack("fakeengine", out, device="cpu", python_version=PY, platform="manylinux_2_28_x86_64",
                            target_freeze=world["freeze"], sources=["--no-index", "--find-links", str(world["index"])],
                            llmcompare_wheel=world["wheel"], quiet=True, say=lines.append, **kw)
    manifest["_said"] = lines
    return manifest


@pytest.fixture(scope="module")
def packed(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("packs") / "fakeengine"
    mp = pytest.MonkeyPatch()
    mp.setattr(packmod, "recipe_for", lambda name, device: RECIPE)
    try:
        manifest = _pack(world, out)
    finally:
        mp.undo()
    return out, manifest


# ---------------------------------------------------------------- the pack


def test_pack_holds_what_the_target_lacks_and_says_so(packed):
    out, manifest = packed
    files = {f["name"]: f for f in manifest["files"]}
    # the engine, its dependency (from the index) and llmcompare; rich and every other package this
    # Python has are the target's, so not packed, and no stand-in is left behind
    assert set(files) == {"lcfake-engine", "lcfake-dep", "llmcompare"}, sorted(files)
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f["file"] for f in manifest["files"]), "pack.json",
                                                            "pack.log"])
    assert not any("provided" in p.name for p in out.iterdir())
    for f in manifest["files"]:
        data = (out / f["file"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["size"] == len(data)
    assert files["lcfake-engine"]["role"] == "engine" and files["llmcompare"]["role"] == "llmcompare"
    assert manifest["backend"] == "fakeengine" and manifest["device"] == "cpu" and manifest["python"] == PY
    assert manifest["platform"] == "manylinux_2_28_x86_64" and "manylinux2014_x86_64" in manifest["platforms"]
    assert manifest["check_module"] == "lcfake_engine"
    assert {"name": "rich", "version": importlib.metadata.version("rich")} in manifest["target_provides"]
    assert manifest["target_freeze_skipped"] == ["-e git+https://example.invalid/x#egg=x"]
    assert manifest["build"]["system_site_packages"] is True and manifest["build"]["note"]
    assert json.loads((out / "pack.json").read_text())["total_bytes"] == sum(f["size"] for f in manifest["files"])
    said = "\n".join(manifest["_said"])
    assert "3 files" in said and "not packed, the target provides:" in said and "lcfake_engine-1.0" in said


def test_a_requirement_the_target_cannot_meet_fails_at_pack_time(world, cache, tmp_path):
    # the target "has" rich at a version the engine's requirement excludes: pip's resolver refuses here
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("rich==0.0.1\n")
    with pytest.raises(UserError) as e:
        packmod.pack("fakeengine", tmp_path / "p", device="cpu", python_version=PY, target_freeze=freeze,
                     with_requirements=["rich>=1"], sources=["--no-index", "--find-links", str(world["index"])],
                     llmcompare_wheel=world["wheel"], quiet=True, say=lambda s: None)
    assert "\n" not in str(e.value) and "pack.log" in str(e.value)


# ---------------------------------------------------------------- create --from


def test_create_from_the_pack_offline_and_the_engine_imports(packed, cache):
    out, _ = packed
    said: list[str] = []
    env = packmod.create_from("fakeengine", out, quiet=True, say=said.append)
    python = Path(env["python"])
    assert python.exists() and env["packages"]["lcfake-engine"] == "1.0" and env["engine"] == {"lcfake-engine": "1.0"}
    assert env["pack"]["sha256"] == hashlib.sha256((out / "pack.json").read_bytes()).hexdigest()
    run = subprocess.run([str(python), "-c", "import lcfake_engine, llmcompare, rich; print(lcfake_engine.VALUE,"
                                             " llmcompare.__file__)"], capture_output=True, text=True, cwd=out)
    assert run.returncode == 0, run.stderr
    value, where = run.stdout.split()
    # the engine works, and llmcompare is the pack's wheel, installed into the new environment itself
    assert value == "42" and str(python.parent.parent) in where
    log = (python.parent.parent / "build.log").read_text()
    assert "--no-index" in log and "--system-site-packages" in log
    # built from the same pack again: nothing to do
    again = packmod.create_from("fakeengine", out, quiet=True, say=said.append)
    assert again["created"] == env["created"] and "up to date" in said[-1]
    # llmcompare's own record of it: a managed environment like any other
    from llmcompare import envs

    assert envs.managed_python("fakeengine") == str(python)


def _copy(out: Path, tmp: Path) -> Path:
    dest = tmp / "copy"
    shutil.copytree(out, dest)
    return dest


def test_a_corrupt_wheel_is_refused_in_one_line_before_anything_is_built(packed, cache, tmp_path, capsys):
    out, manifest = packed
    dest = _copy(out, tmp_path)
    engine = next(f["file"] for f in manifest["files"] if f["name"] == "lcfake-engine")
    data = bytearray((dest / engine).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    (dest / engine).write_bytes(bytes(data))
    with pytest.raises(UserError) as e:
        packmod.create_from("fakeengine", dest, quiet=True, say=lambda s: None)
    msg = str(e.value)
    assert engine in msg and "corrupt" in msg and "sha256" in msg and "\n" not in msg
    assert not (cache / "envs" / "fakeengine").exists()
    # the CLI says the same, on one line, with status 2
    code = main(["env", "create", "fakeengine", "--from", str(dest)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and engine in err


def test_a_missing_or_truncated_wheel_is_named(packed, cache, tmp_path):
    out, manifest = packed
    dest = _copy(out, tmp_path)
    dep = next(f["file"] for f in manifest["files"] if f["name"] == "lcfake-dep")
    engine = next(f["file"] for f in manifest["files"] if f["name"] == "lcfake-engine")
    (dest / dep).unlink()
    (dest / engine).write_bytes((dest / engine).read_bytes()[:100])  # a part left out when reassembling
    with pytest.raises(UserError) as e:
        packmod.create_from("fakeengine", dest, quiet=True, say=lambda s: None)
    msg = str(e.value)
    assert f"{dep} is missing" in msg and f"{engine} is corrupt" in msg and "\n" not in msg


def test_create_from_refuses_the_wrong_pack_python_or_target(packed, cache, tmp_path):
    out, _ = packed
    with pytest.raises(UserError, match="is a pack of 'fakeengine', not 'vllm'"):
        packmod.create_from("vllm", out, say=lambda s: None)
    with pytest.raises(UserError, match="holds no pack.json"):
        packmod.create_from("fakeengine", tmp_path, say=lambda s: None)
    dest = _copy(out, tmp_path)
    m = json.loads((dest / "pack.json").read_text())
    m["python"] = "3.99"
    (dest / "pack.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="the pack is for Python 3.99"):
        packmod.create_from("fakeengine", dest, say=lambda s: None)
    m["python"] = PY
    m["target_provides"].append({"name": "no-such-dist-anywhere", "version": "1.0"})
    (dest / "pack.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="provides no-such-dist-anywhere==1.0"):
        packmod.create_from("fakeengine", dest, say=lambda s: None)


# ---------------------------------------------------------------- the pieces


def test_platform_tags_and_stand_in_versions():
    tags = packmod.platforms_for("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64" and tags[-4:] == ["manylinux_2_5_x86_64", "manylinux2014_x86_64",
                                                                "manylinux2010_x86_64", "manylinux1_x86_64"]
    assert packmod.platforms_for("manylinux_2_17_aarch64")[-1] == "manylinux2014_aarch64"
    assert packmod.platforms_for("macosx_14_0_arm64") == ["macosx_14_0_arm64"]
    assert packmod.stand_in_version("2.11.0") == "2.11.0+provided"
    assert packmod.stand_in_version("2.11.0+cu130") == "2.11.0+cu130.provided"
    assert packmod.parse_pin("torch==2.11.0+cu130", "x") == ("torch", "2.11.0+cu130")
    with pytest.raises(UserError, match="is not NAME==VERSION"):
        packmod.parse_pin("torch>=2", "--target-has")


def test_a_stand_in_wheel_is_a_valid_wheel(tmp_path):
    whl = packmod.write_stand_in(tmp_path, "Some.Pkg", "1.2+provided", ["Requires-Dist: rich"])
    assert whl.name == "Some_Pkg-1.2+provided-py3-none-any.whl"
    with zipfile.ZipFile(whl) as zf:
        meta = zf.read("Some_Pkg-1.2+provided.dist-info/METADATA").decode()
        record = zf.read("Some_Pkg-1.2+provided.dist-info/RECORD").decode()
    assert "Name: Some.Pkg" in meta and "Requires-Dist: rich" in meta and "METADATA,sha256=" in record


def test_a_source_packages_requirements_come_from_its_pkg_info(tmp_path):
    sdist = tmp_path / "thing-0.3.36.tar.gz"
    info = ("Metadata-Version: 2.2\nName: thing\nVersion: 0.3.36\nRequires-Python: >=3.8\nRequires-Dist: numpy>=1.20\n"
            "Provides-Extra: server\nRequires-Dist: uvicorn>=0.22; extra == \"server\"\n").encode()
    with tarfile.open(sdist, "w:gz") as tf:
        ti = tarfile.TarInfo("thing-0.3.36/PKG-INFO")
        ti.size = len(info)
        tf.addfile(ti, io.BytesIO(info))
    lines = packmod.sdist_metadata(sdist)
    assert "Requires-Dist: numpy>=1.20" in lines and 'Requires-Dist: uvicorn>=0.22; extra == "server"' in lines
    assert "Provides-Extra: server" in lines and "Requires-Python: >=3.8" in lines
    facts = packmod.file_facts(sdist)
    assert (facts["name"], facts["version"], facts["kind"]) == ("thing", "0.3.36", "sdist")


def test_the_gpu_recipes_say_how_they_are_built():
    from llmcompare.envs import recipes

    table = recipes()
    assert {"vllm", "llamacpp", "transformers", "exllamav2"} <= set(table)
    llama = table["llamacpp"]["cuda"]
    assert llama.source_packages == ("llama-cpp-python",) and "-DGGML_CUDA=on" in dict(llama.build_env)["CMAKE_ARGS"]
    assert "bitsandbytes==0.50.2" in table["transformers"]["cuda"].requirements
    assert dict(table["exllamav2"]["cuda"].build_env)["TORCH_CUDA_ARCH_LIST"]
    assert all(r.build_note for b in ("vllm", "llamacpp", "transformers", "exllamav2") for r in [table[b]["cuda"]])


def test_a_backend_without_its_own_environment_uses_its_engines(cache, monkeypatch):
    """vllm-serve and llamacpp-server run in the environment built for vllm and llamacpp."""
    from llmcompare import envs

    root = cache / "envs" / "llamacpp"
    root.mkdir(parents=True)
    (root / "llmcompare-env.json").write_text(json.dumps({"name": "llamacpp", "python": sys.executable,
                                                          "recipe": {"check_module": "llama_cpp, llama_cpp.server"}}))
    assert envs.managed_python("llamacpp-server") == sys.executable
    assert envs.managed_python("llamacpp") == sys.executable
    assert envs.managed_python("ctranslate2") is None


@pytest.mark.engine
def test_offline_host_script_joins_parts_builds_and_runs_a_study(packed, tmp_path):
    """benchmarks/gpu/offline-host.sh as a GPU host would run it: the pack arrives as parts of a tar,
    the script joins them, bootstraps llmcompare from the pack, builds the environment offline and runs
    a study with it (an echo cell here)."""
    out, _ = packed
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    tar = subprocess.run(["tar", "-cf", "-", "-C", str(out.parent), out.name], capture_output=True, check=True).stdout
    size = len(tar) // 3 + 1
    for i in range(3):  # as `split -b SIZE -d` names them
        (inbox / f"{out.name}.tar.part-{i:02d}").write_bytes(tar[i * size:(i + 1) * size])
    study = tmp_path / "s.yaml"
    study.write_text("name: offline\nmodel: synthetic:smollm2-135m\nscenario: run\n"
                     "workload: {max_new_tokens: 4, repeats: 1, warmup: 0}\nmatrix: {backend: [echo]}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PYTHON=sys.executable, LLMCOMPARE_CACHE_DIR=str(tmp_path / "cache"), MAIN_PACK="fakeengine",
               PATH=os.environ["PATH"])
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "offline-host.sh"), str(inbox), str(study),
                          str(tmp_path / "study")], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "joining 3 parts of fakeengine" in run.stdout
    m = json.loads((tmp_path / "study" / "study.json").read_text())
    assert [c["status"] for c in m["cells"]] == ["done"]
    python = tmp_path / "cache" / "envs" / "fakeengine" / "bin" / "python"
    assert python.exists()
