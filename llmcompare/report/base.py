"""What every report format shares: where it writes, the run's title and headline, the sections its
scenarios contribute, and the lines about the machine and the backends.

A format is a class registered through ``register_reports`` (:class:`~llmcompare.plugins.ReportSpec`)
with ``write(result, out) -> list[Path]``; :func:`write_all` runs every default one over the same
:class:`~llmcompare.analysis.result.RunResult`, so no format recomputes a figure or disagrees with another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcompare.errors import OutputError
from llmcompare.plugins import get_registry
from llmcompare.report.columns import PREFIX_CACHE, fmt, mib

if TYPE_CHECKING:
    from rich.console import Console

    from llmcompare.analysis.result import RunResult
    from llmcompare.report.sections import Section


@dataclass
class Output:
    """Where a report goes: the run directory (``result.run_dir``) and, for the console report, a console."""

    console: Console | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    """What the file reports wrote so far, by report name (the console report lists them)."""


def scenario_pairs(result: RunResult) -> list[tuple[Any, Any]]:
    """``(scenario, config)`` for each scenario of the run, main first."""
    registry = get_registry()
    return [(registry.scenario(c.kind), c) for c in result.spec.scenarios]


def result_sections(result: RunResult) -> list[Section]:
    """Every scenario's sections, in the run's scenario order."""
    return [s for scenario, config in scenario_pairs(result) for s in scenario.sections(config, result)]


def main_scenario(result: RunResult) -> tuple[Any, Any]:
    return scenario_pairs(result)[0]


def headline(result: RunResult) -> str:
    """One line that says what was run (the main scenario's)."""
    scenario, config = main_scenario(result)
    return scenario.headline(config, result)


def title(result: RunResult) -> str:
    scenario, _ = main_scenario(result)
    return getattr(scenario, "title", None) or f"llmcompare {scenario.name} report"


#: A 1-minute load average above this share of the run's CPUs is named under the machine line.
BUSY_LOAD_SHARE = 0.5


def machine_line(env: dict[str, Any]) -> str:
    return (f"Machine: {env.get('cpu')} ({env.get('cpu_count_logical')} logical CPUs), {mib(env.get('ram_bytes'))} RAM,"
            f" {env.get('os')}, Python {env.get('python')}, llmcompare {env.get('llmcompare')}."
            + "".join(f" GPU {g.get('index')}: {g.get('name')}, driver {g.get('driver')}." for g in env.get("gpus") or [])
            + busy_note(env))


def busy_note(env: dict[str, Any]) -> str:
    """A sentence when the host was busy as the run started (1-minute load average above
    :data:`BUSY_LOAD_SHARE` of the CPUs the run may use), else ''."""
    load = env.get("load_average")
    cpus = env.get("cpu_affinity") or env.get("cpu_count_logical")
    if not load or not cpus or load[0] <= BUSY_LOAD_SHARE * cpus:
        return ""
    return (f" The host was busy as the run started (load average {load[0]:.2f} over the last minute on {cpus} CPUs):"
            " CPU-bound timings may be slower than on a quiet machine.")


def backend_lines(result: RunResult) -> list[str]:
    """One sentence per backend: versions, device, where it runs, prefix cache, options, cold TTFT."""
    out, seen = [], set()
    run = (result.records.run if result.records else None) or {}
    needs_cache = bool((run.get("workload") or {}).get("prefix_cache"))  # a workload that shares prefixes on purpose
    for s in result.summaries:
        if s.backend in seen:
            continue
        seen.add(s.backend)
        info, caps = s.info, s.info.get("capabilities") or {}
        versions = ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items()) or "–"
        where = "in-process" if caps.get("in_process", True) else "over HTTP"
        cache = PREFIX_CACHE.get(caps.get("prefix_cache"), "unknown")
        if needs_cache and caps.get("prefix_cache_on_demand"):
            cache = "on for this workload, which shares prefixes on purpose"
        opts = ", ".join(f"{k}={v}" for k, v in (info.get("options") or {}).items()) or "defaults"
        out.append(one_line(f"**{s.backend}**: {versions}; device {info.get('device')}; {where}; prefix cache:"
                            f" {cache}; options: {opts}; cold request TTFT {fmt(s.cold_ttft_ms)} ms."))
    return out


def one_line(text: str) -> str:
    """``text`` with its line breaks flattened (data from a server must not start a line of its own)."""
    return text.replace("\r", " ").replace("\n", " ")


def write_all(result: RunResult, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Write every default file report (or those named) into the run directory; return the paths by
    name, ``requests`` (the run's own ``requests.jsonl``) included."""
    registry = get_registry()
    out = Output()
    wanted = [n for n, spec in registry.reports.items() if spec.default] if names is None else list(names)
    sections = result_sections(result)
    for name in wanted:
        report = registry.report(name)
        if getattr(report, "console_only", False):
            continue
        try:
            written = report.write(result, out, sections)
        except OSError as exc:  # disk full, read-only: one line; requests.jsonl and the files before stay
            error = OutputError.from_os(exc, exc.filename or result.run_dir.path,
                                        f"rebuild the reports with: llmcompare report {result.run_dir}")
            if error is None:
                raise
            raise error from None
        for i, path in enumerate(written):
            out.paths[name if i == 0 else path.stem] = path
    out.paths["requests"] = result.run_dir.requests
    return out.paths


def print_result(console: Console, result: RunResult, paths: dict[str, Path]) -> None:
    """The console report: each scenario's sections, then where the files are."""
    get_registry().report("console").write(result, Output(console=console, paths=dict(paths)), result_sections(result))
