"""``summary.md``: the run in Markdown (the scenarios' sections, the machine, the backends)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llmcompare.report.base import backend_lines, machine_line, result_sections
from llmcompare.sanitize import REPLACE, escape_controls

if TYPE_CHECKING:
    from llmcompare.analysis.result import RunResult
    from llmcompare.report.base import Output
    from llmcompare.report.sections import Section


def markdown(result: RunResult, sections: list[Section] | None = None) -> str:
    sections = result_sections(result) if sections is None else sections
    lines = ["# llmcompare results", ""]
    for i, s in enumerate(sections):
        lines += s.markdown()
        if i == 0:  # the main scenario's opening says what was run; the machine goes right under it
            lines += [machine_line(result.environment), ""]
        else:
            lines.append("")
    lines += ["## Backends", ""] + [f"- {x}" for x in backend_lines(result)]
    return safe_markdown("\n".join(lines) + "\n")


def safe_markdown(doc: str) -> str:
    """The document with what a server or a file put in it made inert: control characters (terminal
    escapes included) shown as ``\\xNN``, ``<`` and ``>`` as entities (no section writes HTML into
    Markdown, so a ``<script>`` in a version or an error stays text); valid UTF-8."""
    return escape_controls(doc, keep_newlines=True).replace("<", "&lt;").replace(">", "&gt;")


class MarkdownReport:
    def write(self, result: RunResult, out: Output, sections: list[Section]) -> list[Path]:
        path = result.run_dir.markdown
        with open(path, "w", encoding="utf-8", errors=REPLACE) as fh:
            fh.write(markdown(result, sections))
        return [path]
