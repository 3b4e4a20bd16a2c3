"""A YAML file as plain Python values, with the line of every key and item.

``yaml.compose`` keeps each node's start mark; :func:`load` turns the node tree into dicts, lists and
scalars (constructed by PyYAML's safe constructor) and records ``path -> line`` for every node, where a
path is the tuple of keys and indices that leads to it. :class:`Located` carries both, so a validator
can say ``study.yaml:12: matrix.concurrency[1]: ...`` on one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmcompare.errors import UserError

Path_ = tuple  # a path into the document: keys (str) and indices (int)


class StudyFileError(UserError):
    """A problem in a study file: ``FILE:LINE: KEY: what is wrong`` on one line."""


def dotted(path: Path_) -> str:
    """``("matrix", "concurrency", 1)`` -> ``matrix.concurrency[1]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


@dataclass
class Located:
    """A loaded document: its data, the file it came from, and the line of each path."""

    data: Any
    source: str
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, path: Path_, problem: str) -> StudyFileError:
        line = self.line(path)
        where = f"{self.source}:{line}" if line is not None else self.source
        return StudyFileError(f"{where}: {dotted(tuple(path))}: {problem}")


def load(text: str, source: str) -> Located:
    """Parse ``text``; a YAML syntax error or a duplicate key is a one-line :class:`StudyFileError`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyFileError(f"{where}: not valid YAML: {problem}") from None
    doc = Located(None, source)
    if node is None:
        raise StudyFileError(f"{source}: the file is empty; a study needs at least name:, backend values under"
                             " matrix: and a scenario")
    constructor = yaml.SafeLoader("")
    doc.data = _convert(node, (), doc, constructor)
    return doc


def load_file(path: str | Path) -> Located:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyFileError(f"{path}: no such study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyFileError(f"{path}: cannot read the study file ({exc})") from None
    return load(text, str(path))


def _convert(node: yaml.Node, path: Path_, doc: Located, constructor: yaml.SafeLoader) -> Any:
    doc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise StudyFileError(f"{doc.source}:{key_node.start_mark.line + 1}: {dotted(path)}: YAML merge keys"
                                     " (<<) are not supported in study files; write the keys out")
            key = _convert(key_node, path + ("<key>",), doc, constructor)
            doc.lines.pop(path + ("<key>",), None)
            if isinstance(key, (list, dict)):
                raise StudyFileError(f"{doc.source}:{key_node.start_mark.line + 1}: {dotted(path)}: a key must be"
                                     " a plain value, not a list or mapping")
            if key in out:
                raise StudyFileError(f"{doc.source}:{key_node.start_mark.line + 1}: {dotted(path + (key,))}:"
                                     " this key is given twice")
            out[key] = _convert(value_node, path + (key,), doc, constructor)
            doc.lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), doc, constructor) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping)
