"""What a scenario is: the questions it answers for itself, so that the orchestrator, the worker, the
result reader and the reports dispatch through it and never branch on a scenario's kind.

A run is **backends × scenarios**: its spec holds one config per scenario, the main one first (``run``
is latency then fidelity; ``load`` is load). For each scenario config the core asks its scenario:

* **configure**: ``add_arguments`` / ``config_from_args`` (its CLI flags, on its command or on the
  command it joins), ``config_from_dict`` / ``config_to_dict`` (``run.json``), ``prepare`` (checks that
  need the registry or the model, before anything runs);
* **plan** (parent): ``plan`` turns the prompt texts into the token ids, stages and workload facts every
  backend will be handed, written once into the run header;
* **run** (worker, per backend): ``run`` sends requests through the backend session and appends a record
  for each; ``progress`` says what a backend already finished (resume) and how many requests remain;
  ``finish`` (parent, after every backend) runs extra worker steps (the fidelity judge), through
  :class:`Runner`;
* **analyse**: ``analyse`` turns the records into the scenario's result: summaries for the common table
  and its own figures (:class:`Analysis`);
* **report**: ``headline`` (the one-line title, from the main scenario) and ``sections`` (format-neutral
  report sections, :mod:`llmcompare.report.sections`), which every report format renders.

A scenario's stages are named ``NAME`` or ``NAME:detail`` (``latency:in=256``, ``load:c=4``), so a record
is traced back to its scenario by its stage alone (:func:`scenario_of_stage`).

Register one with ``register(ScenarioSpec(name, "module:Class", command=...))`` from a
``register_scenarios`` hook (docs/plugins.md shows a whole scenario plugin).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llmcompare.errors import UserError
from llmcompare.models.prompting import Prompt, exact_length, tokenize
from llmcompare.records.header import StagePlan, scenario_of_stage  # noqa: F401  (part of this module's API)

if TYPE_CHECKING:
    from llmcompare.analysis.metrics import Summary
    from llmcompare.analysis.result import RunResult
    from llmcompare.config.spec import BackendRequest, RunSpec
    from llmcompare.models import ResolvedModel
    from llmcompare.plugins import Registry
    from llmcompare.records import RecordWriter, RequestRecord, RunRecords, StageRecord
    from llmcompare.records.header import Header
    from llmcompare.report.sections import Section
    from llmcompare.runner.job import Context, Job
    from llmcompare.runner.session import BackendSession


#: A prompt longer than this many characters per context token is refused before tokenizing it.
MAX_CHARS_PER_TOKEN = 64


@dataclass
class PlanContext:
    """What a scenario's ``plan`` gets: the run's spec, the model, its tokenizer and the prompt texts."""

    spec: RunSpec
    model: ResolvedModel
    tokenizer: Any
    texts: list[Prompt]
    """The prompt set's texts (no token ids yet)."""
    context_length: int | None
    source: str | None = None
    """Where the prompts came from (``--prompts``), for error messages."""

    def natural(self) -> list[Prompt]:
        """The prompts tokenized as they are (one chat turn unless ``--no-chat-template``)."""
        return tokenize(self.texts, self.tokenizer, chat=self.spec.chat_template)

    def exact(self, n: int) -> list[Prompt]:
        """Every prompt cut or repeated to exactly ``n`` tokens."""
        return exact_length(self.texts, self.tokenizer, n)

    def eos_ids(self) -> set[int]:
        """Every id that ends a sequence: the tokenizer's EOS and the model's generation config's."""
        ids = {int(self.tokenizer.eos_token_id)} if self.tokenizer.eos_token_id is not None else set()
        if self.model.kind != "synthetic":
            try:
                path = Path(self.model.tokenizer_dir()) / "generation_config.json"
                eos = json.loads(path.read_text()).get("eos_token_id") if path.exists() else None
                ids.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
            except (OSError, ValueError):
                pass
        return {int(i) for i in ids}

    def check_text_lengths(self) -> None:
        """Refuse a prompt text far beyond the context before tokenizing it (a huge file, a wrong path)."""
        if self.context_length is None:
            return
        for p in self.texts:
            if len(p.text) > self.context_length * MAX_CHARS_PER_TOKEN:
                raise UserError(
                    f"prompt {p.id!r} of {self.source or 'the prompt set'} is {len(p.text):,} characters, far beyond"
                    f" the model's context of {self.context_length:,} tokens; shorten it or pass --input-tokens N"
                )

    def check_fits(self, prompts: Sequence[Prompt], new_tokens: int, what: str = "prompt") -> None:
        """Refuse a prompt that cannot fit the model's context with ``new_tokens`` more, before anything runs."""
        if self.context_length is None:
            return
        for p in prompts:
            if len(p.token_ids) + new_tokens > self.context_length:
                raise UserError(
                    f"{what} {p.id!r} is {len(p.token_ids):,} tokens; with {new_tokens} new tokens that exceeds the"
                    f" model's context of {self.context_length:,} tokens; shorten it, lower --input-tokens or"
                    " --max-new-tokens"
                )


@dataclass
class Plan:
    """What a scenario planned: prompts to add to the header, its stages, and workload facts."""

    prompts: list[Prompt] = field(default_factory=list)
    stages: list[StagePlan] = field(default_factory=list)
    workload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Progress:
    """What one backend already finished of one scenario (``--resume``), and what is left."""

    done: set[tuple[str, str]] = field(default_factory=set)
    """``(stage, request_id)`` pairs the worker skips; a whole stage as ``(stage, "*")``."""
    remaining: int | None = 0
    """Requests left that the progress bar counts (None: unknown, e.g. a level measured by duration)."""
    complete: bool = False


@dataclass
class Analysis:
    """A scenario's result: its summaries (rows of the common per-backend table) and its own figures.

    Subclasses add fields; :meth:`to_dict` gives the keys this scenario adds to ``results.json``, and
    :class:`~llmcompare.analysis.result.RunResult` makes each field readable as an attribute of the
    result (``result.levels``)."""

    summaries: list[Summary] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "summaries"}


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Runner:
    """What ``finish`` may do in the parent: run one more worker step (e.g. the fidelity judge)."""

    def run_job(self, job: Job, request: BackendRequest, total: int | None = None) -> Any:
        """Run ``job`` in a worker that loads ``request``; returns its backend record."""
        raise NotImplementedError


class Scenario:
    """Base class of every scenario; override what applies (see the module docstring)."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = type(None)
    """A frozen dataclass of the scenario's settings, with a ``kind`` class variable equal to ``name``."""

    # ---- configure -----------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this scenario's flags to its command's parser (or to the command it joins)."""

    def config_from_args(self, args: argparse.Namespace) -> Any | None:
        """The config from parsed flags; None leaves the scenario out of this run (a joined pass turned off)."""
        return self.Config()

    def config_from_dict(self, d: dict[str, Any]) -> Any:
        if hasattr(self.Config, "from_dict"):
            return self.Config.from_dict(d)
        names = {f.name for f in fields(self.Config)}
        return self.Config(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})

    def config_to_dict(self, config: Any) -> dict[str, Any]:
        d = config.to_dict() if hasattr(config, "to_dict") else _plain(config)
        return {"kind": self.name, **{k: v for k, v in d.items() if k != "kind"}}

    def add_report_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags of ``llmcompare report`` that change this scenario's settings when the reports are rebuilt."""

    def report_overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        """The config fields those flags set (``load_result``'s ``overrides`` for this scenario)."""
        return {}

    def prepare(self, config: Any, spec: RunSpec, registry: Registry, model: ResolvedModel,
                options: Sequence[str] = ()) -> Any:
        """Checks that need the registry or the model, before anything runs; may fill in the config
        (the fidelity pass picks its reference here). Returns the config to run. Not called on resume."""
        return config

    def backends_to_install(self, config: Any) -> list[BackendRequest]:
        """Backends other than the run's that this scenario loads (checked to be installed up front)."""
        return []

    # ---- plan ----------------------------------------------------------------------------------
    def plan(self, config: Any, ctx: PlanContext) -> Plan:
        return Plan()

    # ---- run -----------------------------------------------------------------------------------
    def run(self, config: Any, session: BackendSession, ctx: Context, writer: RecordWriter) -> None:
        """Send this scenario's requests to one loaded backend, appending a record for each."""

    def steps(self) -> dict[str, Callable[[Any, BackendSession, Context, RecordWriter], None]]:
        """Worker steps other than :meth:`run`, by name, that :meth:`finish` can ask for."""
        return {}

    def progress(self, config: Any, header: Header, records: RunRecords, label: str) -> Progress:
        return Progress(complete=True)

    def finish(self, config: Any, header: Header, records_path: Any, runner: Runner) -> None:
        """After every backend ran (parent side): extra worker steps through ``runner``."""

    def describe(self, record: RequestRecord) -> tuple[int, str]:
        """For the progress bar: how far a finished request advances it, and a short status."""
        if record.warmup:
            return 0, f"warming up {record.stage}"
        return 1, record.stage if record.length_ok else (record.error or "length mismatch")

    def stage_line(self, record: StageRecord) -> str | None:
        """A line to print when a stage closes (load levels print theirs), or None."""
        return None

    # ---- analyse and report --------------------------------------------------------------------
    def analyse(self, config: Any, header: Header, records: RunRecords) -> Analysis:
        return Analysis()

    def headline(self, config: Any, result: RunResult) -> str:
        """One line that says what was run (used when this is the run's main scenario)."""
        model = result.environment.get("model", {}).get("name")
        return f"{model} · {self.name} · {result.spec.device}"

    def sections(self, config: Any, result: RunResult) -> list[Section]:
        """This scenario's parts of every report, in order."""
        return []
