"""Report sections: a scenario's part of every report, rendered by every format.

A scenario's ``sections(config, result)`` returns a list of :class:`Section`; the console, Markdown and
HTML writers call each section's method for their format, and the CSV writer writes the tables a
section offers (``csv``). A plugin scenario that returns :class:`Table` and :class:`Lines` sections
appears in every format with no code of its own; a built-in one may override a format's rendering to
keep its richer layout (colours, plots, intervals).

Every string that reaches a format is made safe for it here or in the toolkit the writer uses
(``rich.markup.escape`` on the console, whose :class:`~llmcompare.report.console.SafeConsole` also
drops control characters; ``|`` escaped and line breaks flattened in Markdown cells, and the whole
Markdown document's control characters and ``<``/``>`` escaped by :mod:`llmcompare.report.markdown`;
:func:`html.escape` in HTML; control characters escaped in CSV). See :mod:`llmcompare.sanitize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape as html_escape
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from llmcompare.report.base import one_line
from llmcompare.report.html import Plot, table_html


def md_cell(text: Any) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened."""
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


class Section:
    """One part of the reports. Override the formats that need more than the defaults."""

    title = None  # a section may name itself

    def console(self, console: Console) -> None:
        for line in self.markdown():
            console.print(escape(line))

    def markdown(self) -> list[str]:
        return []

    def html(self) -> list[str]:
        lines = self.markdown()
        return [f"<p>{html_escape(x)}</p>" for x in lines if x.strip()]

    def plots(self) -> list[Plot]:
        """Figures for the HTML page (also written under ``plots/``). Raises ImportError without matplotlib."""
        return []

    def csv(self) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
        """Extra CSV files: ``{file name: (field names, rows)}``."""
        return {}


@dataclass(kw_only=True)
class Table(Section):
    """A table: one header per column, rows of cells already formatted as text."""

    title: str | None = None
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    numeric: Sequence[bool] = ()
    """Per column: right-aligned (a figure)."""
    bad: Sequence[Sequence[bool]] = ()
    """Per row and column: a cell shown as a problem."""
    note: str | None = None
    csv_name: str | None = None
    """Also write the table as this CSV file of the run directory (e.g. ``prefill.csv``)."""
    html_id: str = "table"

    def _num(self, i: int) -> bool:
        return bool(self.numeric[i]) if i < len(self.numeric) else False

    def _bad(self, r: int, c: int) -> bool:
        return bool(self.bad[r][c]) if r < len(self.bad) and c < len(self.bad[r]) else False

    def console(self, console: Console) -> None:
        t = RichTable(title=escape(self.title) if self.title else None)
        for i, h in enumerate(self.headers):
            t.add_column(escape(str(h)), justify="right" if self._num(i) else "left")
        for r, row in enumerate(self.rows):
            t.add_row(*[f"[red]{escape(str(x))}" if self._bad(r, c) else escape(str(x)) for c, x in enumerate(row)])
        console.print(t)
        if self.note:
            console.print(escape(self.note))

    def markdown(self) -> list[str]:
        out = [f"## {md_cell(self.title)}", ""] if self.title else []
        out += ["| " + " | ".join(md_cell(h) for h in self.headers) + " |", "|" + "---|" * len(self.headers)]
        out += ["| " + " | ".join(md_cell(x) for x in row) + " |" for row in self.rows]
        if self.note:
            out += ["", self.note]
        return out

    def html(self) -> list[str]:
        head = [(str(h), "num" if self._num(i) else "") for i, h in enumerate(self.headers)]
        rows = [[(str(x), " ".join(filter(None, ("num" if self._num(c) else "", "bad" if self._bad(r, c) else ""))))
                 for c, x in enumerate(row)] for r, row in enumerate(self.rows)]
        out = [f"<h2>{html_escape(self.title)}</h2>"] if self.title else []
        out.append(f'<div class="wide">{table_html(self.html_id, head, rows)}</div>')
        if self.note:
            out.append(f'<p class="note">{html_escape(self.note)}</p>')
        return out

    def csv(self) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
        if not self.csv_name:
            return {}
        fields = [str(h) for h in self.headers]
        return {self.csv_name: (fields, [dict(zip(fields, row)) for row in self.rows])}


@dataclass(kw_only=True)
class Lines(Section):
    """A titled list of sentences (findings, verdicts, recommendations)."""

    title: str | None = None
    lines: Sequence[str] = field(default_factory=list)
    note: str | None = None

    def console(self, console: Console) -> None:
        for line in self.lines:
            console.print(escape(f"  {line}"))
        if self.note:
            console.print(escape(self.note))

    def markdown(self) -> list[str]:
        out = [f"## {md_cell(self.title)}", ""] if self.title else []
        out += [f"- {one_line(str(line))}" for line in self.lines]
        if self.note:
            out += ["", self.note]
        return out

    def html(self) -> list[str]:
        out = [f"<h2>{html_escape(self.title)}</h2>"] if self.title else []
        out += ['<ul class="recs">'] + [f"<li>{html_escape(x)}</li>" for x in self.lines] + ["</ul>"]
        if self.note:
            out.append(f'<p class="note">{html_escape(self.note)}</p>')
        return out
