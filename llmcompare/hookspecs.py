"""The hooks a llmcompare plugin can implement, and the plugin API's version.

A plugin is a module (or any object) with functions decorated by :data:`llmcompare.hookimpl`.
Third-party plugins are found through the ``llmcompare`` entry-point group; the built-in backends,
scenarios, reports and commands register through exactly the same hooks. Every hook takes a
``register`` callback rather than returning values, so a plugin can register any number of things and
nothing heavy is imported: what it registers is a light spec naming a ``"module:Class"`` target.

A plugin may say which plugin API it was written for with a module attribute, e.g.
``LLMCOMPARE_API = "1.0"``. A plugin written for another major version, or for a newer minor one,
is refused with a one-line message naming the plugin and the version it needs; an older minor
version loads, and what it uses that has since been renamed or removed keeps working for one more
minor version with a :class:`DeprecationWarning` (docs/plugins.md lists them).
"""

from __future__ import annotations

import pluggy

API_VERSION = "1.1"
"""The plugin API this llmcompare provides: ``MAJOR.MINOR``. 1.0: llmcompare 0.1 (``register_backends``);
1.1: llmcompare 0.2 (``register_scenarios``, ``register_reports``, ``register_commands``; engine facts on
``BackendSpec``)."""

hookspec = pluggy.HookspecMarker("llmcompare")
hookimpl = pluggy.HookimplMarker("llmcompare")


@hookspec
def register_backends(register):
    """Register inference backends.

    :param register: call ``register(BackendSpec(...))`` once per backend. A spec is light: a name,
        a ``"module:Class"`` target, the pip extra or install command, the modules it needs, its
        variants and its declared options and capabilities. The target is imported only when a run uses it.
    :returns: nothing.

    Added in API 1.0.
    """


@hookspec
def register_scenarios(register):
    """Register scenarios: what a run does with each loaded backend (batch-1 latency, load, fidelity).

    :param register: call ``register(ScenarioSpec(...))`` once per scenario. The spec names its
        ``"module:Class"`` target (a :class:`llmcompare.scenarios.base.Scenario`), the CLI command that
        runs it (``command``), or the scenarios whose command it joins as a follow-up pass (``joins``).
        The class is imported when a run, a report or its command uses it.
    :returns: nothing.

    Added in API 1.1.
    """


@hookspec
def register_reports(register):
    """Register report writers: one per format, all fed the same :class:`~llmcompare.RunResult`.

    :param register: call ``register(ReportSpec(...))`` once per format; its ``"module:Class"`` target
        writes the format into the run directory (``write(result, out)``), or prints it (the console).
    :returns: nothing.

    Added in API 1.1.
    """


@hookspec
def register_commands(register):
    """Register CLI commands (``llmcompare NAME ...``).

    :param register: call ``register(CommandSpec(...))`` once per command; its ``"module:attribute"``
        target is an object with ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status),
        imported only when that command runs or its help is shown.
    :returns: nothing.

    Added in API 1.1.
    """
