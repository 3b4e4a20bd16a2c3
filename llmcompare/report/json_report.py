"""``results.json``: everything, for programs (the spec, the environment, every summary and each
scenario's figures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from llmcompare.sanitize import REPLACE, clean

if TYPE_CHECKING:
    from llmcompare.analysis.result import RunResult
    from llmcompare.report.base import Output
    from llmcompare.report.sections import Section


class JsonReport:
    def write(self, result: RunResult, out: Output, sections: list[Section]) -> list[Path]:
        path = result.run_dir.results_json
        text = json.dumps(clean(result.to_dict()), indent=2, default=str)  # lone surrogates: U+FFFD
        path.write_text(text, encoding="utf-8", errors=REPLACE)
        return [path]
