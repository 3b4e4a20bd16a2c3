"""A backend's environment for a host with no network: ``llmcompare env pack`` and ``env create --from``.

``pack`` writes a *wheelhouse*, one flat folder of files, for another host (its Python version and
platform, e.g. CPython 3.12 on ``manylinux_2_28_x86_64``):

* llmcompare itself, as a wheel built from this checkout (``pip wheel``), or the wheel you name;
* every wheel its recipe needs there (the engine, its dependencies, llmcompare's own), downloaded by
  pip's own resolver and cross-platform download (``pip download --only-binary=:all: --python-version
  --platform --implementation cp``);
* the source packages of the recipe's ``source_packages`` (``llama-cpp-python``), built on the target;
* ``pack.json``, the manifest: backend, device, Python, platform, every file with its sha256 and size,
  what the target is assumed to provide, how the engine is built there, and the check module.

**What the target already has is not packed.** Each ``--target-has NAME==VERSION`` (or each
``NAME==VERSION`` line of ``--target-freeze FILE``, the target's ``pip freeze``) becomes a *stand-in
wheel*: an empty wheel of that name at version ``VERSION+provided``, with no requirements, in a
folder pip also reads, and a constraint that picks it. pip's resolver then treats the target's torch
as a given, as it would an installed package, and resolves everything else around it; the stand-ins
are then deleted from the wheelhouse. A requirement the target's version cannot meet fails the
resolution here, not on the target. Because a stand-in has no requirements, what only the target's
packages need (torch's CUDA wheels) is never downloaded.

A source package cannot take part in a binary-only resolution, so it is downloaded on its own (``pip
download --no-binary=:all: --no-deps``) and represented in the resolution by a stand-in that carries
the requirements its ``PKG-INFO`` declares; its build requirements are the target's (``build_needs``).

``create_from`` (``llmcompare env create NAME --from DIR``) checks every file against the manifest
(sha256 and size) before anything else, then builds the environment offline: ``python -m venv``
(``--system-site-packages`` when the pack assumes the target provides packages), ``pip install
--no-index --find-links DIR`` with the recipe's ``build_env`` (``--no-build-isolation`` when a source
package is built), and the import check. A missing or corrupt file, a provided package the target does
not have, or a requirement nothing satisfies is one line that names it.
"""

from __future__ import annotations

import base64
import email.parser
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmcompare import __version__
from llmcompare.backend import EnvRecipe
from llmcompare.envs import (
    _LIST_PACKAGES,
    BUILD_LOG,
    MANIFEST,
    EnvBuildError,
    _tree_size,
    env_dir,
    env_python,
    envs_root,
    llmcompare_source,
    read_manifest,
    recipe_for,
    run_logged,
)
from llmcompare.errors import UserError
from llmcompare.models import file_lock

PACK_MANIFEST = "pack.json"
PACK_LOG = "pack.log"
PACK_FORMAT = 1
PROVIDED = "provided"
"""The local version label of a stand-in wheel (``torch-2.11.0+provided``)."""
DEFAULT_PLATFORM = "manylinux_2_28_x86_64"
MIB = 2**20


# ---------------------------------------------------------------- names, versions, platforms


def canonical(name: str) -> str:
    """PEP 503's normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(name: str) -> str:
    """A project name as it is spelled in a wheel's file name."""
    return re.sub(r"[-_.]+", "_", name)


def platforms_for(platform: str) -> list[str]:
    """``manylinux_2_28_x86_64`` -> itself and every older manylinux tag a glibc 2.28 host also runs
    (``manylinux_2_27`` ... ``manylinux_2_5``, and the legacy ``manylinux2014``/``2010``/``1`` names),
    newest first: pip does not expand a ``--platform`` itself. Other platforms are returned as given."""
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", platform)
    if not m:
        return [platform]
    major, minor, arch = int(m.group(1)), int(m.group(2)), m.group(3)
    if major != 2:
        return [platform]
    out = [f"manylinux_2_{v}_{arch}" for v in range(minor, 4, -1)]
    for legacy, glibc in (("manylinux2014", 17), ("manylinux2010", 12), ("manylinux1", 5)):
        if minor >= glibc and (legacy == "manylinux2014" or arch in ("x86_64", "i686")):
            out.append(f"{legacy}_{arch}")
    return out


def parse_pin(text: str, origin: str) -> tuple[str, str]:
    """``NAME==VERSION`` -> (name, version), or a one-line error naming where it came from."""
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;#]+)\s*", text)
    if not m:
        raise UserError(f"{origin}: {text.strip()!r} is not NAME==VERSION (what the target has, exactly, as"
                        " pip freeze prints it)")
    return m.group(1), m.group(2)


def read_freeze(path: str | os.PathLike) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``NAME==VERSION`` lines of a ``pip freeze`` file, and the lines it cannot use (editable
    installs, direct URLs), which are reported, not packed around."""
    pins, skipped = [], []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"--target-freeze {path}: {exc.strerror or exc}") from None
    for n, raw in enumerate(lines, 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-") or " @ " in line or "==" not in line:
            skipped.append(line)
            continue
        pins.append(parse_pin(line, f"{path}:{n}"))
    return pins, skipped


def stand_in_version(version: str) -> str:
    """``2.11.0`` -> ``2.11.0+provided``; ``2.11.0+cu130`` -> ``2.11.0+cu130.provided``. ``==2.11.0``
    matches both, as it matches the target's own ``2.11.0+cu130``."""
    return f"{version}.{PROVIDED}" if "+" in version else f"{version}+{PROVIDED}"


def write_stand_in(directory: Path, name: str, version: str, metadata_lines: Sequence[str] = ()) -> Path:
    """An empty, valid ``py3-none-any`` wheel of ``name`` at ``version`` whose metadata holds only
    ``metadata_lines`` (``Requires-Dist: ...``, ``Provides-Extra: ...``, ``Requires-Python: ...``)."""
    dist_info = f"{wheel_name(name)}-{version}.dist-info"
    files = {
        f"{dist_info}/METADATA": "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                                            *metadata_lines]) + "\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: llmcompare env pack (stand-in)\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n"
    out = directory / f"{wheel_name(name)}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return out


def sdist_metadata(path: Path) -> list[str]:
    """The ``Requires-Dist``, ``Provides-Extra`` and ``Requires-Python`` lines of a source package's
    ``PKG-INFO``; an error when it declares its requirements dynamic (only a build could tell them)."""
    with tarfile.open(path) as tf:
        member = next((m for m in tf.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")), None)
        if member is None:
            raise UserError(f"{path.name}: no PKG-INFO at its top; cannot read its requirements")
        text = tf.extractfile(member).read().decode("utf-8", "replace")  # type: ignore[union-attr]
    msg = email.parser.Parser().parsestr(text)
    if "requires-dist" in {d.strip().lower() for d in msg.get_all("Dynamic") or []}:
        raise UserError(f"{path.name}: its PKG-INFO declares Requires-Dist dynamic; build a wheel of it instead")
    return ([f"Requires-Dist: {r}" for r in msg.get_all("Requires-Dist") or []]
            + [f"Provides-Extra: {e}" for e in msg.get_all("Provides-Extra") or []]
            + ([f"Requires-Python: {msg['Requires-Python']}"] if msg.get("Requires-Python") else []))


def file_facts(path: Path) -> dict[str, Any]:
    """name, version and kind of a wheel or source package, from its file name; its sha256 and size."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    name = path.name
    if name.endswith(".whl"):
        parts = name[:-4].split("-")
        dist, version, kind = parts[0], parts[1], "wheel"
    else:
        stem = re.sub(r"\.(tar\.gz|tar\.bz2|tar\.xz|zip)$", "", name)
        dist, _, version = stem.rpartition("-")
        kind = "sdist"
    return {"file": name, "name": canonical(dist), "version": version, "kind": kind, "sha256": h.hexdigest(),
            "size": path.stat().st_size}


def _git_commit(root: Path) -> dict[str, Any] | None:
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=30, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


# ---------------------------------------------------------------- pack

Runner = Callable[[Sequence[str], Path], None]


def pack(
    name: str,
    output: str | os.PathLike,
    *,
    device: str = "cuda",
    python_version: str | None = None,
    platform: str = DEFAULT_PLATFORM,
    target_has: Sequence[str] = (),
    target_freeze: str | os.PathLike | None = None,
    with_requirements: Sequence[str] = (),
    sources: Sequence[str] = (),
    llmcompare_wheel: str | os.PathLike | None = None,
    quiet: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the wheelhouse of backend ``name``'s environment on ``device`` for CPython
    ``python_version`` on ``platform`` into ``output``; return its manifest (also ``pack.json``).

    ``target_has``: ``NAME==VERSION`` the target already has; ``target_freeze``: a file of them (``pip
    freeze``). ``sources``: pip flags for where packages come from (``--find-links DIR``,
    ``--no-index``, ``--extra-index-url URL``). ``llmcompare_wheel``: a wheel of llmcompare to ship
    instead of building one from this checkout."""
    recipe = recipe_for(name, device)
    py = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    if not re.fullmatch(r"3\.\d+", py):
        raise UserError(f"--python {py!r}: give the target's Python as MAJOR.MINOR, e.g. 3.12")
    out = Path(output)
    if out.exists() and any(p for p in out.iterdir() if p.name not in (PACK_MANIFEST, PACK_LOG)):
        if not (out / PACK_MANIFEST).exists():
            raise UserError(f"{out} is not empty and holds no {PACK_MANIFEST}; pack into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():  # a pack made again replaces the old one whole
        if old.is_file():
            old.unlink()
    listed = (PACK_MANIFEST, PACK_LOG)
    log = out / PACK_LOG
    log.write_text("", encoding="utf-8")
    t0 = time.monotonic()

    try:
        pins = [parse_pin(p, "--target-has") for p in target_has]
        skipped: list[str] = []
        if target_freeze:
            more, skipped = read_freeze(target_freeze)
            pins += more
        provided: dict[str, tuple[str, str]] = {}
        for pin_name, version in pins:
            provided[canonical(pin_name)] = (pin_name, version)
        provided.pop("llmcompare", None)  # llmcompare itself is always shipped: it is the code being run
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        if py != here:
            # pip evaluates environment markers (python_version < "3.12" ...) for the interpreter it runs on,
            # whatever --python-version says: say so, and record it
            say(f"note: packing for Python {py} with Python {here}: pip evaluates requirements' environment markers"
                f" for {here}; run llmcompare env pack with python{py} to have them evaluated for the target")
        plat = platforms_for(platform)
        plat_flags = [f for p in plat for f in ("--platform", p)]
        target_flags = ["--only-binary=:all:", "--python-version", py, "--implementation", "cp", *plat_flags]

        with tempfile.TemporaryDirectory(prefix="llmcompare-pack-") as tmp_name:
            tmp = Path(tmp_name)
            stand_ins = tmp / "stand-ins"
            stand_ins.mkdir()
            constraints = []
            for pin_name, version in provided.values():
                v = stand_in_version(version)
                write_stand_in(stand_ins, pin_name, v)
                constraints.append(f"{pin_name}=={v}")

            # 1. llmcompare, as a wheel
            if llmcompare_wheel:
                wheel = Path(llmcompare_wheel)
                if not wheel.is_file() or not wheel.name.startswith("llmcompare-") or wheel.suffix != ".whl":
                    raise UserError(f"--llmcompare-wheel {wheel}: not a wheel of llmcompare")
                shutil.copy2(wheel, out / wheel.name)
                wheel = out / wheel.name
            else:
                checkout = llmcompare_source().editable_path or str(Path(__file__).resolve().parents[2])
                if not (Path(checkout) / "pyproject.toml").exists():
                    raise UserError("llmcompare is not installed from a source checkout here; pass --llmcompare-wheel FILE")
                say(f"building llmcompare's wheel from {checkout}")
                _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp / "lc"), *sources, checkout], log,
                     quiet)
                built = sorted((tmp / "lc").glob("llmcompare-*.whl"))
                if not built:
                    raise EnvBuildError(f"pip wheel made no llmcompare wheel; see {log}")
                wheel = out / built[0].name
                shutil.copy2(built[0], wheel)

            # 2. source packages: their own files, and stand-ins that carry their requirements
            sdists = []
            source_names = {canonical(s) for s in recipe.source_packages}
            for src in recipe.source_packages:
                wanted = next((r for r in [*recipe.requirements, *with_requirements]
                               if canonical(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) == canonical(src)), src)
                say(f"downloading the source package of {wanted} (built on the target)")
                dest = tmp / "sdist"
                _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--progress-bar", "off",
                      "-d", str(dest), *sources, wanted], log, quiet)
                found = [p for p in dest.iterdir() if canonical(file_facts(p)["name"]) == canonical(src)]
                if not found:
                    raise EnvBuildError(f"pip downloaded no source package of {src}; see {log}")
                sdist = found[0]
                facts = file_facts(sdist)
                write_stand_in(stand_ins, src, facts["version"], sdist_metadata(sdist))
                constraints.append(f"{src}=={facts['version']}")
                shutil.copy2(sdist, out / sdist.name)
                sdists.append(sdist.name)

            # 3. what the source build imports (scikit-build-core), as wheels for the target
            build_wheels = []
            if sdists and recipe.build_wheels:
                say(f"downloading the build's own packages: {', '.join(recipe.build_wheels)}")
                dest = tmp / "build"
                _run([sys.executable, "-m", "pip", "download", "--progress-bar", "off", "-d", str(dest), *target_flags,
                      *sources, *recipe.build_wheels], log, quiet)
                for f in sorted(dest.iterdir()):
                    shutil.copy2(f, out / f.name)
                    build_wheels.append(f.name)

            # 4. everything else, by pip's resolver, for the target
            cfile = tmp / "constraints.txt"
            cfile.write_text("\n".join(constraints) + "\n", encoding="utf-8")
            extra = f"[{recipe.extra}]" if recipe.extra else ""
            requirements = [f"{wheel}{extra}", *recipe.requirements, *with_requirements]
            recipe_constraints = []
            if recipe.constraints:
                from llmcompare.envs import constraints_path

                recipe_constraints = ["-c", str(constraints_path(recipe.constraints))]
            download = [sys.executable, "-m", "pip", "download", "--progress-bar", "off", "-d", str(tmp / "dl"),
                        *target_flags, "--find-links", str(stand_ins), "-c", str(cfile), *recipe_constraints, *sources,
                        *requirements]
            say(f"resolving and downloading for CPython {py} on {platform} (pip download; log {log})")
            try:
                _run(download, log, quiet)
            except EnvBuildError:
                raise EnvBuildError(_pip_failure(log, "pip could not resolve the pack for the target")) from None
            stand_in_files = {p.name for p in stand_ins.iterdir()}
            for f in sorted((tmp / "dl").iterdir()):
                if f.name in stand_in_files or f.name == wheel.name:
                    continue
                if canonical(file_facts(f)["name"]) in source_names:
                    continue
                shutil.copy2(f, out / f.name)

        files = [file_facts(p) for p in sorted(out.iterdir()) if p.is_file() and p.name not in listed]
        for f in files:
            f["role"] = ("llmcompare" if f["file"] == wheel.name
                         else "source (built on the target)" if f["file"] in sdists
                         else "the build's own" if f["file"] in build_wheels
                         else "engine" if f["name"] == canonical(recipe.engine_distribution) else "dependency")
        manifest = {
            "format": PACK_FORMAT,
            "backend": name,
            "device": device,
            "python": py,
            "implementation": "cp",
            "markers_python": here,
            "platform": platform,
            "platforms": plat,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "llmcompare": {"version": __version__, "wheel": wheel.name,
                           **(_git_commit(Path(__file__).resolve().parents[2]) or {})},
            "recipe": asdict(recipe),
            "check_module": recipe.check_module,
            "engine_distribution": recipe.engine_distribution,
            "requirements": [f"llmcompare{extra}", *recipe.requirements, *with_requirements],
            "with": list(with_requirements),
            "target_provides": [{"name": n, "version": v} for n, v in sorted(provided.values(), key=lambda x: canonical(x[0]))],
            "target_freeze_skipped": skipped,
            "build": {
                "system_site_packages": bool(provided),
                "source_packages": sdists,
                "no_build_isolation": bool(sdists),
                "env": dict(recipe.build_env),
                "needs": list(recipe.build_needs),
                "wheels": build_wheels,
                "note": recipe.build_note,
            },
            "pip": _pip_version(),
            "files": files,
            "total_bytes": sum(f["size"] for f in files),
            "pack_seconds": round(time.monotonic() - t0, 1),
        }
        tmp_manifest = out / f".{PACK_MANIFEST}.tmp"
        tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_manifest, out / PACK_MANIFEST)
        for line in size_report(manifest).splitlines():
            say(line)
        return manifest
    except BaseException:  # a failed pack leaves only its log behind, so the same command can run again
        for f in out.iterdir():
            if f.is_file() and f.name != PACK_LOG:
                f.unlink()
        raise


def _run(cmd: Sequence[str], log: Path, quiet: bool) -> None:
    run_logged(cmd, log, quiet=quiet)


def _pip_version() -> str:
    try:
        return importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _pip_failure(log: Path, what: str) -> str:
    """One line from pip's output: the requirement it could not satisfy, or its last error."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    m = re.findall(r"No matching distribution found for (.+)", text)
    if m:
        return f"{what}: nothing satisfies {m[-1].strip()}; see {log}"
    errors = [ln.strip() for ln in text.splitlines() if ln.startswith("ERROR:")]
    detail = errors[-1].removeprefix("ERROR: ") if errors else "see the log"
    return f"{what}: {detail}; see {log}"


def size_report(manifest: Mapping[str, Any], top: int = 8) -> str:
    """What ``pack`` prints: the total, each role's share, and the largest files."""
    files = sorted(manifest["files"], key=lambda f: -f["size"])
    lines = [f"pack of {manifest['backend']} ({manifest['device']}) for CPython {manifest['python']} on"
             f" {manifest['platform']}: {len(files)} files, {manifest['total_bytes'] / MIB:,.1f} MiB"]
    roles: dict[str, list[int]] = {}
    for f in files:
        roles.setdefault(f["role"], []).append(f["size"])
    lines.append("  " + "; ".join(f"{role} {len(s)} ({sum(s) / MIB:,.1f} MiB)" for role, s in roles.items()))
    for f in files[:top]:
        lines.append(f"  {f['size'] / MIB:>9,.1f} MiB  {f['file']}")
    if len(files) > top:
        rest = files[top:]
        lines.append(f"  {sum(f['size'] for f in rest) / MIB:>9,.1f} MiB  {len(rest)} more")
    if manifest["target_provides"]:
        shown = ", ".join(f"{p['name']}=={p['version']}" for p in manifest["target_provides"][:8])
        more = len(manifest["target_provides"]) - 8
        lines.append(f"  not packed, the target provides: {shown}" + (f" and {more} more" if more > 0 else ""))
    if manifest["build"]["note"]:
        lines.append(f"  on the target: {manifest['build']['note']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- create --from


def read_pack(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / PACK_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{directory} holds no {PACK_MANIFEST}: make a pack with llmcompare env pack NAME -O DIR"
                        " (or reassemble its parts first: docs/offline.md)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable pack manifest ({exc})") from None
    if manifest.get("format") != PACK_FORMAT:
        raise UserError(f"{path}: pack format {manifest.get('format')!r}; this llmcompare reads format {PACK_FORMAT}")
    return manifest


def verify_pack(directory: str | os.PathLike, manifest: Mapping[str, Any] | None = None) -> None:
    """Every file the manifest lists is there, with its size and sha256; else one line naming each
    missing or corrupt one."""
    directory = Path(directory)
    manifest = manifest or read_pack(directory)
    problems = []
    for f in manifest["files"]:
        path = directory / f["file"]
        if not path.is_file():
            problems.append(f"{f['file']} is missing")
            continue
        size = path.stat().st_size
        if size != f["size"]:
            problems.append(f"{f['file']} is corrupt ({size:,} bytes, the manifest says {f['size']:,})")
            continue
        if file_facts(path)["sha256"] != f["sha256"]:
            problems.append(f"{f['file']} is corrupt (its sha256 differs from the manifest's)")
    if problems:
        raise UserError(f"the pack in {directory} is incomplete: {'; '.join(problems)}; copy those files again (a file"
                        " sent in parts: reassemble every part, docs/offline.md)")


def check_provided(manifest: Mapping[str, Any], installed: Mapping[str, str] | None = None) -> list[str]:
    """Raise when a package the pack assumes the target provides is absent here; return a note for
    each one present at another version."""
    if installed is None:
        installed = {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
                     if d.metadata["Name"]}
    missing, notes = [], []
    for p in manifest["target_provides"]:
        have = installed.get(canonical(p["name"]))
        if have is None:
            missing.append(f"{p['name']}=={p['version']}")
        elif have.split("+")[0] != p["version"].split("+")[0]:
            notes.append(f"the pack assumed {p['name']}=={p['version']}, this host has {have}")
    if missing:
        raise UserError(f"the pack assumes this host provides {', '.join(missing)}, which this Python"
                        f" ({sys.executable}) does not have; install them, or pack again without them")
    return notes


def _missing_build_needs(needs: Iterable[str]) -> list[str]:
    import importlib.util

    out = []
    for need in needs:
        if shutil.which(need) is None and importlib.util.find_spec(need) is None:
            out.append(need)
    return out


def provided_paths(manifest: Mapping[str, Any]) -> list[str]:
    """The folders where the running interpreter finds the packages the pack assumes the target
    provides, less the base interpreter's own (which a venv made with ``--system-site-packages`` sees
    anyway): when llmcompare runs from a virtual environment that holds them, the new environment sees
    them too, through a ``.pth`` file."""
    base = {str(Path(p).resolve()) for p in _base_site_packages()}
    out: list[str] = []
    for p in manifest["target_provides"]:
        try:
            where = str(Path(importlib.metadata.distribution(p["name"]).locate_file("")).resolve())
        except importlib.metadata.PackageNotFoundError:
            continue
        if where not in base and where not in out:
            out.append(where)
    return out


def _base_site_packages() -> list[str]:
    import sysconfig

    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    return [paths["purelib"], paths["platlib"]]


def create_from(
    name: str,
    directory: str | os.PathLike,
    *,
    device: str | None = None,
    force: bool = False,
    quiet: bool = False,
    say: Callable[[str], None] = print,
    run: Runner | None = None,
) -> dict[str, Any]:
    """Build the managed environment ``name`` from the pack in ``directory``, offline; return its
    manifest (``llmcompare-env.json``, as :func:`llmcompare.envs.create` writes it)."""
    directory = Path(directory).resolve()
    manifest = read_pack(directory)
    if manifest["backend"] != name:
        raise UserError(f"{directory} is a pack of {manifest['backend']!r}, not {name!r}:"
                        f" llmcompare env create {manifest['backend']} --from {directory}")
    if device and device != manifest["device"]:
        raise UserError(f"{directory} is a pack for {manifest['device']}, not {device}")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != manifest["python"]:
        raise UserError(f"the pack is for Python {manifest['python']}, and this llmcompare runs on {here}: run it with"
                        f" python{manifest['python']}, or pack again with --python {here}")
    verify_pack(directory, manifest)
    notes = check_provided(manifest)
    build = manifest["build"]
    missing = _missing_build_needs(build["needs"]) if build["source_packages"] else []
    if missing:
        raise UserError(f"building {', '.join(build['source_packages'])} here needs {', '.join(missing)}, which this host"
                        " lacks (on PATH or importable)")
    recipe = EnvRecipe(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                          for k, v in manifest["recipe"].items() if k in EnvRecipe.__dataclass_fields__})
    environ = {**build["env"], **os.environ}
    run = run or (lambda cmd, log: run_logged(cmd, log, quiet, env=environ))
    target = env_dir(name)
    t0 = time.monotonic()
    with file_lock(envs_root() / f"{name}.lock"):
        old = read_manifest(name)
        pack_id = hashlib.sha256((directory / PACK_MANIFEST).read_bytes()).hexdigest()
        if old and not force and (old.get("pack") or {}).get("sha256") == pack_id and Path(old["python"]).exists():
            say(f"environment {name!r} is up to date with the pack: {target}")
            return old
        if target.exists():
            say(f"removing the old environment at {target}")
            shutil.rmtree(target)
        target.mkdir(parents=True)
        log = target / BUILD_LOG
        python = env_python(target)
        for note in notes:
            say(f"note: {note}")
        say(f"building environment {name!r} for {name} on {manifest['device']} offline from {directory} (log: {log})")
        venv = [sys.executable, "-m", "venv", *(["--system-site-packages"] if build["system_site_packages"] else []),
                str(target)]
        run(venv, log)
        if build["system_site_packages"]:
            extra_paths = provided_paths(manifest)
            if extra_paths:
                purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                         capture_output=True, text=True, check=True).stdout.strip()
                Path(purelib, "llmcompare-provided.pth").write_text("\n".join(extra_paths) + "\n", encoding="utf-8")
        offline = [str(python), "-m", "pip", "install", "--no-index", "--find-links", str(directory),
                   "--disable-pip-version-check"]
        # llmcompare itself first, always into the new environment (an llmcompare the host's Python sees
        # elsewhere would otherwise count as installed), then everything else
        install = [*offline, *(["--no-build-isolation"] if build["no_build_isolation"] else []),
                   f"{manifest['requirements'][0]}=={manifest['llmcompare']['version']}", *manifest["requirements"][1:]]
        try:
            run([*offline, "--no-deps", "--ignore-installed", str(directory / manifest["llmcompare"]["wheel"])], log)
            if build.get("wheels"):  # what the source build imports, in place before it runs
                run([*offline, "--no-deps", *(str(directory / w) for w in build["wheels"])], log)
            run(install, log)
        except EnvBuildError:
            raise EnvBuildError(_pip_failure(log, f"installing from {directory} failed")) from None
        try:
            run([str(python), "-c", f"import {manifest['check_module']}"], log)
        except EnvBuildError:
            raise EnvBuildError(f"the environment was built, but 'import {manifest['check_module']}' fails there:"
                                f" {_last_error(log)}; see {log}") from None
        listing = subprocess.run([str(python), "-c", _LIST_PACKAGES], capture_output=True, text=True, check=True,
                                 cwd=target)
        found = json.loads(listing.stdout)
        env_manifest = {
            "name": name,
            "backend": name,
            "device": manifest["device"],
            "python": str(python),
            "python_version": found["python_version"],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(time.monotonic() - t0, 1),
            "installer_kind": "pip",
            "installer": "pip --no-index (offline, from a pack)",
            "recipe": manifest["recipe"],
            "recipe_key": None,
            "with": manifest.get("with", []),
            "llmcompare": {"version": manifest["llmcompare"]["version"], "editable_path": None,
                           "commit": manifest["llmcompare"].get("commit")},
            "engine": {recipe.engine_distribution: found["packages"].get(recipe.engine_distribution)},
            "size_bytes": _tree_size(target),
            "packages": found["packages"],
            "pack": {"path": str(directory), "sha256": pack_id, "created": manifest["created"],
                     "target_provides": manifest["target_provides"]},
        }
        tmp = target / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(env_manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, target / MANIFEST)
    say(f"environment {name!r} ready offline: {recipe.engine_distribution}"
        f" {env_manifest['engine'][recipe.engine_distribution]}, {env_manifest['size_bytes'] / 2**30:.1f} GiB,"
        f" {time.monotonic() - t0:.0f} s; python: {python}")
    return env_manifest


def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
