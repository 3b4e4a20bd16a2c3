"""Reports: for people (console table, Markdown) and for programs (JSON, CSV)."""

from llmcompare.report.files import write_all

__all__ = ["write_all"]
