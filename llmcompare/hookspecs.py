"""The hooks a llmcompare plugin can implement.

A plugin is a module (or any object) with functions decorated by :data:`llmcompare.hookimpl`.
Third-party plugins are found through the ``llmcompare`` entry-point group; the built-in backends
register through exactly the same hook. Every hook takes a ``register`` callback rather than
returning values, so a plugin can register any number of things and nothing heavy is imported.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("llmcompare")
hookimpl = pluggy.HookimplMarker("llmcompare")


@hookspec
def register_backends(register):
    """Register inference backends.

    :param register: call ``register(BackendSpec(...))`` once per backend. A spec is light: a name,
        a ``"module:Class"`` target, the pip extra or install command, the modules it needs, its
        variants and its declared options. The target is imported only when a run uses it.
    :returns: nothing.

    Added in 0.1.
    """
