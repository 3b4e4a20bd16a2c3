"""Reports: for people (console, Markdown, HTML) and for programs (JSON, CSV), one writer per format,
all fed the same result. :func:`llmcompare.report.base.write_all` writes them;
:func:`llmcompare.report.base.print_result` prints the console's."""
