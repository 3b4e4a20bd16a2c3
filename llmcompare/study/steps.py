"""A study's ``steps:``: commands run before its cells, for what the cells need made first (conversions).

```yaml
steps:
  - name: exl3-7b
    argv: [python, -m, llmcompare.models.quantize, exl3, -m, synthetic:llama-2-7b]
    backend: exllamav3             # run with this backend's interpreter (optional)
    needed_by: [exllamav3:exl3]    # the cells that wait for it (optional; default: every cell)
    timeout: 540                   # seconds (optional); past it the step is stopped and resumes next time
  - name: marker
    argv: [python, make_something.py]
    creates: some/file             # skipped while this path exists
```

* ``argv`` is run as given, without a shell; a first element ``python`` is the interpreter: the one
  that runs the study, or with ``backend:`` the one that backend's cells run under (the study's when
  the engine imports there, else its managed environment, ``llmcompare env create``).
* **Skipped when its output is in llmcompare's cache**: a ``python -m llmcompare.models.quantize ...``
  step is first asked with ``--cached`` (nothing is converted; exit 0 means its checkpoint is cached).
  Another command is skipped while its ``creates:`` path exists, and otherwise runs every time.
* A step runs only while a cell it is ``needed_by`` still has to run (pending, or failed under
  ``--resume``).
* A step that fails or times out is recorded in ``study.json`` (``steps``) with its log,
  ``logs/step-NAME.log``; the cells that need it are not started (they stay pending, with the reason),
  the others run, and the study exits 1. The next ``study run`` runs the step again: the conversions
  of ``llmcompare.models.quantize`` resume where they stopped (EXL2, EXL3) or start over.

Every check of the section is made when the study file is loaded, one line naming the file, line and
key: a ``quantize`` step's arguments are parsed by that command's own parser.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmcompare.study.yamlfile import Located

QUANTIZE = ("-m", "llmcompare.models.quantize")
KEYS = ("name", "argv", "backend", "needed_by", "timeout", "creates", "description")


@dataclass
class Step:
    name: str
    argv: list[str]
    backend: str | None = None
    needed_by: list[str] = field(default_factory=list)
    timeout: float | None = None
    creates: str | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_quantize(self) -> bool:
        return self.argv[:3] == ["python", *QUANTIZE]

    def needs(self, backend: str) -> bool:
        """Whether a cell of ``backend`` (NAME[:VARIANT][@LABEL]) waits for this step."""
        if not self.needed_by:
            return True
        base, _, label = backend.partition("@")
        return any(p in (backend, base, base.partition(":")[0], label) for p in self.needed_by)


def parse_steps(doc: Located, validate_backends: bool = True) -> list[Step]:
    raw = doc.data.get("steps")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise doc.error(("steps",), "a list of steps: {name: ..., argv: [python, -m, ...]}")
    out: list[Step] = []
    for i, item in enumerate(raw):
        path = ("steps", i)
        if not isinstance(item, Mapping):
            raise doc.error(path, "a mapping: {name: ..., argv: [...]}")
        for k in item:
            if k not in KEYS:
                raise doc.error(path + (k,), f"unknown key (a step takes: {', '.join(KEYS)})")
        name = item.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
            raise doc.error(path + ("name",), "required: letters, digits, '.', '_' or '-' (it names the step's log)")
        if any(s.name == name for s in out):
            raise doc.error(path + ("name",), f"another step is named {name!r}")
        argv = item.get("argv")
        if (not isinstance(argv, list) or not argv
                or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in argv)):
            raise doc.error(path + ("argv",), "a non-empty list of strings, e.g. [python, -m, llmcompare.models.quantize,"
                                              " exl3, -m, synthetic:llama-2-7b]")
        argv = [str(a) for a in argv]
        backend = item.get("backend")
        if backend is not None and (not isinstance(backend, str) or not backend):
            raise doc.error(path + ("backend",), "a backend name, whose interpreter runs the step")
        if backend is not None and validate_backends:
            _check_backend(doc, path + ("backend",), backend)
        needed = item.get("needed_by", [])
        if isinstance(needed, str):
            needed = [needed]
        if not isinstance(needed, list) or not all(isinstance(n, str) and n for n in needed):
            raise doc.error(path + ("needed_by",), "a list of backends (NAME, NAME:VARIANT or a label)")
        timeout = item.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise doc.error(path + ("timeout",), f"seconds (a positive number), got {timeout!r}")
        creates = item.get("creates")
        if creates is not None and not isinstance(creates, str):
            raise doc.error(path + ("creates",), "a path")
        step = Step(name, argv, backend, list(needed), float(timeout) if timeout else None, creates,
                    str(item.get("description", "") or ""))
        if step.is_quantize:
            err = _quantize_error(argv[3:])
            if err:
                raise doc.error(path + ("argv",), f"python -m llmcompare.models.quantize: {err}")
            if "--cached" in argv:
                raise doc.error(path + ("argv",), "the study adds --cached itself, to ask whether the step can be skipped")
        out.append(step)
    return out


def _check_backend(doc: Located, path: tuple, name: str) -> None:
    from llmcompare.errors import UserError
    from llmcompare.plugins import get_registry

    try:
        get_registry().get(name)
    except (UserError, KeyError) as exc:
        raise doc.error(path, str(exc)) from None


def _quantize_error(args: Sequence[str]) -> str | None:
    from llmcompare.models import quantize

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            quantize._parser().parse_args(list(args))
    except SystemExit as exc:
        if exc.code in (0, None):
            return None
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        return re.sub(r"^.*?error: ", "", lines[-1]) if lines else "does not parse"
    return None


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
def interpreter(step: Step) -> str:
    """The ``python`` of a step: its backend's worker interpreter (this one when the engine imports
    here, else the backend's managed environment), or this one."""
    if step.backend is None:
        return sys.executable
    from llmcompare.envs import managed_python
    from llmcompare.plugins import get_registry

    try:
        if get_registry().get(step.backend).missing_module() is None:
            return sys.executable
    except Exception:
        return sys.executable
    return managed_python(step.backend) or sys.executable


def resolved_argv(step: Step) -> list[str]:
    argv = list(step.argv)
    if argv[0] == "python":
        argv[0] = interpreter(step)
    return argv


def is_cached(step: Step, env: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """(whether the step can be skipped, why)."""
    if step.is_quantize:
        try:
            done = subprocess.run([*resolved_argv(step), "--cached"], capture_output=True, text=True, timeout=600,
                                  stdin=subprocess.DEVNULL, env=dict(env) if env is not None else None)
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"could not ask: {exc}"
        out = done.stdout.strip().splitlines()
        if done.returncode == 0 and out:
            return True, f"cached: {out[-1]}"
        return False, out[-1] if out else (done.stderr.strip().splitlines() or ["not cached"])[-1]
    if step.creates:
        return (True, f"{step.creates} exists") if Path(step.creates).exists() else (False, f"no {step.creates} yet")
    return False, "runs every time (no creates: path)"


@dataclass
class StepOutcome:
    status: str          # "done", "cached", "failed", "skipped"
    detail: str
    wall_s: float = 0.0


def run_step(step: Step, log_path: Path, env: Mapping[str, str] | None = None) -> StepOutcome:
    """Run one step (skipping it when cached), its output appended to ``log_path``. Ctrl-C or SIGTERM
    stops the step's whole process group, then goes on up."""
    cached, why = is_cached(step, env)
    if cached:
        return StepOutcome("cached", why)
    argv = resolved_argv(step)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(argv)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=dict(env) if env is not None else None)
        except OSError as exc:
            return StepOutcome("failed", f"could not start {argv[0]}: {exc.strerror or exc}")
        try:
            code = proc.wait(timeout=step.timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return StepOutcome("failed", f"stopped after its timeout of {step.timeout:g} s; the next study run"
                                         f" runs it again (see {log_path})", time.monotonic() - t0)
        except BaseException:
            _stop(proc)
            raise
    wall = time.monotonic() - t0
    if code != 0:
        tail = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        return StepOutcome("failed", f"exit status {code}: {tail[-1] if tail else 'no output'} (see {log_path})", wall)
    return StepOutcome("done", f"{wall:,.0f} s", wall)


def _stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_steps(steps: Sequence[Step], cells: Sequence[Mapping[str, Any]], log_dir: Path,
              say: Callable[[str], None], record: Callable[[str, dict[str, Any]], None]) -> dict[str, str]:
    """Run each step that a runnable cell needs; return {step name: why it failed} for the failed ones."""
    failed: dict[str, str] = {}
    for step in steps:
        if not any(step.needs(c["backend"]) for c in cells):
            continue
        say(f"step     {step.name}  {' '.join(step.argv)}")
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        out = run_step(step, log_dir / f"step-{step.name}.log")
        record(step.name, {"status": out.status, "detail": out.detail, "wall_s": round(out.wall_s, 1),
                           "started": started, "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        say(f"{out.status:<8} step {step.name}: {out.detail}")
        if out.status == "failed":
            failed[step.name] = out.detail
    return failed


def blocked_by(steps: Sequence[Step], failed: Mapping[str, str], backend: str) -> str | None:
    """The failed step a cell of ``backend`` waits for, or None."""
    for step in steps:
        if step.name in failed and step.needs(backend):
            return step.name
    return None
