"""Errors that reach the user.

Anything derived from :class:`UserError` is a problem with what the user asked for (a name, a path,
a file, an option). The CLI prints its message on one line and exits with status 2; no traceback
unless ``--debug``. Everything else is a bug or an engine failure and is reported as such.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class UserError(Exception):
    """Bad input: one line that says what is wrong and what to do."""

    exit_code = 2


class ConfigError(UserError):
    """A value out of range in a run's configuration. The message names fields as ``{field}``
    placeholders: the Python API shows field names (``max_new_tokens``), the CLI its flags
    (``--max-new-tokens``), so a spec never words its errors as one caller's flags. Other placeholders
    take the keyword values (``ConfigError("{repeats} must be at least 1, got {got}", got=0)``), so a
    value's own braces are never read as a placeholder."""

    def __init__(self, template: str, **values: object):
        self.template = template
        self.values = values
        super().__init__(self.render({}))

    def render(self, names: dict[str, str]) -> str:
        """The message with each ``{field}`` shown as ``names[field]`` (default: the field's name)."""

        class _Names(dict):
            def __missing__(self, key: str) -> str:
                return key

        return self.template.format_map(_Names({**{k: str(v) for k, v in self.values.items()}, **names}))


class UnknownBackend(UserError):
    pass


class BackendNotInstalled(UserError):
    """The one path for "the engine is not installed": names the backend and the pip command."""

    def __init__(self, backend: str, install: str, missing: str | None = None):
        self.backend = backend
        self.install = install
        self.missing = missing
        what = f" (cannot import {missing!r})" if missing else ""
        super().__init__(f"backend {backend!r} is not installed{what}; install it with: {install}")


class ModelNotFound(UserError):
    pass


class PromptFileError(UserError):
    def __init__(self, path: str, line: int | None, problem: str):
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}")


class OptionError(UserError):
    pass


class OutputError(UserError):
    """A file llmcompare writes could not be written: the disk is full, or the place is read-only or
    not ours. One line naming the file and what to do; exit status 1, since a run (or a report) had
    started, and everything written before stays (``--resume`` or ``llmcompare report`` go on)."""

    exit_code = 1

    SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
    ACCESS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})

    @classmethod
    def from_os(cls, exc: OSError, path: object, then: str = "") -> OutputError | None:
        """The user error for ``exc`` raised writing ``path`` (no space, read-only, no permission, a
        directory where a file goes...), or None for an OSError that carries no error number."""
        if exc.errno is None:
            return None
        why = exc.strerror or str(exc)
        if exc.errno in cls.SPACE:
            todo = "free some space"
        elif exc.errno in cls.ACCESS:
            todo = "make it writable or pass another --output"
        else:
            todo = "check that path"
        return cls(f"cannot write {path}: {why}; {todo}{', then ' + then if then else ''}")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM once a run directory holds a run record: ``run_dir`` is what ``--resume``
    continues. A plain :class:`KeyboardInterrupt` means nothing was written to resume."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        super().__init__(run_dir)


class RequestFailed(Exception):
    """One request failed in a way that is counted by kind (a row of the results, never a crash).

    Adapters raise it; drivers record ``kind`` and the message in the request's record and go on.
    """

    KINDS = (
        "connect",              # connection refused or reset before a response
        "timeout_connect",      # no connection within the connect timeout
        "timeout_first_token",  # connected, but no first token in time
        "timeout_total",        # the whole request took longer than allowed
        "overload",             # HTTP 429 or 503, or a "model overloaded" answer
        "server_error",         # another 5xx
        "client_error",         # a 4xx other than 429: the request itself was refused
        "stream_cut",           # the stream ended before its final event
        "malformed",            # an event that is not valid SSE/JSON of the expected schema, or a
                                # number that is not a count (llmcompare.limits.count_value)
        "overrun",              # more than the request can produce: tokens beyond the forced length
                                # and its slack, or bytes beyond the stream's budget (llmcompare.limits)
        "redirect",             # a 3xx answer that was not followed (its message names the target)
        "engine",               # an in-process engine raised
        "unsupported",          # the backend cannot do what was asked (e.g. stop at EOS)
    )

    def __init__(self, kind: str, message: str):
        if kind not in self.KINDS:
            raise ValueError(f"unknown request failure kind {kind!r}")
        self.kind = kind
        super().__init__(message)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""
