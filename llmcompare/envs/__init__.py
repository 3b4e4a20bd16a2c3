"""Per-backend Python environments, for engines that cannot share the main one.

vLLM pins its own torch and a transformers older than the main environment's, so it runs in a virtual
environment of its own. ``llmcompare env create vllm`` builds one under the user cache directory,
``<cache>/envs/vllm`` (:func:`env_dir`), in five steps:

1. create the virtual environment (``uv venv`` when uv is on PATH, else ``python -m venv``);
2. install llmcompare into it with the backend's extra, under the recipe's constraints file: editable
   from the same checkout when the running llmcompare is an editable install, else the same version;
3. uninstall the recipe's ``remove`` list (packages a dependency drags in that break the engine);
4. check that the engine imports there;
5. write ``llmcompare-env.json``: the interpreter, every installed distribution and its version, the
   creation time, how long the build took and how big it is. It is written last, so a directory
   without it is an unfinished build: it is never used, and the next ``create`` starts it over.

``create`` on an environment that exists and was built from the same recipe only reinstalls llmcompare
(seconds), so CI can run it every time.

Which interpreter runs a backend's worker is :func:`llmcompare.runner.interpreter.worker_python`'s
answer: an explicit ``--python NAME=PATH``, else the main environment when the engine imports there,
else the managed environment built here.

What a backend's environment needs is an :class:`~llmcompare.backend.EnvRecipe` the backend declares
on its spec, per device (``BackendSpec.environments``). Variables an engine reads at import time are
not part of the recipe: the adapter sets them in ``load()``, before it imports the engine, so they
apply in whichever environment it runs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmcompare import __version__
from llmcompare.backend import EnvRecipe
from llmcompare.errors import UserError, did_you_mean
from llmcompare.models import cache_dir, file_lock
from llmcompare.plugins import get_registry

MANIFEST = "llmcompare-env.json"
BUILD_LOG = "build.log"
DEVICES = ("cpu", "cuda")


class EnvBuildError(UserError):
    """A step of an environment build failed; the message names the step and the build log."""

    exit_code = 1


# ---------------------------------------------------------------- where environments live


def envs_root() -> Path:
    return cache_dir() / "envs"


def env_dir(name: str) -> Path:
    return envs_root() / name


def env_python(directory: Path) -> Path:
    return directory / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def read_manifest(name: str) -> dict[str, Any] | None:
    """The manifest of a finished build of environment ``name``, or None."""
    path = env_dir(name) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def managed_python(name: str) -> str | None:
    """The interpreter of the managed environment ``name`` when a finished build exists; else, for a
    backend without an environment of its own (``vllm-serve``, ``llamacpp-server``), that of the
    environment built for its engine: the one whose first check module is the backend's first required
    module (``vllm``, ``llama_cpp``)."""
    manifest = read_manifest(name) or _engine_manifest(name)
    if manifest is None or not Path(manifest["python"]).exists():
        return None
    return manifest["python"]


def _engine_manifest(name: str) -> dict[str, Any] | None:
    try:
        requires = get_registry().get(name).requires
    except (UserError, KeyError):
        return None
    if not requires:
        return None
    for entry in list_envs():
        check = (entry.get("recipe") or {}).get("check_module") or ""
        if not entry.get("incomplete") and check.split(",")[0].strip() == requires[0]:
            return entry
    return None


# ---------------------------------------------------------------- recipes and what gets installed


def default_device() -> str:
    return "cuda" if shutil.which("nvidia-smi") else "cpu"


def recipes() -> dict[str, dict[str, EnvRecipe]]:
    """Backend name -> device -> recipe, as the registered backends declare them."""
    return {name: dict(spec.environments) for name, spec in get_registry().backends.items() if spec.environments}


def recipe_for(name: str, device: str) -> EnvRecipe:
    table = recipes()
    if name not in table:
        raise UserError(f"no environment recipe for backend {name!r}{did_you_mean(name, table)}"
                        f" (recipes: {', '.join(sorted(table)) or 'none'}); other backends run in the main environment")
    if device not in table[name]:
        raise UserError(f"no environment recipe for backend {name!r} on {device!r} (devices: {', '.join(table[name])})")
    return table[name][device]


def constraints_path(filename: str) -> Path:
    """A file of the repository's ``constraints/`` folder (next to the ``llmcompare`` package)."""
    path = Path(__file__).resolve().parents[2] / "constraints" / filename
    if not path.is_file():
        raise UserError(f"constraints file {filename!r} not found at {path}; environments are built from a"
                        " source checkout of llmcompare (pip install -e .)")
    return path


@dataclass(frozen=True)
class LlmcompareSource:
    """How llmcompare itself goes into a new environment."""

    version: str
    editable_path: str | None
    """The checkout an editable install points at; None installs ``llmcompare==version``."""

    def requirement(self, extra: str) -> list[str]:
        extras = f"[{extra}]" if extra else ""
        if self.editable_path is not None:
            return ["-e", f"{self.editable_path}{extras}"]
        return [f"llmcompare{extras}=={self.version}"]


def llmcompare_source() -> LlmcompareSource:
    """Editable from the checkout when the running llmcompare is an editable install (or is run from a
    source tree without being installed); otherwise the same released version."""
    # Every match, not the first: run from a checkout, the source tree's own llmcompare.egg-info comes
    # first on sys.path, and only the installed dist-info says how llmcompare was installed.
    dists = list(importlib.metadata.distributions(name="llmcompare"))
    for dist in dists:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        if direct.get("dir_info", {}).get("editable") and direct.get("url", "").startswith("file:"):
            path = urllib.request.url2pathname(urllib.parse.urlparse(direct["url"]).path)
            return LlmcompareSource(dist.version, path)
    if dists:
        return LlmcompareSource(dists[0].version, None)
    root = Path(__file__).resolve().parents[2]
    return LlmcompareSource(__version__, str(root) if (root / "pyproject.toml").exists() else None)


def recipe_key(recipe: EnvRecipe, with_requirements: Sequence[str]) -> str:
    """Changes when anything that decides the environment's contents changes: the recipe, the extra
    requirements, the constraints file, and llmcompare's own declared requirements."""
    try:
        requires = sorted(importlib.metadata.requires("llmcompare") or [])
    except importlib.metadata.PackageNotFoundError:
        requires = []
    # fields left at their empty default are not part of the key, so adding a field to EnvRecipe does not
    # rebuild environments whose recipes do not use it
    fields = {k: v for k, v in asdict(recipe).items() if v not in ((), "", None)}
    h = hashlib.sha256(json.dumps([fields, list(with_requirements), requires], sort_keys=True).encode())
    if recipe.constraints:
        h.update(constraints_path(recipe.constraints).read_bytes())
    return h.hexdigest()[:20]


# ---------------------------------------------------------------- installers


def pip_sources() -> list[str]:
    """pip's configured package sources as installer flags (``--find-links``, ``--index-url``...).

    uv does not read pip's configuration; handing it the same sources keeps both installers seeing the
    same packages (a ``+cpu`` torch in a local wheel folder, for instance).
    """
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_pip_config(out)


def parse_pip_config(text: str) -> list[str]:
    """``pip config list`` output (``global.find-links='/wheels'``) -> installer flags, in order, once each."""
    flags: list[str] = []
    seen: set[tuple[str, str]] = set()
    for line in text.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in ("find-links", "index-url", "extra-index-url"):
            for v in value.strip().strip("'\"").split():
                if (option, v) not in seen:
                    seen.add((option, v))
                    flags += [f"--{option}", v]
    return flags


def find_uv() -> str | None:
    """uv on PATH, or the binary of the ``uv`` package installed in this environment (``pip install uv``)."""
    found = shutil.which("uv")
    if found is None and importlib.util.find_spec("uv") is not None:
        import uv

        try:
            found = uv.find_uv_bin()
        except FileNotFoundError:
            found = None
    return found


class Installer:
    """``pip`` (the venv's own, through ``python -m pip``) or ``uv``: the same four operations."""

    def __init__(self, kind: str, sources: Sequence[str] = ()):
        self.kind = kind
        self.sources = list(sources)
        self.uv = find_uv() if kind == "uv" else None
        if kind == "uv" and self.uv is None:
            raise UserError("--installer uv: uv is not installed (pip install uv)")

    @classmethod
    def choose(cls, kind: str, sources: Sequence[str]) -> Installer:
        if kind == "auto":
            kind = "uv" if find_uv() else "pip"
        if kind == "uv":
            return cls("uv", [*pip_sources(), *sources])
        return cls("pip", sources)

    def create_venv(self, directory: Path) -> list[str]:
        if self.uv:
            # the directory exists already: it holds the build log
            return [self.uv, "venv", "--allow-existing", "--python", sys.executable, str(directory)]
        return [sys.executable, "-m", "venv", str(directory)]

    def install(self, python: Path, args: Sequence[str]) -> list[str]:
        if self.uv:
            # Match pip: take the best version across all sources (uv's default stops at the first index
            # that has the name), and write .pyc files at install (uv does not by default, and without them
            # every worker start compiles vLLM's modules again where bytecode writing is off).
            return [self.uv, "pip", "install", "--python", str(python), "--index-strategy", "unsafe-best-match",
                    "--compile-bytecode", *self.sources, *args]
        return [str(python), "-m", "pip", "install", *self.sources, *args]

    def uninstall(self, python: Path, names: Sequence[str]) -> list[str]:
        if self.uv:
            return [self.uv, "pip", "uninstall", "--python", str(python), *names]
        return [str(python), "-m", "pip", "uninstall", "-y", *names]

    def version(self, python: Path) -> str:
        cmd = [self.uv, "--version"] if self.uv else [str(python), "-m", "pip", "--version"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.split()
        return " ".join(out[:2]) if out else self.kind


_LIST_PACKAGES = (
    "import importlib.metadata as m, json, sys\n"
    "d = {x.metadata['Name']: x.version for x in m.distributions() if x.metadata['Name']}\n"
    "print(json.dumps({'python_version': sys.version.split()[0], 'packages': dict(sorted(d.items()))}))\n"
)


# ---------------------------------------------------------------- building


Runner = Callable[[Sequence[str], Path], None]


def build_environ(recipe: EnvRecipe) -> dict[str, str]:
    """The recipe's ``build_env`` over this process's environment (a variable already set wins)."""
    return {**dict(recipe.build_env), **os.environ}


def run_logged(cmd: Sequence[str], log: Path, quiet: bool = False, env: Mapping[str, str] | None = None) -> None:
    """Run ``cmd`` (an argv list), appending its output to ``log`` and echoing it unless ``quiet``."""
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", env=dict(env) if env is not None else None)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if not quiet:
                sys.stdout.write(line)
        code = proc.wait()
    if code != 0:
        raise EnvBuildError(f"'{' '.join(cmd[:4])} ...' failed with status {code}; see {log}")


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def create(
    name: str,
    device: str | None = None,
    installer: str = "auto",
    force: bool = False,
    with_requirements: Sequence[str] = (),
    sources: Sequence[str] = (),
    quiet: bool = False,
    say: Callable[[str], None] = print,
    run: Runner | None = None,
) -> dict[str, Any]:
    """Build (or refresh) the managed environment ``name``; return its manifest.

    ``with_requirements`` are installed alongside the extra (same constraints); ``sources`` are extra
    installer flags such as ``--extra-index-url URL``. ``run`` executes one argv list, logging to a file
    (tests replace it). Raises :class:`EnvBuildError` when a step fails; the directory is then left
    without a manifest, so nothing uses it.
    """
    device = device or default_device()
    recipe = recipe_for(name, device)
    key = recipe_key(recipe, with_requirements)
    source = llmcompare_source()
    environ = build_environ(recipe)
    run = run or (lambda cmd, log: run_logged(cmd, log, quiet, env=environ))
    directory = env_dir(name)
    with file_lock(envs_root() / f"{name}.lock"):
        old = read_manifest(name)
        refresh = old is not None and not force and old.get("recipe_key") == key and Path(old["python"]).exists()
        if refresh and old["llmcompare"] == asdict(source):
            say(f"environment {name!r} is up to date: {directory}")
            return old
        if not refresh and directory.exists():
            say(f"removing {'the old' if old else 'an unfinished'} environment at {directory}")
            shutil.rmtree(directory)
        tool = Installer.choose(old["installer_kind"] if refresh else installer, sources)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST).unlink(missing_ok=True)
        log = directory / BUILD_LOG
        python = env_python(directory)
        t0 = time.monotonic()
        say(f"{'refreshing' if refresh else 'building'} environment {name!r} for {name} on {device}"
            f" with {tool.kind} in {directory} (log: {log})")
        if not refresh:
            run(tool.create_venv(directory), log)
        args = ["-c", str(constraints_path(recipe.constraints))] if recipe.constraints else []
        if refresh:  # only llmcompare changed: the dependencies are those the recipe key was built with
            run(tool.install(python, [*args, "--no-deps", *source.requirement(recipe.extra)]), log)
        else:
            run(tool.install(python, [*args, *source.requirement(recipe.extra), *recipe.requirements,
                                      *with_requirements]), log)
            if recipe.remove:
                run(tool.uninstall(python, recipe.remove), log)
        run([str(python), "-c", f"import {recipe.check_module}"], log)
        listing = subprocess.run([str(python), "-c", _LIST_PACKAGES], capture_output=True, text=True, check=True,
                                 cwd=directory)  # not the caller's folder: a source tree's .egg-info would count
        found = json.loads(listing.stdout)
        manifest = {
            "name": name,
            "backend": name,
            "device": device,
            "python": str(python),
            "python_version": found["python_version"],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": old["build_seconds"] if refresh else round(time.monotonic() - t0, 1),
            "installer_kind": tool.kind,
            "installer": tool.version(python),
            "recipe": asdict(recipe),
            "recipe_key": key,
            "with": list(with_requirements),
            "llmcompare": asdict(source),
            "engine": {recipe.engine_distribution: found["packages"].get(recipe.engine_distribution)},
            "size_bytes": _tree_size(directory),
            "packages": found["packages"],
        }
        if refresh:  # the build's own facts stay; the refresh is recorded beside them
            manifest["created"], manifest["refreshed"] = old["created"], manifest["created"]
            manifest["refresh_seconds"] = round(time.monotonic() - t0, 1)
        tmp = directory / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, directory / MANIFEST)
        manifest = read_manifest(name) or manifest  # as written (JSON types)
    say(f"environment {name!r} ready: {recipe.engine_distribution} {manifest['engine'][recipe.engine_distribution]},"
        f" {manifest['size_bytes'] / 2**30:.1f} GiB, {time.monotonic() - t0:.0f} s; python: {python}")
    return manifest


def list_envs() -> list[dict[str, Any]]:
    """One entry per directory under :func:`envs_root`: the manifest, or ``{"name", "incomplete": True}``."""
    root = envs_root()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out.append(read_manifest(d.name) or {"name": d.name, "incomplete": True})
    return out


def remove(name: str) -> bool:
    directory = env_dir(name)
    if not directory.exists():
        return False
    shutil.rmtree(directory)
    return True


def format_list(entries: Sequence[Mapping[str, Any]]) -> str:
    if not entries:
        return f"no managed environments in {envs_root()} (create one with: llmcompare env create vllm)"
    rows = [("name", "device", "engine", "size", "created", "python")]
    for e in entries:
        if e.get("incomplete"):
            rows.append((e["name"], "-", "unfinished build: run llmcompare env create " + e["name"], "-", "-", "-"))
            continue
        engine = ", ".join(f"{k} {v}" for k, v in e["engine"].items())
        rows.append((e["name"], e["device"], engine, f"{e['size_bytes'] / 2**30:.1f} GiB", e["created"], e["python"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
