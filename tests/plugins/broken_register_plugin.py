"""A plugin whose register hook raises."""

from llmcompare import hookimpl


@hookimpl
def register_backends(register):
    raise RuntimeError("this plugin is broken on purpose")
