"""The built-in report formats, registered through the same hook as a plugin's."""

from __future__ import annotations

from llmcompare.hookspecs import hookimpl
from llmcompare.plugins.specs import ReportSpec


@hookimpl
def register_reports(register):
    register(ReportSpec("json", "llmcompare.report.json_report:JsonReport", "results.json: everything, for programs"))
    register(ReportSpec("csv", "llmcompare.report.csv_report:CsvReport",
                        "requests.csv (one row per request) and each scenario's tables (levels.csv)"))
    register(ReportSpec("markdown", "llmcompare.report.markdown:MarkdownReport", "summary.md"))
    register(ReportSpec("html", "llmcompare.report.html:HtmlReport", "report.html, self-contained, with plots"))
    register(ReportSpec("console", "llmcompare.report.console:ConsoleReport", "the tables on the terminal"))
