"""The plugin manager: built-in backends, entry points and extra modules, loaded defensively.

Nothing here runs at import time. :func:`get_registry` loads plugins the first time something needs
them (the CLI, the API or a worker). A plugin that fails to import or to register is recorded in
``Registry.errors`` and the others still load.

Sources, in order:
1. built-in backends (``llmcompare.backends.*``), registered through the same hook as any plugin;
2. distributions that declare an entry point in the ``llmcompare`` group;
3. modules named in ``LLMCOMPARE_PLUGINS`` (comma separated), handy for local plugins and tests.

``LLMCOMPARE_BLOCK_PLUGINS`` (comma separated plugin names, e.g. ``llmcompare.backends.echo``) keeps
a plugin from loading.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass, field, replace

import pluggy

from llmcompare import hookspecs
from llmcompare.backend import BackendSpec
from llmcompare.errors import UnknownBackend, did_you_mean

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
)


@dataclass
class PluginError:
    plugin: str
    source: str
    error: str


@dataclass
class Registry:
    """Backends by name, with where each came from, and the plugins that failed."""

    backends: dict[str, BackendSpec] = field(default_factory=dict)
    errors: list[PluginError] = field(default_factory=list)
    plugins: dict[str, str] = field(default_factory=dict)
    """plugin name -> source (``built-in``, a distribution ``name==version``, or ``LLMCOMPARE_PLUGINS``)."""

    def get(self, name: str) -> BackendSpec:
        try:
            return self.backends[name]
        except KeyError:
            known = ", ".join(sorted(self.backends))
            raise UnknownBackend(
                f"unknown backend {name!r}{did_you_mean(name, self.backends)} (available: {known};"
                " run 'llmcompare backends' for the full list)"
            ) from None


def _env_list(name: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, "").split(",") if x.strip()]


def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("llmcompare")
    pm.add_hookspecs(hookspecs)
    for blocked in _env_list("LLMCOMPARE_BLOCK_PLUGINS"):
        pm.set_blocked(blocked)
    return pm


def load_registry() -> Registry:
    """Load every plugin and collect their backends. Never raises for a broken plugin."""
    pm = make_plugin_manager()
    reg = Registry()
    sources: dict[str, str] = {}

    def add(name: str, source: str, loader) -> None:
        if pm.is_blocked(name) or pm.has_plugin(name):
            return
        try:
            plugin = loader()
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

    # Call each implementation on its own so a failing one is attributed and isolated.
    for impl in pm.hook.register_backends.get_hookimpls():
        source = sources.get(impl.plugin_name, "unknown")

        def register(spec: BackendSpec, _source=source, _plugin=impl.plugin_name) -> None:
            if not isinstance(spec, BackendSpec):
                raise TypeError(f"register() takes a BackendSpec, got {type(spec).__name__}")
            if spec.name in reg.backends:
                reg.errors.append(
                    PluginError(_plugin, _source, f"backend {spec.name!r} is already registered")
                )
                return
            reg.backends[spec.name] = replace(spec, source=_source)

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
