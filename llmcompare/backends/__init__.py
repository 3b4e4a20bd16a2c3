"""Built-in backends. Each module is a plugin: one class and one ``register_backends`` hook.

They take the same road as a third-party plugin; the only difference is that
:data:`llmcompare.plugins.DEFAULT_PLUGINS` names them, so they load without an entry point.
"""
