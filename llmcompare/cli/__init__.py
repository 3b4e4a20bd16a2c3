"""The command line: :mod:`.main` parses and dispatches; every command is one module of this package
(:mod:`.builtin` registers them like a plugin's), and the commands that run backends come from the
scenarios (:mod:`.scenario`). Nothing here is imported until a command needs it."""
