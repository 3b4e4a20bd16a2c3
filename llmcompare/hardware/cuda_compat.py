"""Opt-in cuBLAS 12 → 13 name alias for workers, so CTranslate2's CUDA build runs where only cuBLAS 13 is.

CTranslate2 4.8.5's wheel ``dlopen``s ``libcublas.so.12`` (and ``libcublasLt.so.12``). A machine with
only CUDA 13's cuBLAS has neither name. A folder of two symbolic links, ``libcublas.so.12 →
libcublas.so.13`` and ``libcublasLt.so.12 → libcublasLt.so.13``, put first on the worker's
``LD_LIBRARY_PATH``, made it load and generate on an H200 (docs/results.md, 2026-11-22), with greedy ids
equal to the CPU's on a small model. It is an ABI alias across major versions: nothing promises
it works for every call, so it is never set up silently.

* **Asking for it:** ``LLMCOMPARE_CUBLAS12_ALIAS=1`` (search for cuBLAS 13) or
  ``LLMCOMPARE_CUBLAS12_ALIAS=/path/to/dir`` (the folder that holds ``libcublas.so.13``), in the
  environment of ``llmcompare run``/``load``.
* **Where it acts:** :func:`worker_env`, called by :mod:`llmcompare.runner.isolation` for every worker it
  starts. The dynamic loader reads ``LD_LIBRARY_PATH`` when a process starts, so the folder must be
  in the worker's environment before the worker exists; setting it inside the worker is too late.
* **How it is recorded:** the environment block's ``cuda_compat`` entry (:func:`environment_record`)
  and one line at the top of each worker's log.

cuBLAS 13 is looked for in the ``nvidia`` wheel packages of this interpreter (``nvidia/cu13/lib``,
``nvidia/cublas/lib``), then ``ldconfig -p``, then ``/usr/local/cuda``. The links live in
``<cache_dir>/cuda-compat/cublas12-<hash of the target folder>`` and are rebuilt when they point
elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmcompare.models import cache_dir

ALIAS_ENV = "LLMCOMPARE_CUBLAS12_ALIAS"
LINKS = {"libcublas.so.12": "libcublas.so.13", "libcublasLt.so.12": "libcublasLt.so.13"}
"""Alias name → the cuBLAS 13 name it points at."""
SYSTEM_DIRS = ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu")


class AliasError(Exception):
    """The alias was asked for but cannot be made (no cuBLAS 13 found, or the folder is not writable)."""


def requested(environ: Mapping[str, str] | None = None) -> str | None:
    """The alias request: ``"search"``, a folder path, or None when not asked for."""
    value = (os.environ if environ is None else environ).get(ALIAS_ENV, "").strip()
    if value.lower() in ("", "0", "false", "no", "off"):
        return None
    if value.lower() in ("1", "true", "yes", "on"):
        return "search"
    return value


def _has_cublas13(folder: Path) -> bool:
    return all((folder / target).exists() for target in LINKS.values())


def _nvidia_lib_dirs() -> list[Path]:
    """``lib`` folders of the ``nvidia`` namespace packages (``nvidia/cu13/lib``, ``nvidia/cublas/lib``)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    roots = list(spec.submodule_search_locations or []) if spec else []
    return [Path(root) / sub / "lib" for root in roots for sub in ("cu13", "cublas")]


def _ldconfig_dirs() -> list[Path]:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [Path(line.rsplit("=>", 1)[1].strip()).parent for line in out.splitlines()
            if "libcublas.so.13" in line and "=>" in line]


def find_cublas13(candidates: Iterable[Path] | None = None) -> Path | None:
    """The first folder holding both ``libcublas.so.13`` and ``libcublasLt.so.13`` (see the module doc)."""
    if candidates is None:
        candidates = [*_nvidia_lib_dirs(), *_ldconfig_dirs(), *map(Path, SYSTEM_DIRS)]
    for folder in candidates:
        if _has_cublas13(folder):
            return folder.resolve()
    return None


def alias_dir(target: Path, root: Path | None = None) -> Path:
    """Make (or check) the folder of ``*.so.12`` links to ``target``'s cuBLAS 13; return it."""
    if root is None:
        root = cache_dir() / "cuda-compat"
    target = Path(target).resolve()
    folder = root / f"cublas12-{hashlib.sha256(str(target).encode()).hexdigest()[:12]}"
    want = {alias: target / real for alias, real in LINKS.items()}
    if folder.is_dir() and all(os.path.islink(folder / a) and Path(os.readlink(folder / a)) == t for a, t in want.items()):
        return folder
    tmp = root / f".{folder.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for alias, real in want.items():
        os.symlink(real, tmp / alias)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def resolve(environ: Mapping[str, str] | None = None, *, candidates: Iterable[Path] | None = None,
            root: Path | None = None) -> dict[str, Any] | None:
    """What the alias request amounts to here: None when not asked for, else a record with
    ``alias_dir``, ``cublas13_dir`` and ``links``, or with ``error`` when it cannot be made."""
    how = requested(environ)
    if how is None:
        return None
    record: dict[str, Any] = {"requested": f"{ALIAS_ENV}={(os.environ if environ is None else environ)[ALIAS_ENV]}"}
    try:
        if how == "search":
            target = find_cublas13(candidates)
            if target is None:
                raise AliasError("no folder with libcublas.so.13 and libcublasLt.so.13 found (nvidia wheels,"
                                 f" ldconfig, {', '.join(SYSTEM_DIRS)}); pass {ALIAS_ENV}=/path/to/that/folder")
        else:
            target = Path(how).expanduser()
            if not _has_cublas13(target):
                raise AliasError(f"{target} holds no libcublas.so.13 and libcublasLt.so.13")
        folder = alias_dir(target, root)
    except (AliasError, OSError) as exc:
        return {**record, "error": str(exc)}
    return {**record, "alias_dir": str(folder), "cublas13_dir": str(target.resolve()),
            "links": {alias: os.readlink(folder / alias) for alias in LINKS}}


def worker_env(env: Mapping[str, str], **kwargs: Any) -> tuple[dict[str, str], dict[str, Any] | None]:
    """``env`` with the alias folder (and the cuBLAS 13 folder) first on ``LD_LIBRARY_PATH``, when asked
    for in ``env``; and the :func:`resolve` record (None when not asked for). On an error the
    environment is returned unchanged and the record says why."""
    out = dict(env)
    record = resolve(out, **kwargs)
    if record is None or "error" in record:
        return out, record
    parts = [record["alias_dir"], record["cublas13_dir"], *filter(None, out.get("LD_LIBRARY_PATH", "").split(os.pathsep))]
    out["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(parts))
    return out, record


def describe(record: dict[str, Any]) -> str:
    """One line for a worker's log."""
    if "error" in record:
        return f"llmcompare: cuBLAS 12 alias asked for ({record['requested']}) but not set up: {record['error']}"
    links = ", ".join(f"{a} -> {t}" for a, t in record["links"].items())
    return f"llmcompare: cuBLAS 12 alias ({record['requested']}): LD_LIBRARY_PATH starts with {record['alias_dir']} ({links})"


def environment_record() -> dict[str, Any] | None:
    """The environment block's ``cuda_compat`` entry: ``{"cublas12_alias": record}``, or None."""
    record = resolve()
    return None if record is None else {"cublas12_alias": record}
