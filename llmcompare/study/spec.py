"""A study file: validated, expanded into cells, each cell an argv for the llmcompare CLI.

Every check here is done before anything runs, and every problem is one line naming the file, the line
and the key (``study.yaml:14: matrix.option[2]: ...``). The matrix is a Cartesian product with
``include:``/``exclude:`` as in a GitHub Actions matrix; a list value (``concurrency: [[1, 2, 4]]``) is
one cell's levels. A cell becomes ``[COMMAND, -b BACKEND, -m MODEL, -o K=V ..., --FLAG VALUE ...,
--device D, (--slo ..., --price-per-hour P for load)]`` and is parsed by the real llmcompare parser, so a
flag the CLI does not take is refused here, with the key and line that produced it.

The cell id is a short hash of the resolved argv, the model, the hardware entry and the repeat index:
the same cell of the same study file always lands in the same directory, which is what lets a study
resume.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmcompare.cli.main import build_parser
from llmcompare.config.spec import is_secret_option, parse_backends
from llmcompare.errors import OptionError, UserError, did_you_mean
from llmcompare.hardware.gpus import get_accelerator
from llmcompare.plugins import get_registry
from llmcompare.redact import redact_url
from llmcompare.study.hardware import Hardware
from llmcompare.study.steps import Step, parse_steps
from llmcompare.study.yamlfile import Located, StudyFileError, dotted, load, load_file

TOP_KEYS = ("name", "description", "model", "models", "scenario", "workload", "slo", "hardware", "matrix",
            "include", "exclude", "repeats", "options", "option", "timeout", "confirm", "prune", "fidelity", "steps")
#: Matrix keys that are not scenario flags.
AXES = ("backend", "option", "options", "model", "hardware", "weights")
#: Flags the study sets itself; a workload or matrix key may not set them.
RESERVED = {
    "backend": "put backends under matrix.backend",
    "model": "set model: at the top, or under matrix.model",
    "option": "put options under matrix.option or options:",
    "device": "the hardware entry sets it (hardware.NAME.device)",
    "output": "the study names each cell's directory",
    "resume": "resume the whole study with 'llmcompare study run --resume DIR'",
    "quiet": "cells always run quietly",
    "slo": "set slo: at the top of the study file",
    "price_per_hour": "set price_per_hour on the hardware entry",
    "debug": "not a cell flag",
}
SLO_KEYS = ("ttft_ms", "tpot_ms", "e2e_ms", "itl_ms")
LEVEL_FLAGS = ("concurrency", "rate")
WEIGHT_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8", "int4")


# ---------------------------------------------------------------------------------------------
# The objects
# ---------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One run of the llmcompare CLI: one backend, one model, one hardware entry, one repeat."""

    id: str
    kind: str                      # "cell", or "confirm" (a follow-up that re-measures one level)
    name: str                      # a readable label: the axes that vary
    deployment: str                # the label without the load levels and the repeat
    deployment_id: str             # a hash of the same
    repeat: int
    command: str                   # run, load, ...
    argv: list[str]                # everything after ``python -m llmcompare`` except -O DIR
    values: dict[str, Any]         # axis -> value, as the study file gave them
    backend: str
    options: list[str]
    model: str | None
    hardware: str
    weights: str
    gpus: int                      # GPUs the cell occupies (0: a CPU cell)
    flags: dict[str, Any] = field(default_factory=dict)  # scenario flag -> value, resolved
    levels: list[float] = field(default_factory=list)    # concurrency or rate levels (load)
    level_kind: str | None = None                         # "concurrency", "rate" or None
    confirm_of: str | None = None                         # a confirm cell: the deployment it re-measures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cell:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Study:
    name: str
    source: str
    description: str
    scenario: str
    model: str | None
    models: dict[str, dict[str, Any]]
    workload: dict[str, Any]
    slo: dict[str, float]
    hardware: dict[str, Hardware]
    repeats: int
    timeout_s: float | None
    confirm: dict[str, Any]
    prune: bool
    cells: list[Cell]
    resolved: dict[str, Any]         # the study file's content with defaults filled in (for study.json)
    steps: list[Step] = field(default_factory=list)  # run before the cells (steps.py)

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise KeyError(cell_id)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def parse_only(items: Sequence[str]) -> dict[str, set[str]]:
    """``--only KEY=V1,V2`` (repeatable) -> ``{KEY: {V1, V2}}``; KEY is a matrix axis (``backend``,
    ``hardware``, ``model``, ``option``, a scenario flag)."""
    out: dict[str, set[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise UserError(f"--only {item!r} must look like AXIS=VALUE[,VALUE...], e.g. backend=llamacpp:f16")
        out.setdefault(key.strip(), set()).update(v.strip() for v in values.split(",") if v.strip())
    return out


def select(study: Study, only: dict[str, set[str]]) -> Study:
    """The study restricted to the cells whose axes take the given values (every key must match), and to
    the steps those cells need. A key no cell has, or a selection that keeps no cell, is an error."""
    if not only:
        return study

    def value(cell: Cell, key: str) -> str | None:
        if key in cell.values:
            v = cell.values[key]
            return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        return {"backend": cell.backend, "hardware": cell.hardware, "model": cell.model}.get(key)

    for key in only:
        if all(value(c, key) is None for c in study.cells):
            axes = sorted({k for c in study.cells for k in c.values} | {"backend", "hardware", "model"})
            raise UserError(f"--only {key}=...: the study has no axis {key!r}{did_you_mean(key, axes)} (axes: {', '.join(axes)})")
    cells = [c for c in study.cells if all(value(c, k) in vs for k, vs in only.items())]
    if not cells:
        raise UserError(f"--only keeps no cell of {study.name}; run llmcompare study plan {study.source} to see the cells")
    backends = {c.backend for c in cells}
    steps = [s for s in study.steps if not s.needed_by or backends & set(s.needed_by)]
    return dataclasses.replace(study, cells=cells, steps=steps)


def load_study(path: str | Path, *, validate_backends: bool = True) -> Study:
    doc = load_file(path)
    return build_study(doc, validate_backends=validate_backends)


def load_study_text(text: str, source: str = "study.yaml", *, validate_backends: bool = True) -> Study:
    return build_study(load(text, source), validate_backends=validate_backends)


def build_study(doc: Located, *, validate_backends: bool = True) -> Study:
    d = doc.data
    if not isinstance(d, Mapping):
        raise doc.error((), "a study file is a mapping (name:, scenario:, matrix:, ...)")
    for key in d:
        if key not in TOP_KEYS:
            raise doc.error((key,), f"unknown key{_dym(str(key), TOP_KEYS)} (a study file takes: {', '.join(TOP_KEYS)})")
    name = _str(doc, ("name",), required=True)
    if not re.match(r"^[\w.-]+$", name):
        raise doc.error(("name",), "use letters, digits, '.', '_' or '-' (it names the study's directory)")
    scenario = _str(doc, ("scenario",), default="load")
    parser = _parser(scenario)
    sub = _subparsers(parser)
    if scenario not in sub:
        raise doc.error(("scenario",), f"{scenario!r} is not an llmcompare command that runs backends"
                                       f"{_dym(scenario, sub)} (use run or load)")
    sp = sub[scenario]
    if not any("--backend" in a.option_strings for a in sp._actions):
        raise doc.error(("scenario",), f"'llmcompare {scenario}' does not run backends; use run or load")
    model = d.get("model", "default")
    if model is not None and not isinstance(model, str):
        raise doc.error(("model",), "a model is a string: default, a .gguf path, an HF directory, a hub id or"
                                    " synthetic:<shape>")
    models = _models(doc)
    workload = d.get("workload") or {}
    if not isinstance(workload, Mapping):
        raise doc.error(("workload",), "a mapping of the scenario's flags, e.g. {input_tokens: 64, requests: 8}")
    slo = _slo(doc)
    hardware = _hardware(doc)
    repeats = d.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise doc.error(("repeats",), f"a whole number of at least 1, got {repeats!r}")
    timeout = d.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise doc.error(("timeout",), f"seconds per cell (a positive number), got {timeout!r}")
    confirm = _confirm(doc, scenario, slo)
    prune = d.get("prune", True)
    if not isinstance(prune, bool):
        raise doc.error(("prune",), "true or false")
    fidelity = d.get("fidelity", False)
    if not isinstance(fidelity, bool):
        raise doc.error(("fidelity",), "true or false (run scenarios: the fidelity pass; default false)")
    if "option" in d and "options" in d:
        raise doc.error(("options",), "give options: or option:, not both")
    global_opts = _option_list(doc, ("options" if "options" in d else "option",), d.get("options", d.get("option")))

    steps = parse_steps(doc, validate_backends)
    combos = _expand(doc)
    for values, paths in combos:
        for key in values:
            _check_axis(doc, key, paths.get(key, ("matrix", key)), sp)
    for key in workload:
        _check_flag_key(doc, ("workload", key), sp)

    cells: list[Cell] = []
    varying = _varying_axes(combos)
    seen: dict[str, tuple] = {}
    ctx = _Context(doc, scenario, sp, parser, model, models, workload, slo, hardware, global_opts, fidelity,
                   validate_backends)
    for r in range(repeats):
        for values, paths in combos:
            cell = ctx.cell(values, paths, r, varying)
            origin = paths.get("") or next(iter(paths.values()), ("matrix",))
            if cell.id in seen:
                raise doc.error(origin, f"gives the same cell as {dotted(seen[cell.id])} (identical argv);"
                                        " remove one of them")
            seen[cell.id] = origin
            secret = _credential_in(cell.argv)
            if secret:
                raise doc.error(origin, f"{secret} holds a credential, and a study's files (study.yaml, study.json, the"
                                        " cells' commands) are written as given: name an environment variable"
                                        " instead (-o api_key_env=VAR) or keep the credential out of the URL")
            cells.append(cell)
    if not cells:
        raise doc.error(("matrix",), "no cells: the matrix, include: and exclude: leave nothing to run")
    resolved = {
        "name": name, "description": d.get("description", ""), "scenario": scenario, "model": model,
        "models": models, "workload": dict(workload), "slo": slo,
        "hardware": {k: v.to_dict() for k, v in hardware.items()}, "matrix": d.get("matrix"),
        "include": d.get("include", []), "exclude": d.get("exclude", []), "repeats": repeats,
        "options": global_opts, "timeout": timeout, "confirm": confirm, "prune": prune, "fidelity": fidelity,
    }
    if steps:  # only when given, so that the manifests of studies without steps are unchanged
        resolved["steps"] = [s.to_dict() for s in steps]
    return Study(name=name, source=doc.source, description=str(d.get("description", "") or ""), scenario=scenario,
                 model=model, models=models, workload=dict(workload), slo=slo, hardware=hardware, repeats=repeats,
                 timeout_s=float(timeout) if timeout else None, confirm=confirm, prune=prune, cells=cells,
                 resolved=resolved, steps=steps)


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
def _str(doc: Located, path: tuple, *, required: bool = False, default: str | None = None) -> str:
    value = doc.data.get(path[-1]) if len(path) == 1 else None
    if value is None:
        if required:
            raise doc.error(path, "required")
        return default  # type: ignore[return-value]
    if not isinstance(value, str):
        raise doc.error(path, f"a string, got {value!r}")
    return value


def _models(doc: Located) -> dict[str, dict[str, Any]]:
    models = doc.data.get("models") or {}
    if not isinstance(models, Mapping):
        raise doc.error(("models",), "a mapping: model -> its config.json fields (for planning a model"
                                     " llmcompare cannot read offline)")
    need = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    for ref, cfg in models.items():
        if not isinstance(cfg, Mapping):
            raise doc.error(("models", ref), "a mapping of config.json fields (hidden_size, num_hidden_layers, ...)")
        missing = [k for k in need if k not in cfg]
        if missing:
            raise doc.error(("models", ref), f"missing {', '.join(missing)} (Llama-style config.json fields)")
    return {str(k): dict(v) for k, v in models.items()}


def _slo(doc: Located) -> dict[str, float]:
    slo = doc.data.get("slo") or {}
    if not isinstance(slo, Mapping):
        raise doc.error(("slo",), "a mapping such as {ttft_ms: 500, tpot_ms: 100}")
    out = {}
    for k, v in slo.items():
        if k not in SLO_KEYS:
            raise doc.error(("slo", k), f"unknown limit{_dym(str(k), SLO_KEYS)} (limits: {', '.join(SLO_KEYS)})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise doc.error(("slo", k), f"a positive number of milliseconds, got {v!r}")
        out[k] = float(v)
    return out


def _hardware(doc: Located) -> dict[str, Hardware]:
    hw = doc.data.get("hardware")
    if hw is None:
        return {"cpu": Hardware("cpu", None)}
    if not isinstance(hw, Mapping) or not hw:
        raise doc.error(("hardware",), "a mapping: name -> {gpu: a10g, count: 4, price_per_hour: 5.67} (or"
                                       " cpu: {price_per_hour: 0.10})")
    fields = ("gpu", "accelerator", "count", "price_per_hour", "device", "memory_gb", "bandwidth_gbs", "description")
    out = {}
    for name, entry in hw.items():
        path = ("hardware", name)
        entry = {} if entry is None else entry
        if not isinstance(entry, Mapping):
            raise doc.error(path, "a mapping such as {gpu: a10g, count: 1, price_per_hour: 1.21}")
        for k in entry:
            if k not in fields:
                raise doc.error(path + (k,), f"unknown key{_dym(str(k), fields)} (keys: {', '.join(fields)})")
        if "gpu" in entry and "accelerator" in entry:
            raise doc.error(path, "give gpu: or accelerator:, not both")
        acc_name = entry.get("gpu", entry.get("accelerator"))
        if acc_name is None and str(name).lower() != "cpu":
            acc_name = None  # a CPU machine under another name
        acc_key = None
        if acc_name is not None and str(acc_name).lower() != "cpu":
            try:
                acc_key = get_accelerator(str(acc_name)).key
            except UserError as exc:
                raise doc.error(path + ("gpu" if "gpu" in entry else "accelerator",), str(exc)) from None
        count = entry.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise doc.error(path + ("count",), f"a whole number of at least 1, got {count!r}")
        nums = {}
        for k in ("price_per_hour", "memory_gb", "bandwidth_gbs"):
            v = entry.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
                                  or not math.isfinite(v)):
                raise doc.error(path + (k,), f"a positive number, got {v!r}")
            nums[k] = float(v) if v is not None else None
        default_device = "cpu" if acc_key is None else ("neuron" if acc_key == "inf2" else "cuda")
        device = entry.get("device", default_device)
        if not isinstance(device, str):
            raise doc.error(path + ("device",), "cpu, cuda or neuron")
        out[str(name)] = Hardware(str(name), acc_key, count, nums["price_per_hour"], device, nums["memory_gb"],
                                  nums["bandwidth_gbs"], str(entry.get("description", "") or ""))
    return out


def _confirm(doc: Located, scenario: str, slo: dict[str, float]) -> dict[str, Any]:
    raw = doc.data.get("confirm", True)
    out = {"enabled": scenario == "load" and bool(slo), "rounds": 2, "requests": None}
    if isinstance(raw, bool):
        out["enabled"] = out["enabled"] and raw
        return out
    if not isinstance(raw, Mapping):
        raise doc.error(("confirm",), "true, false, or {rounds: 2, requests: 16}")
    for k, v in raw.items():
        if k not in ("rounds", "requests", "enabled"):
            raise doc.error(("confirm", k), "unknown key (keys: enabled, rounds, requests)")
        if k == "enabled":
            if not isinstance(v, bool):
                raise doc.error(("confirm", k), "true or false")
            out["enabled"] = out["enabled"] and v
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise doc.error(("confirm", k), f"a whole number of at least 1, got {v!r}")
        else:
            out[k] = v
    return out


def _option_list(doc: Located, path: tuple, value: Any) -> list[str]:
    """An option value: ``"k=v"``, ``{k: v, ...}``, a list of those, or null/none for no option."""
    if value is None or value == "none":
        return []
    if isinstance(value, Mapping):
        out = []
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                raise doc.error(path, f"option names are strings, got {k!r}")
            out.append(f"{k}={_option_value(v)}")
        return out
    if isinstance(value, str):
        if "=" not in value:
            raise doc.error(path, f"an option is KEY=VALUE (or a mapping), got {value!r}")
        return [value]
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            out.extend(_option_list(doc, path + (i,), item))
        return out
    raise doc.error(path, f"an option is KEY=VALUE, a mapping or a list of them, got {value!r}")


def _scope_matches(option: str, backend: str) -> bool:
    """An option scoped ``NAME.KEY=VALUE`` applies only to cells of that backend (by name, variant or
    label); an unscoped one to every cell."""
    key = option.partition("=")[0].strip()
    scope, dot, _ = key.rpartition(".")
    if not dot:
        return True
    base, _, label = backend.partition("@")
    return scope in (backend, base, base.partition(":")[0], label)


def _option_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    return str(v)


# ---------------------------------------------------------------------------------------------
# The matrix (GitHub Actions semantics for include/exclude)
# ---------------------------------------------------------------------------------------------
def _expand(doc: Located) -> list[tuple[dict[str, Any], dict[str, tuple]]]:
    """The combinations, each with the path in the file of every value it took."""
    matrix = doc.data.get("matrix")
    if matrix is None:
        matrix = {}
    if not isinstance(matrix, Mapping):
        raise doc.error(("matrix",), "a mapping: axis -> list of values, e.g. backend: [echo, llamacpp]")
    axes = []
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise doc.error(("matrix", key), "a non-empty list of values (a list inside it is one cell's levels,"
                                             " e.g. concurrency: [[1, 2, 4]])")
        axes.append((key, values))
    combos: list[tuple[dict[str, Any], dict[str, tuple]]] = []
    if axes:
        for picks in itertools.product(*[list(enumerate(v)) for _, v in axes]):
            combo = {axes[j][0]: value for j, (_, value) in enumerate(picks)}
            paths = {axes[j][0]: ("matrix", axes[j][0], i) for j, (i, _) in enumerate(picks)}
            combos.append((combo, paths))
    exclude = doc.data.get("exclude") or []
    if not isinstance(exclude, list):
        raise doc.error(("exclude",), "a list of partial combinations, e.g. [{backend: echo, concurrency: 4}]")
    for i, ex in enumerate(exclude):
        if not isinstance(ex, Mapping) or not ex:
            raise doc.error(("exclude", i), "a mapping of axis: value")
        for k in ex:
            if k not in matrix:
                raise doc.error(("exclude", i, k), f"not a matrix axis{_dym(str(k), list(matrix))} (axes: {', '.join(map(str, matrix))})")
        combos = [(c, p) for c, p in combos if not all(_same(c.get(k), v) for k, v in ex.items())]
    include = doc.data.get("include") or []
    if not isinstance(include, list):
        raise doc.error(("include",), "a list of combinations to add or extend")
    original = set(matrix)
    for i, inc in enumerate(include):
        if not isinstance(inc, Mapping) or not inc:
            raise doc.error(("include", i), "a mapping of axis: value")
        added = False
        for combo, paths in combos:
            # an entry extends every combination whose original values it does not overwrite
            if all(_same(combo[k], v) for k, v in inc.items() if k in original and k in combo):
                for k, v in inc.items():
                    if k not in original:
                        combo[k] = v
                        paths[k] = ("include", i, k)
                added = True
        if not added:
            combos.append((dict(inc), {k: ("include", i, k) for k in inc} | {"": ("include", i)}))
    if not combos and not axes and not include:
        raise doc.error(("matrix",), "required: at least matrix: {backend: [NAME, ...]}")
    return combos


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _varying_axes(combos: list[tuple[dict[str, Any], dict[str, tuple]]]) -> list[str]:
    keys: list[str] = []
    for c, _ in combos:
        for k in c:
            if k not in keys:
                keys.append(k)
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c, _ in combos}) > 1]


def _check_axis(doc: Located, key: Any, where: tuple, sp: argparse.ArgumentParser) -> None:
    where = where[:2] if where[0] == "matrix" else where
    if not isinstance(key, str):
        raise doc.error(where, f"an axis name is a string, got {key!r}")
    if key in AXES:
        return
    _check_flag_key(doc, where, sp, key)


def _check_flag_key(doc: Located, path: tuple, sp: argparse.ArgumentParser, key: Any = None) -> None:
    key = path[-1] if key is None else key
    if not isinstance(key, str):
        raise doc.error(path, f"a flag name is a string, got {key!r}")
    norm = key.replace("-", "_")
    if norm in RESERVED:
        raise doc.error(path, f"the study sets --{norm.replace('_', '-')} itself: {RESERVED[norm]}")
    if norm in ("fidelity",):
        raise doc.error(path, "set fidelity: true at the top of the study file")
    flags = _long_flags(sp)
    flag = "--" + norm.replace("_", "-")
    if flag not in flags:
        names = [f[2:].replace("-", "_") for f in flags]
        raise doc.error(path, f"'llmcompare {sp.prog.split()[-1]}' has no flag {flag}{_dym(norm, names)}"
                              " (a workload or matrix key is one of the scenario's flags, by its CLI name)")


# ---------------------------------------------------------------------------------------------
# A cell
# ---------------------------------------------------------------------------------------------
@dataclass
class _Context:
    doc: Located
    scenario: str
    sp: argparse.ArgumentParser
    parser: argparse.ArgumentParser
    model: str | None
    models: dict[str, dict[str, Any]]
    workload: Mapping[str, Any]
    slo: dict[str, float]
    hardware: dict[str, Hardware]
    global_opts: list[str]
    fidelity: bool
    validate_backends: bool

    def cell(self, values: dict[str, Any], paths: dict[str, tuple], repeat: int, varying: list[str]) -> Cell:
        doc = self.doc
        origin = paths.get("", ("matrix",))

        def where(key: str) -> tuple:
            return paths.get(key, ("matrix", key))

        backend = values.get("backend")
        if backend is None:
            raise doc.error(origin, "no backend: add matrix.backend: [NAME, ...]")
        if not isinstance(backend, str) or not backend:
            raise doc.error(where("backend"), f"a backend is NAME[:VARIANT][@LABEL], got {backend!r}")
        if "option" in values and "options" in values:
            raise doc.error(where("options"), "give option or options, not both")
        opt_key = "options" if "options" in values else "option"
        options = [o for o in self.global_opts + _option_list(doc, where(opt_key), values.get(opt_key))
                   if _scope_matches(o, backend)]
        model = values.get("model", self.model)
        if model is not None and not isinstance(model, str):
            raise doc.error(where("model"), f"a model is a string, got {model!r}")
        model = None if model in (None, "default") else model
        if "hardware" in values:
            hw_name = values["hardware"]
            if hw_name not in self.hardware:
                raise doc.error(where("hardware"), f"no hardware entry {hw_name!r}{_dym(str(hw_name), self.hardware)}"
                                                   f" (hardware: {', '.join(self.hardware)})")
        elif len(self.hardware) == 1:
            hw_name = next(iter(self.hardware))
        else:
            raise doc.error(("matrix",), f"the study defines {len(self.hardware)} hardware entries: add"
                                         f" hardware: [{', '.join(self.hardware)}] to the matrix")
        hw = self.hardware[hw_name]
        weights = values.get("weights")
        if weights is not None and weights not in WEIGHT_DTYPES:
            raise doc.error(where("weights"), f"one of {', '.join(WEIGHT_DTYPES)}, got {weights!r}")
        weights = weights or infer_weights(backend, options, hw)

        # scenario flags: workload first, then the matrix's (a matrix value wins)
        flags: dict[str, Any] = {}
        flag_origin: dict[str, tuple] = {}
        for k, v in self.workload.items():
            flags[k.replace("-", "_")] = v
            flag_origin[k.replace("-", "_")] = ("workload", k)
        for k, v in values.items():
            if k in AXES:
                continue
            flags[k.replace("-", "_")] = v
            flag_origin[k.replace("-", "_")] = where(k)

        argv = [self.scenario, "-b", backend]
        pieces: list[tuple[tuple, list[str]]] = []
        if model is not None:
            argv += ["-m", model]
        for opt in options:
            argv += ["-o", opt]
        for k, v in flags.items():
            piece = _flag_argv(self.sp, k, v)
            if piece is None:
                raise self.doc.error(flag_origin[k], f"{v!r} is not a value for --{k.replace('_', '-')}"
                                                     " (a number, a string, true/false, or a list of numbers)")
            pieces.append((flag_origin[k], piece))
            argv += piece
        if self.scenario == "run" and not self.fidelity and "--no-fidelity" in _long_flags(self.sp):
            argv.append("--no-fidelity")
        argv += ["--device", hw.device]
        if self.slo and "--slo" in _long_flags(self.sp):
            argv += ["--slo", ",".join(f"{k}={_num(v)}" for k, v in self.slo.items())]
        # the price goes to load cells (their levels.csv carries the cost); a run cell's cost is the study's own
        # arithmetic from the hardware entry, so a price edit does not change its id
        if hw.price_per_hour is not None and self.scenario == "load" and "--price-per-hour" in _long_flags(self.sp):
            argv += ["--price-per-hour", _num(hw.price_per_hour)]
        argv.append("-q")
        self._validate(argv, pieces, backend, options, hw, where)

        level_kind = next((k for k in LEVEL_FLAGS if k in flags), None)
        levels = [float(x) for x in _as_list(flags[level_kind])] if level_kind else []
        gpus = gpus_needed(hw, options)
        if hw.is_gpu and gpus > hw.count:
            raise doc.error(where(opt_key), f"the options ask for {gpus} GPUs (tensor_parallel_size × replicas)"
                                            f" but hardware {hw_name!r} has {hw.count}")
        name = _label(values, varying, hw_name, model)
        dep_values = {k: v for k, v in values.items() if k not in LEVEL_FLAGS}
        deployment = _label(dep_values, [k for k in varying if k not in LEVEL_FLAGS], hw_name, model) or backend
        dep_id = short_hash({"argv": _strip_levels(argv), "model": model, "hardware": hw.to_dict()})
        cid = cell_id(argv, model, hw, repeat, "cell")
        return Cell(id=cid, kind="cell", name=name or backend, deployment=deployment, deployment_id=dep_id,
                    repeat=repeat, command=self.scenario, argv=argv, values=_jsonable(values), backend=backend,
                    options=options, model=model, hardware=hw_name, weights=weights, gpus=gpus,
                    flags=_jsonable(flags), levels=levels, level_kind=level_kind)

    def _validate(self, argv: list[str], pieces: list[tuple[tuple, list[str]]], backend: str, options: list[str],
                  hw: Hardware, where) -> None:
        base = [self.scenario, "-b", backend]
        for origin, piece in pieces:
            err = parse_error(self.parser, base + piece)
            if err:
                raise self.doc.error(origin, err)
        err = parse_error(self.parser, argv)
        if err:
            raise self.doc.error(("matrix",), f"the cell's argv {' '.join(argv)!r} does not parse: {err}")
        if self.validate_backends:
            check_backend(self.doc, where, backend, options, hw.device)


def check_backend(doc: Located, where, backend: str, options: list[str], device: str) -> None:
    """Name, variant, options and device, checked by llmcompare's own parser of --backend/--option
    (no engine is imported)."""
    try:
        parse_backends(get_registry(), [backend], options, device=device)
    except OptionError as exc:
        key = "options" if "options" in (doc.data.get("matrix") or {}) else "option"
        in_matrix = any(k in (doc.data.get("matrix") or {}) for k in ("option", "options"))
        raise doc.error(where(key) if in_matrix else ("options" if "options" in doc.data else "option",),
                        str(exc)) from None
    except UserError as exc:
        if "does not run on device" in str(exc):
            raise doc.error(where("hardware") if "hardware" in (doc.data.get("matrix") or {}) else ("hardware",),
                            f"{exc} (set device: on the hardware entry)") from None
        raise doc.error(where("backend"), str(exc)) from None


def _flag_argv(sp: argparse.ArgumentParser, key: str, value: Any) -> list[str] | None:
    flag = "--" + key.replace("_", "-")
    action = next((a for a in sp._actions if flag in a.option_strings), None)
    if action is None:
        return None
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            return None
        return [flag] if value else []
    if isinstance(action, argparse._AppendAction):
        items = []
        if isinstance(value, Mapping):
            items = [f"{k}={_option_value(v)}" for k, v in value.items()]
        elif isinstance(value, list):
            items = [_scalar(v) for v in value]
        else:
            items = [_scalar(value)]
        if any(i is None for i in items):
            return None
        return [x for i in items for x in (flag, i)]
    if isinstance(value, list):
        parts = [_scalar(v) for v in value]
        if not parts or any(p is None or "," in p for p in parts):
            return None
        return [flag, ",".join(parts)]  # type: ignore[arg-type]
    s = _scalar(value)
    return None if s is None else [flag, s]


def _scalar(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _num(v)
    if isinstance(v, str):
        return v
    return None


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _as_list(v: Any) -> list[Any]:
    if isinstance(v, list):
        return v
    if isinstance(v, str):
        return [float(x) for x in v.split(",") if x.strip()]
    return [v]


def _strip_levels(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--concurrency", "-c", "--rate"):
            skip = True
            continue
        out.append(a)
    return out


def with_levels(argv: list[str], level_kind: str, levels: Sequence[float]) -> list[str]:
    """``argv`` with its load levels replaced by ``levels`` (``--concurrency 1,2`` or ``--rate 0.5``)."""
    out = _strip_levels(argv)
    i = out.index("-q") if "-q" in out else len(out)
    out[i:i] = [f"--{level_kind}", ",".join(_num(x) for x in levels)]
    return out


def with_level(argv: list[str], level_kind: str, level: float, requests: int | None = None) -> list[str]:
    """``argv`` with its levels replaced by one level (a confirm cell), and optionally its length in
    requests."""
    out = with_levels(argv, level_kind, [level])
    if requests is not None:
        for flag in ("--requests", "--duration"):
            if flag in out:
                j = out.index(flag)
                del out[j:j + 2]
        i = out.index("-q") if "-q" in out else len(out)
        out[i:i] = ["--requests", str(requests)]
    return out


def _label(values: Mapping[str, Any], varying: list[str], hw_name: str, model: str | None) -> str:
    parts = []
    for k in varying:
        if k not in values:
            continue
        v = values[k]
        if k in ("option", "options"):
            parts.append(" ".join(_option_list_plain(v)) or "no options")
        elif k == "concurrency":
            parts.append("c=" + ",".join(_num(x) for x in _as_list(v)))
        elif k == "rate":
            parts.append("rate=" + ",".join(_num(x) for x in _as_list(v)))
        elif k in ("backend", "hardware", "model", "weights"):
            parts.append(str(v))
        else:
            parts.append(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")
    return " · ".join(parts)


def _option_list_plain(v: Any) -> list[str]:
    if v is None or v == "none":
        return []
    if isinstance(v, Mapping):
        return [f"{k}={_option_value(x)}" for k, x in v.items()]
    if isinstance(v, list):
        return [s for item in v for s in _option_list_plain(item)]
    return [str(v)]


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def short_hash(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def cell_id(argv: list[str], model: str | None, hw: Hardware, repeat: int, kind: str) -> str:
    """The cell's stable id: a short hash of its resolved argv, model, hardware entry and repeat."""
    return short_hash({"argv": argv, "model": model, "hardware": hw.to_dict(), "repeat": repeat, "kind": kind})


def infer_weights(backend: str, options: Sequence[str], hw: Hardware) -> str:
    """The weights' type for the planner: from the variant and the quantization options."""
    base = backend.partition("@")[0]
    variant = base.partition(":")[2].lower()
    opts = {o.partition("=")[0].rpartition(".")[2].lower(): o.partition("=")[2].lower() for o in options}
    quant = opts.get("quantize") or opts.get("quantization") or ""
    if quant in ("gptq", "awq", "marlin", "exl2", "bitsandbytes-nf4", "nf4") or variant in ("gptq", "nf4", "q4_0",
                                                                                         "awq", "exl2", "exl3",
                                                                                         "q4f16_1", "q4f32_1"):
        return "int4"
    if quant in ("bitsandbytes", "eetq", "int8") or variant in ("int8", "q8_0", "int8_float16", "int8_float32"):
        return "int8"
    if quant in ("fp8",):
        return "fp8"
    if variant in ("fp32", "f32", "float32"):
        return "fp32"
    if variant in ("bf16", "bfloat16"):
        return "bf16"
    if variant in ("fp16", "f16", "float16"):
        return "fp16"
    dtype = opts.get("dtype", "")
    if dtype in ("bfloat16", "bf16"):
        return "bf16"
    return "fp16" if hw.accelerator is not None else "fp32"


def gpus_needed(hw: Hardware, options: Sequence[str]) -> int:
    """GPUs a cell occupies: tensor_parallel_size (or num_shard/tp_size) × replicas when given, else the
    hardware entry's count; 0 for a cell that does not run on CUDA."""
    if not hw.is_gpu:
        return 0
    opts = {o.partition("=")[0].rpartition(".")[2]: o.partition("=")[2] for o in options}
    tp = next((opts[k] for k in ("tensor_parallel_size", "num_shard", "tp_size") if k in opts), None)
    reps = opts.get("replicas")
    if tp is None and reps is None:
        return hw.count
    try:
        return max(1, int(tp or 1)) * max(1, int(reps or 1))
    except ValueError:
        return hw.count


def tensor_parallel(options: Sequence[str]) -> tuple[int, int]:
    """(tensor-parallel degree, replicas) from a cell's options (1, 1 when not given)."""
    opts = {o.partition("=")[0].rpartition(".")[2]: o.partition("=")[2] for o in options}
    tp = next((opts[k] for k in ("tensor_parallel_size", "num_shard", "tp_size") if k in opts), "1")
    try:
        return max(1, int(tp)), max(1, int(opts.get("replicas", "1")))
    except ValueError:
        return 1, 1


# ---------------------------------------------------------------------------------------------
# The real parser
# ---------------------------------------------------------------------------------------------
def _parser(command: str) -> argparse.ArgumentParser:
    """The CLI's own parser, with the flags of ``command`` (the other commands list their help only):
    a flag the CLI does not take is refused here."""
    return build_parser(only=command)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _long_flags(sp: argparse.ArgumentParser) -> list[str]:
    return [s for a in sp._actions for s in a.option_strings if s.startswith("--")]


def parse_error(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The parser's one-line complaint about ``argv``, or None when it parses."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code in (0, None):
            return None
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        last = lines[-1] if lines else "does not parse"
        return re.sub(r"^llmcompare( \w+)?: error: ", "", last)
    return None


def _credential_in(argv: list[str]) -> str | None:
    """The first option or argument of a cell's argv that holds a credential (a URL with userinfo or a
    secret-looking query parameter, an option under a secret-looking key), named without its value."""
    for flag, item in zip(argv, argv[1:]):
        if flag in ("-o", "--option"):
            key, sep, value = item.partition("=")
            name = key.rpartition(".")[2]
            if sep and is_secret_option(name, value):
                return f"option {key}"
    for before, item in zip(["", *argv], argv):  # a URL given to another flag (--model, --prompts, ...)
        if before not in ("-o", "--option") and "://" in item and redact_url(item) != item:
            return f"the argument of {before}" if before.startswith("-") else "a positional argument"
    return None


def _dym(name: str, choices) -> str:
    return did_you_mean(name, [str(c) for c in choices])


__all__ = ["Cell", "Study", "StudyFileError", "load_study", "load_study_text", "with_level", "with_levels",
           "cell_id"]
