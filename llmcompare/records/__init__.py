"""The durable truth of a run: ``requests.jsonl``, one JSON object per line, appended as work finishes.

These record types share the file:

* ``run``: written once by the parent with the spec, the model, the workload and the environment;
* ``request``: one generation. It has an id and a stage (the driver and its level, e.g. ``latency``,
  ``latency:in=256``, ``load:c=4``), the absolute times it was scheduled and actually sent (Unix
  seconds), the token ids and each token's arrival in seconds after the send, and the counts;
* ``stage``: one per finished load level (what was asked, what was achieved, its wall time);
* ``backend``: one per worker run of a backend (status, error, load time, memory, versions);
* ``fidelity``: the fidelity reference's judgement of one backend's natural-stop output for one
  prompt (agreeing prefix, the divergence's log-probabilities, teacher-forced likelihoods, texts);
* ``score``: a backend's own log-likelihood of the shipped reference text (its perplexity);
* ``metrics``: one sample of a server's Prometheus ``/metrics`` scraped during a load level, or a
  failed scrape (:mod:`llmcompare.telemetry.prometheus`); ``gpu``: one NVML reading of one GPU
  (:mod:`llmcompare.telemetry.nvml`); ``telemetry``: what a worker sampled beside a scenario (or why
  not). These three stay plain dicts (:attr:`RunRecords.metrics`, ``gpu``, ``telemetry``).

Every number in a report can be recomputed from this file. A run that was killed half-way leaves at
worst one truncated last line, which :func:`read_records` skips. :func:`read_records` returns one
:class:`RunRecords` container; a request recorded twice is reported there, never silently dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmcompare.errors import OutputError
from llmcompare.sanitize import SURROGATE_ESCAPE, clean


def _fields(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k in cls.__dataclass_fields__}


COUNT_EXACT = ("ids", "usage", "logprobs", "generated_tokens", "length")
"""``count_check`` keys that are exact counts by their source's own account: the token ids streamed,
``usage.completion_tokens``, one log-probability per token, TGI's ``details.generated_tokens``, and
``max_tokens`` itself where a ``length`` finish (without ids or usage) is the only count."""
COUNT_LOWER = ("events",)
"""``count_check`` keys that are lower bounds: text events without ids (each holds at least one token)."""


def count_check(**counts: int | None) -> dict[str, Any]:
    """A request's ``count_check``: the counts its sources gave (None: not given; ``retokenized``
    is kept for information, never judged) and a verdict, ``agree`` or ``disagree`` with ``why``.
    The sources disagree when two exact counts (:data:`COUNT_EXACT`) differ, or a lower bound
    (:data:`COUNT_LOWER`) exceeds an exact count."""
    seen = {k: int(v) for k, v in counts.items() if v is not None}
    exact = {k: seen[k] for k in COUNT_EXACT if k in seen}
    why = []
    if len(set(exact.values())) > 1:
        why.append(" != ".join(f"{k} {v}" for k, v in exact.items()))
    for k in COUNT_LOWER:
        if k in seen and exact and seen[k] > min(exact.values()):
            low = min(exact, key=exact.get)
            why.append(f"{seen[k]} {k} > {low} {exact[low]}")
    out: dict[str, Any] = dict(seen)
    out["verdict"] = "disagree" if why else "agree"
    if why:
        out["why"] = "; ".join(why)
    return out


@dataclass
class RequestRecord:
    backend: str
    prompt_id: str
    repeat: int
    warmup: bool
    input_tokens: int
    expected_output_tokens: int
    output_tokens: int
    ttft_s: float | None
    e2e_s: float | None
    token_times_s: list[float] = field(default_factory=list)
    """Seconds from the actual send to each token's arrival; tokens of one chunk share a value."""
    token_ids: list[int] = field(default_factory=list)
    engine_prompt_tokens: int | None = None
    engine_output_tokens: int | None = None
    count_source: str = "ids"
    finish_reason: str | None = None
    error: str | None = None
    error_kind: str | None = None
    """For a failed request: one of :attr:`llmcompare.errors.RequestFailed.KINDS`."""
    stage: str = "latency"
    request_id: str = ""
    scheduled_at: float | None = None
    """Unix time the request was due to be sent (open loop: from the arrival schedule)."""
    sent_at: float | None = None
    """Unix time it was actually handed to the backend. ``sent_at - scheduled_at`` is client queueing."""
    session: str | None = None
    """The worker run that produced it (a load level counts only its own session's requests)."""
    count_check: dict[str, Any] | None = None
    """Where the adapter cross-checks the output count (the HTTP clients): the count each source
    gave and a verdict, as :func:`count_check` makes it; None where nothing was cross-checked (and
    in records written before this field existed)."""
    type: str = "request"

    def __post_init__(self) -> None:
        if not self.request_id:
            self.request_id = f"{self.prompt_id}/r{self.repeat}" + ("/warmup" if self.warmup else "")

    @property
    def count_disputed(self) -> bool:
        """The sources of the output count disagree (``count_check["verdict"] == "disagree"``)."""
        return isinstance(self.count_check, dict) and self.count_check.get("verdict") == "disagree"

    @property
    def length_ok(self) -> bool:
        """Succeeded with exactly the forced number of tokens, by a count no source disputes."""
        return self.error is None and self.output_tokens == self.expected_output_tokens and not self.count_disputed

    @property
    def queue_s(self) -> float:
        """Client-side queueing: actual send minus scheduled send (0 when not scheduled)."""
        if self.scheduled_at is None or self.sent_at is None:
            return 0.0
        return max(0.0, self.sent_at - self.scheduled_at)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.backend, self.stage, self.request_id)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["length_ok"] = self.length_ok
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestRecord:
        return cls(**_fields(cls, d))


@dataclass
class StageRecord:
    """One finished load level: what was asked for and what the client achieved."""

    backend: str
    stage: str
    session: str
    started_at: float
    """Unix time of the first measured request's scheduled send."""
    wall_s: float
    """First measured scheduled send to the last measured token."""
    params: dict[str, Any] = field(default_factory=dict)
    """What was asked: ``concurrency`` or ``rate`` (req/s), ``arrivals``, ``duration_s``/``requests``."""
    achieved: dict[str, Any] = field(default_factory=dict)
    """What happened: ``rate`` (sends/s), ``max_in_flight``, ``mean_in_flight``, ``fell_behind``."""
    type: str = "stage"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageRecord:
        return cls(**_fields(cls, d))


@dataclass
class BackendRecord:
    backend: str
    name: str
    variant: str | None
    status: str  # "ok" | "failed"
    error: str | None = None
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)
    load_s: float | None = None
    measured_wall_s: float = 0.0
    """Wall time of this worker's measured (non-warm-up) requests, first hand-over to last token."""
    peak_rss_bytes: int | None = None
    gpu_peak_bytes: int | None = None
    """Peak bytes allocated through torch's CUDA allocator, where the engine uses it."""
    gpu_memory: dict[str, Any] = field(default_factory=dict)
    """Device memory facts where available: torch ``peak_allocated``/``peak_reserved``, NVML ``used``."""
    versions: dict[str, str] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    session: str | None = None
    python: str | None = None
    """The interpreter the worker ran under (a per-backend environment, or the main one)."""
    type: str = "backend"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackendRecord:
        return cls(**_fields(cls, d))


@dataclass
class FidelityRecord:
    """How the reference judged one backend's greedy, naturally stopped output for one prompt.

    Raw facts only; the verdict (near-tie or real divergence at a margin) is applied when reports are
    built, so the margin can be changed without running anything again. Sequences are compared with
    the end-of-sequence token appended where the output stopped at EOS, so stopping early or late
    is a divergence like any other token. Log-probabilities are the reference's, teacher-forced,
    natural log.
    """

    backend: str
    reference: str
    prompt_id: str
    tokens: int = 0
    """The backend's output length (EOS not counted)."""
    ref_tokens: int = 0
    eos: bool = False
    """The backend's output ended at EOS (not at the token cap)."""
    ref_eos: bool = False
    prefix: int = 0
    """Tokens the two sequences agree on from the start (EOS included)."""
    diverged: bool = False
    divergence_ref_logprob: float | None = None
    """At the first divergence: the reference's log-probability of its own token ..."""
    divergence_logprob: float | None = None
    """... and of the backend's token (None when the backend's output simply ended there)."""
    divergence_top2_gap: float | None = None
    """The reference's top-1 minus top-2 log-probability at the first divergence."""
    ll_sum: float | None = None
    """The reference's teacher-forced log-likelihood of the backend's sequence (EOS included)."""
    ll_tokens: int = 0
    ref_ll_sum: float | None = None
    """The same for the reference's own sequence."""
    ref_ll_tokens: int = 0
    text: str = ""
    ref_text: str = ""
    error: str | None = None
    """Why this output could not be judged (the backend's request failed, it gave no ids...)."""
    stage: str = "fidelity"
    type: str = "fidelity"

    @property
    def key(self) -> tuple[str, str]:
        return (self.backend, self.prompt_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FidelityRecord:
        return cls(**_fields(cls, d))


@dataclass
class ScoreRecord:
    """A backend's own teacher-forced log-likelihood of the shipped reference text."""

    backend: str
    text_id: str
    tokens: int = 0
    """Tokens scored (every token of the text after the first)."""
    nll_sum: float | None = None
    """Minus the sum of the log-probabilities (nats)."""
    error: str | None = None
    stage: str = "fidelity"
    type: str = "score"

    @property
    def perplexity(self) -> float | None:
        import math

        return math.exp(self.nll_sum / self.tokens) if self.nll_sum is not None and self.tokens else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreRecord:
        return cls(**_fields(cls, d))


Record = RequestRecord | StageRecord | BackendRecord | FidelityRecord | ScoreRecord


@dataclass
class RunRecords:
    """Everything in one ``requests.jsonl``, in file order, by type."""

    run: dict[str, Any] | None = None
    requests: list[RequestRecord] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    backends: list[BackendRecord] = field(default_factory=list)
    duplicates: list[RequestRecord] = field(default_factory=list)
    """Successful requests whose (backend, stage, id) had already succeeded earlier in the file: the
    sign of two writers on one run. Kept out of the statistics and reported."""
    fidelity: list[FidelityRecord] = field(default_factory=list)
    """One judgement per (backend, prompt): the last one written wins (a resumed judge)."""
    scores: list[ScoreRecord] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """Server metrics samples (``{"type": "metrics", ...}``), in file order."""
    gpu: list[dict[str, Any]] = field(default_factory=list)
    """GPU readings (``{"type": "gpu", ...}``), in file order."""
    telemetry: list[dict[str, Any]] = field(default_factory=list)
    """What each worker sampled, or why it could not (``{"type": "telemetry", ...}``)."""
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """Lines left out as unreadable: ``(line number, why)`` (not UTF-8, not JSON, not an object, not
    a valid record of its type; line -1 where the number is unknown). Reports say how many."""

    def skipped_summary(self) -> str | None:
        """One line on the lines left out, or None."""
        if not self.skipped:
            return None
        whys: dict[str, list[int]] = {}
        for number, why in self.skipped:
            whys.setdefault(why, []).append(number)
        parts = []
        for why, numbers in whys.items():
            shown = [str(n) for n in numbers if n > 0][:5]
            where = f" (line {', '.join(shown)}{', …' if len(numbers) > len(shown) and shown else ''})" if shown else ""
            parts.append(f"{len(numbers)} {why}{where}")
        return f"{len(self.skipped)} line(s) of requests.jsonl left out as unreadable: {'; '.join(parts)}"

    def for_backend(self, label: str, stage: str | None = None) -> list[RequestRecord]:
        return [r for r in self.requests if r.backend == label and (stage is None or r.stage == stage)]

    def stage_names(self, label: str) -> list[str]:
        """The stages ``label`` has records of, in the order they first appear."""
        seen: dict[str, None] = {}
        for r in self.requests:
            if r.backend == label:
                seen.setdefault(r.stage)
        for s in self.stages:
            if s.backend == label:
                seen.setdefault(s.stage)
        return list(seen)


class RecordWriter:
    """Appends records and flushes each one at once, so a crash loses nothing that finished.

    Every line is valid UTF-8 JSON: a lone surrogate a server sent becomes U+FFFD
    (:func:`llmcompare.sanitize.clean`). A write the system refuses (no space, read-only, no
    permission) is an :class:`~llmcompare.errors.OutputError` naming the file: one line for the
    user, and what was written before stays."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh = None
        with self._failures():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
            if self._ends_mid_line():
                self._fh.write("\n")  # a writer killed mid-line: start on a fresh line, lose nothing after
                self._fh.flush()

    @contextmanager
    def _failures(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            error = OutputError.from_os(exc, self.path, f"--resume {self.path.parent}")
            if error is None:
                raise
            raise error from None

    def _ends_mid_line(self) -> bool:
        if self.path.stat().st_size == 0:
            return False
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"

    def write(self, record: Record | dict[str, Any]) -> None:
        data = record if isinstance(record, dict) else record.to_dict()
        line = json.dumps(data, separators=(",", ":"))
        if SURROGATE_ESCAPE.search(line):  # only then can a lone surrogate be in it
            line = json.dumps(clean(data), separators=(",", ":"))
        with self._failures():
            self._fh.write(line + "\n")
            self._fh.flush()

    def write_line(self, line: str) -> None:
        """Append one record already serialised as a JSON line (records passed through from a client
        process); it must end with a newline."""
        if SURROGATE_ESCAPE.search(line):
            try:
                line = json.dumps(clean(json.loads(line)), separators=(",", ":"))
            except ValueError:
                pass
        with self._failures():
            self._fh.write(line if line.endswith("\n") else line + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            try:
                with self._failures():
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
            finally:
                try:
                    self._fh.close()
                except OSError:
                    pass

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_raw(path: str | os.PathLike, skipped: list[tuple[int, str]] | None = None) -> Iterator[dict[str, Any]]:
    """Each line of ``path`` that is a JSON object, its strings valid UTF-8 text. A line that is not
    (not UTF-8, not JSON: e.g. one cut short by a crash, JSON but not an object) is left out, and
    listed in ``skipped`` as ``(line number, why)`` when a list is given."""
    p = Path(path)
    if not p.exists():
        return
    with open(p, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                _skip(skipped, number, "not UTF-8")
                continue
            try:
                d = json.loads(line)
            except (ValueError, RecursionError):
                _skip(skipped, number, "not JSON")
                continue
            if not isinstance(d, dict):
                _skip(skipped, number, "JSON but not an object")
                continue
            yield clean(d) if SURROGATE_ESCAPE.search(line) else d


def _skip(skipped: list[tuple[int, str]] | None, number: int, why: str) -> None:
    if skipped is not None:
        skipped.append((number, why))


def parse(d: dict[str, Any]) -> Record | dict[str, Any] | None:
    """One raw line as its record type (the run header stays a dict; unknown types are None)."""
    kind = d.get("type")
    if kind == "request":
        return RequestRecord.from_dict(d)
    if kind == "stage":
        return StageRecord.from_dict(d)
    if kind == "backend":
        return BackendRecord.from_dict(d)
    if kind == "fidelity":
        return FidelityRecord.from_dict(d)
    if kind == "score":
        return ScoreRecord.from_dict(d)
    if kind == "run":
        return d
    return None


def read_records(path: str | os.PathLike) -> RunRecords:
    """All records in file order, in one container; duplicates reported, not dropped silently."""
    out = RunRecords()
    succeeded: set[tuple[str, str, str]] = set()
    latest: dict[tuple, FidelityRecord | ScoreRecord] = {}  # judgements and scores: the last written wins
    telemetry = {"metrics": out.metrics, "gpu": out.gpu, "telemetry": out.telemetry}
    for d in iter_raw(path, out.skipped):
        kept = telemetry.get(d.get("type"))  # type: ignore[arg-type]
        if kept is not None:
            kept.append(d)
            continue
        try:
            rec = parse(d)
        except (TypeError, ValueError, KeyError, AttributeError):  # a record whose fields are not its type's
            out.skipped.append((-1, f"not a valid {str(d.get('type'))[:40]} record"))
            continue
        if isinstance(rec, RequestRecord):
            if rec.error is None and rec.key in succeeded:
                out.duplicates.append(rec)
                continue
            if rec.error is None:
                succeeded.add(rec.key)
            out.requests.append(rec)
        elif isinstance(rec, StageRecord):
            out.stages.append(rec)
        elif isinstance(rec, BackendRecord):
            out.backends.append(rec)
        elif isinstance(rec, (FidelityRecord, ScoreRecord)):
            key = (rec.type, rec.backend, rec.prompt_id if isinstance(rec, FidelityRecord) else rec.text_id)
            latest.pop(key, None)  # in the order of their last writing
            latest[key] = rec
        elif isinstance(rec, dict) and out.run is None:
            out.run = rec
    out.fidelity = [r for r in latest.values() if isinstance(r, FidelityRecord)]
    out.scores = [r for r in latest.values() if isinstance(r, ScoreRecord)]
    return out
