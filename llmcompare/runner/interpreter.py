"""The one choice of the interpreter a backend's worker runs under, and its one validation."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from llmcompare.envs import managed_python
from llmcompare.errors import BackendNotInstalled, UserError
from llmcompare.plugins import get_registry


def checked_interpreter(name: str, path: str) -> str:
    """``--python NAME=PATH``'s path, resolved (a bare name through ``PATH``), or a one-line error."""
    raw = str(Path(path).expanduser())
    resolved = shutil.which(raw) if os.sep not in raw else raw
    if resolved is None or not os.path.isfile(resolved) or not os.access(resolved, os.X_OK):
        raise UserError(f"--python {name}={path}: not an executable interpreter; pass the python of the"
                        " environment that has the engine")
    return resolved


def worker_python(spec: Any, name: str) -> str | None:
    """The interpreter backend ``name``'s worker runs under: ``--python NAME=PATH`` (``spec.python``),
    else None (this interpreter) when the engine imports here, else the backend's managed environment
    (``llmcompare env create NAME``). Raises :class:`~llmcompare.errors.BackendNotInstalled` when the
    engine is nowhere."""
    if name in spec.python:
        return checked_interpreter(name, spec.python[name])
    backend_spec = get_registry().get(name)
    if backend_spec.missing_module() is None:
        return None
    managed = managed_python(name)
    if managed:
        return managed
    raise BackendNotInstalled(name, backend_spec.install, backend_spec.missing_module())


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["vllm=/path/bin/python"]`` -> ``{"vllm": "/path/bin/python"}`` (the CLI's ``--python``), checked."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--python {item!r} must look like NAME=PATH, e.g. vllm=~/venvs/vllm/bin/python")
        out[name] = checked_interpreter(name, path)
    return out
