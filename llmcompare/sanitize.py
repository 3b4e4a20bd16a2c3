"""Text from outside made safe for where it goes: files, Markdown, CSV, the terminal.

Strings a server sent (versions, ``owned_by``, errors, texts), and strings read back from a run
directory someone else wrote, are *data*. They reach every report, so each destination gets them in
a form that cannot break it or be read as its markup:

* every file llmcompare writes is valid UTF-8: lone surrogates (valid JSON can carry ``"\\ud800"``)
  become U+FFFD, by :func:`clean` for JSON data and by the :data:`REPLACE` codec error handler for
  text files (``open(path, "w", encoding="utf-8", errors=REPLACE)``);
* Markdown and CSV: control characters, terminal escape bytes (``ESC``, ``CSI``) included, are shown
  escaped (``\\x1b``), never written raw (:func:`escape_controls`); Markdown also gets ``<`` and
  ``>`` as entities, so a ``<script>`` a server named itself with stays inert text (:func:`md_text`);
* the terminal: control characters removed (:func:`strip_controls`; rich markup is escaped by the
  console writers with ``rich.markup.escape``);
* HTML: :func:`html.escape`, in the HTML writers.

Nothing here raises on odd input: it runs on the way out of reports and error paths.
"""

from __future__ import annotations

import codecs
import re
from typing import Any

REPLACE = "llmcompare.replace"
"""A codec error handler: a character the codec cannot encode (a lone surrogate, for UTF-8) becomes
U+FFFD. Pass it as ``errors=`` when opening a text file for writing."""


def _replace(exc: UnicodeError) -> tuple[str | bytes, int]:
    if isinstance(exc, UnicodeEncodeError):
        # CPython's UTF-8 encoder takes a non-ASCII replacement only as bytes
        return ("\ufffd".encode(exc.encoding) if exc.encoding.replace("-", "").lower() == "utf8" else "?"), exc.end
    raise exc


codecs.register_error(REPLACE, _replace)

SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}|\\u[dD][c-fC-F][0-9a-fA-F]{2}")
"""A JSON escape of a surrogate code point (``\\ud800``): a line with none has no lone surrogate."""

_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 controls except tab and newline, DEL, and C1 controls (``\\x9b`` is a CSI on some terminals)."""
_CONTROLS_ALL = re.compile("[\x00-\x1f\x7f-\x9f]")


def utf8(text: str) -> str:
    """``text`` as valid UTF-8 text: each lone surrogate becomes U+FFFD (a split pair is joined)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean(value: Any, _depth: int = 0) -> Any:
    """A JSON-like value with every string (keys too) passed through :func:`utf8`."""
    if isinstance(value, str):
        return utf8(value)
    if _depth > 200:
        return value
    if isinstance(value, dict):
        return {(utf8(k) if isinstance(k, str) else k): clean(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, _depth + 1) for v in value]
    return value


def _escaped(match: re.Match) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: Any, keep_newlines: bool = True) -> str:
    """``text`` with control characters shown as ``\\xNN`` (tab and, with ``keep_newlines``, newline kept)."""
    text = utf8(text if isinstance(text, str) else str(text))
    return (_CONTROLS if keep_newlines else _CONTROLS_ALL).sub(_escaped, text)


def strip_controls(text: Any) -> str:
    """``text`` without control characters (tab and newline kept): for the terminal."""
    return _CONTROLS.sub("", utf8(text if isinstance(text, str) else str(text)))


def md_text(text: Any) -> str:
    """Data for a Markdown document: control characters escaped, ``<``/``>`` as entities, line breaks
    flattened (a server's text cannot start a heading, a table row or an HTML tag of its own)."""
    text = escape_controls(text, keep_newlines=True).replace("\r", " ").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")
