"""The light specs a plugin registers for scenarios, reports and commands (backends register a
:class:`~llmcompare.backend.BackendSpec`).

Each names its implementation as a ``"module:attribute"`` target, imported only when something uses
it (fsspec's registry shape), so loading every plugin stays cheap and a broken implementation fails
only the run that needs it, with a message naming the plugin.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from llmcompare.errors import UserError


def load_target(target: str, what: str) -> Any:
    """Import ``"module:attribute"``; a failure is a one-line :class:`UserError` naming ``what``."""
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"{what}: cannot import {target!r} ({type(exc).__name__}: {exc})") from exc
    return obj


@dataclass(frozen=True)
class _Spec:
    name: str
    target: str
    """``"module:Class"`` (a scenario or report class, instantiated without arguments) or
    ``"module:attribute"`` (a command object)."""
    help: str = ""
    """One line for ``--help`` and listings."""
    source: str = field(default="built-in", compare=False)
    """Filled in by the plugin manager: ``built-in`` or the distribution that registered it."""

    KIND = "plugin"

    def load(self) -> Any:
        """The implementation: an instance of the target class, or the target object itself."""
        obj = load_target(self.target, f"{self.KIND} {self.name!r} ({self.source})")
        return obj() if isinstance(obj, type) else obj


@dataclass(frozen=True)
class ScenarioSpec(_Spec):
    """A scenario: what a run does with each loaded backend. See :mod:`llmcompare.scenarios.base`."""

    command: str | None = None
    """The CLI command that runs this scenario as a run's main scenario (``run`` for latency, ``load``);
    None when it has none of its own."""
    joins: tuple[str, ...] = ()
    """Scenarios whose command this one joins as a follow-up pass, adding its own flags (fidelity joins
    latency: ``llmcompare run`` judges outputs unless ``--no-fidelity``)."""

    KIND = "scenario"


@dataclass(frozen=True)
class ReportSpec(_Spec):
    """A report format. The target class has ``write(result, out) -> list[Path]``, where ``out`` is a
    :class:`llmcompare.report.base.Output` (the run directory, and the console for the console report)."""

    default: bool = True
    """Written by every run and by ``llmcompare report`` (False: only when asked for by name)."""

    KIND = "report"


@dataclass(frozen=True)
class CommandSpec(_Spec):
    """A CLI command: the target object has ``add_arguments(parser)`` and ``run(args) -> int``."""

    KIND = "command"
