"""The plugin manager: built-in and third-party backends, scenarios, reports and commands, loaded
defensively.

Nothing here runs at import time. :func:`get_registry` loads plugins the first time something needs
them (the CLI, the API or a worker). A plugin that fails to import, that was written for another plugin
API, or whose hook raises is recorded in ``Registry.errors`` and the others still load.

Sources, in order:
1. built-in plugins (:data:`DEFAULT_PLUGINS`), registered through the same hooks as any plugin;
2. distributions that declare an entry point in the ``llmcompare`` group;
3. modules named in ``LLMCOMPARE_PLUGINS`` (comma separated), handy for local plugins and tests.

``LLMCOMPARE_BLOCK_PLUGINS`` (comma separated plugin names, e.g. ``llmcompare.backends.echo``) keeps
a plugin from loading.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pluggy

from llmcompare import hookspecs
from llmcompare.backend import BackendSpec
from llmcompare.errors import UnknownBackend, UserError, did_you_mean
from llmcompare.plugins.specs import CommandSpec, ReportSpec, ScenarioSpec

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "CommandSpec", "PluginError", "Registry", "ReportSpec",
           "ScenarioSpec", "get_registry", "load_registry"]

ENTRY_POINT_GROUP = "llmcompare"

DEFAULT_PLUGINS = (
    "llmcompare.backends.echo",
    "llmcompare.backends.hf_transformers",
    "llmcompare.backends.transformers_cb",
    "llmcompare.backends.ctranslate2",
    "llmcompare.backends.llamacpp",
    "llmcompare.backends.openai_http",
    "llmcompare.backends.tgi",
    "llmcompare.backends.served",
    "llmcompare.backends.vllm",
    "llmcompare.backends.mlc",
    "llmcompare.backends.sglang",
    "llmcompare.backends.neuron",
    "llmcompare.backends.sagemaker",
    "llmcompare.backends.exllamav2",
    "llmcompare.backends.exllamav3",
    "llmcompare.scenarios.builtin",
    "llmcompare.report.builtin",
    "llmcompare.cli.builtin",
)


@dataclass
class PluginError:
    plugin: str
    source: str
    error: str


class UnknownName(UserError):
    pass


@dataclass
class Registry:
    """Everything plugins registered, by kind and name, with where each came from, and the plugins
    that failed."""

    backends: dict[str, BackendSpec] = field(default_factory=dict)
    scenarios: dict[str, ScenarioSpec] = field(default_factory=dict)
    reports: dict[str, ReportSpec] = field(default_factory=dict)
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    errors: list[PluginError] = field(default_factory=list)
    plugins: dict[str, str] = field(default_factory=dict)
    """plugin name -> source (``built-in``, a distribution ``name==version``, or ``LLMCOMPARE_PLUGINS``)."""

    _loaded: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def get(self, name: str) -> BackendSpec:
        try:
            return self.backends[name]
        except KeyError:
            known = ", ".join(sorted(self.backends))
            raise UnknownBackend(
                f"unknown backend {name!r}{did_you_mean(name, self.backends)} (available: {known};"
                " run 'llmcompare backends' for the full list)"
            ) from None

    def scenario(self, name: str) -> Any:
        """The scenario object registered as ``name`` (imported on first use)."""
        return self._implementation("scenario", self.scenarios, name)

    def report(self, name: str) -> Any:
        return self._implementation("report", self.reports, name)

    def command(self, name: str) -> Any:
        return self._implementation("command", self.commands, name)

    def _implementation(self, kind: str, table: Mapping[str, Any], name: str) -> Any:
        if (kind, name) not in self._loaded:
            if name not in table:
                known = ", ".join(sorted(table)) or "none"
                raise UnknownName(f"unknown {kind} {name!r}{did_you_mean(name, table)} (registered: {known})")
            self._loaded[(kind, name)] = table[name].load()
        return self._loaded[(kind, name)]


def _env_list(name: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, "").split(",") if x.strip()]


def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("llmcompare")
    pm.add_hookspecs(hookspecs)
    for blocked in _env_list("LLMCOMPARE_BLOCK_PLUGINS"):
        pm.set_blocked(blocked)
    return pm


def _version(text: str) -> tuple[int, int]:
    major, _, minor = str(text).strip().partition(".")
    return int(major), int(minor or 0)


def check_api(plugin: Any, name: str) -> None:
    """Refuse a plugin written for a plugin API this llmcompare does not provide (its module's
    ``LLMCOMPARE_API``): another major version, or a newer minor one."""
    wanted = getattr(plugin, "LLMCOMPARE_API", None)
    if wanted is None:
        return
    have = _version(hookspecs.API_VERSION)
    try:
        need = _version(wanted)
    except ValueError:
        raise RuntimeError(f"plugin {name} declares LLMCOMPARE_API = {wanted!r}, which is not MAJOR.MINOR") from None
    if need[0] != have[0] or need[1] > have[1]:
        raise RuntimeError(f"plugin {name} needs llmcompare plugin API {wanted}; this llmcompare provides"
                           f" {hookspecs.API_VERSION}: install a release of {name} built for API {have[0]}.x,"
                           f" or an llmcompare that provides API {wanted}")


def _class_capabilities(spec: BackendSpec, plugin: str) -> BackendSpec:
    """A spec without capabilities, from a plugin written against 0.1's first docs, which declared
    them on the backend class: read them from there, with a DeprecationWarning (until API 1.2)."""
    if getattr(spec, "_capabilities_declared", True):
        return spec
    module_name, _, attr = spec.target.partition(":")
    try:
        caps = getattr(getattr(importlib.import_module(module_name), attr), "capabilities", None)
    except Exception:
        caps = None
    if caps is None:
        return spec
    warnings.warn(f"plugin {plugin}: capabilities on the backend class ({spec.target}) are deprecated since"
                  " llmcompare 0.2 (plugin API 1.1); pass BackendSpec(capabilities=Capabilities(...))",
                  DeprecationWarning, stacklevel=2)
    return replace(spec, capabilities=caps)


def load_registry() -> Registry:
    """Load every plugin and collect what they register. Never raises for a broken plugin."""
    pm = make_plugin_manager()
    reg = Registry()
    sources: dict[str, str] = {}

    def add(name: str, source: str, loader: Callable[[], Any]) -> None:
        if pm.is_blocked(name) or pm.has_plugin(name):
            return
        try:
            plugin = loader()
            check_api(plugin, name)
            pm.register(plugin, name=name)
        except Exception as exc:  # a broken plugin must not take down the others
            reg.errors.append(PluginError(name, source, f"{type(exc).__name__}: {exc}"))
            return
        sources[name] = source

    for modname in DEFAULT_PLUGINS:
        add(modname, "built-in", lambda m=modname: importlib.import_module(m))
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        source = f"{dist.name}=={dist.version}" if dist is not None else "entry point"
        add(ep.name, source, ep.load)
    for modname in _env_list("LLMCOMPARE_PLUGINS"):
        add(modname, "LLMCOMPARE_PLUGINS", lambda m=modname: importlib.import_module(m))

    # A misspelt hook implementation (``register_backend``) is an error, not silence: the plugin is
    # reported as broken and left out, and the others still load.
    while True:
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or "unknown"
            reg.errors.append(PluginError(name, sources.pop(name, "unknown"), str(exc)))
            pm.unregister(exc.plugin)

    kinds: tuple[tuple[str, type, dict[str, Any]], ...] = (
        ("register_backends", BackendSpec, reg.backends),
        ("register_scenarios", ScenarioSpec, reg.scenarios),
        ("register_reports", ReportSpec, reg.reports),
        ("register_commands", CommandSpec, reg.commands),
    )
    for hook_name, spec_type, table in kinds:
        # Call each implementation on its own so a failing one is attributed and isolated.
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            source = sources.get(impl.plugin_name, "unknown")

            def register(spec: Any, _source=source, _plugin=impl.plugin_name, _type=spec_type, _table=table) -> None:
                if not isinstance(spec, _type):
                    raise TypeError(f"register() takes a {_type.__name__}, got {type(spec).__name__}")
                if spec.name in _table:
                    what = _type.__name__.removesuffix("Spec").lower()
                    reg.errors.append(PluginError(_plugin, _source, f"{what} {spec.name!r} is already registered"))
                    return
                if isinstance(spec, BackendSpec):
                    spec = _class_capabilities(spec, _plugin)
                _table[spec.name] = replace(spec, source=_source)

            try:
                impl.function(register=register)
            except Exception as exc:
                reg.errors.append(PluginError(impl.plugin_name, source, f"{type(exc).__name__}: {exc}"))
    reg.plugins = dict(sources)
    return reg


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = load_registry()
    return _REGISTRY
