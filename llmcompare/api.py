"""The Python API: :func:`compare` runs a comparison and returns a :class:`RunResult`.

It does what the CLI does, minus argument parsing and printing::

    import llmcompare
    result = llmcompare.compare(["ctranslate2", "llamacpp"], max_new_tokens=64, repeats=3)
    for s in result.summaries:
        print(s.backend, s.status, s.tpot_ms["p50"])
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import environment, metrics
from .errors import UserError
from .isolation import run_isolated
from .models import resolve_model
from .plugins import get_registry
from .prompting import Prompt, exact_length, read_prompts, tokenize
from .records import REQUESTS_FILE, BackendRecord, RecordWriter, RequestRecord, read_records
from .runner import Job
from .spec import build_spec

RUN_FILE = "run.json"


@dataclass
class RunResult:
    run_dir: Path
    spec: dict[str, Any]
    environment: dict[str, Any]
    prompts: list[Prompt]
    summaries: list[metrics.Summary]
    comparisons: list[dict[str, Any]]
    requests: list[RequestRecord] = field(repr=False, default_factory=list)

    def summary(self, label: str) -> metrics.Summary:
        return next(s for s in self.summaries if s.backend == label)

    @property
    def failed(self) -> list[metrics.Summary]:
        return [s for s in self.summaries if s.status != "ok"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "llmcompare_version": self.environment.get("llmcompare"),
            "run_dir": str(self.run_dir),
            "spec": self.spec,
            "environment": self.environment,
            "prompts": [{"id": p.id, "category": p.category, "input_tokens": len(p.token_ids)} for p in self.prompts],
            "summaries": [s.to_dict() for s in self.summaries],
            "comparisons": self.comparisons,
        }


class Progress:
    """Callbacks the runner calls; the console report implements them with rich progress bars."""

    def backend_started(self, label: str, total: int) -> None: ...

    def request_done(self, label: str, record: RequestRecord) -> None: ...

    def backend_done(self, label: str, record: BackendRecord) -> None: ...


def compare(
    backends: Sequence[str],
    *,
    model: str | None = None,
    prompts: str | None = None,
    input_tokens: int | None = None,
    max_new_tokens: int = 64,
    repeats: int = 3,
    warmup: int = 1,
    options: Sequence[str] = (),
    device: str = "cpu",
    timeout_s: float = 3600.0,
    chat_template: bool = True,
    reference: str | None = None,
    trust_remote_code: bool = False,
    output: str | Path | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Run ``backends`` on one model and prompt set; return summaries and comparisons.

    Raises :class:`~llmcompare.UserError` for bad input before anything runs. A backend that fails
    at run time becomes a failed summary; the others still run. Results are written under ``output``
    (default ``llmcompare-results/<timestamp>``) as they happen.
    """
    registry = get_registry()
    spec = build_spec(
        registry, backends, options, model=model, prompts=prompts, input_tokens=input_tokens,
        max_new_tokens=max_new_tokens, repeats=repeats, warmup=warmup, device=device, timeout_s=timeout_s,
        chat_template=chat_template, reference=reference, trust_remote_code=trust_remote_code,
    )
    resolved = resolve_model(spec.model)
    for r in spec.backends:
        formats = registry.get(r.name).capabilities().model_formats
        if not set(formats) & set(resolved.formats):
            raise UserError(
                f"backend {r.label!r} loads {'/'.join(formats)} models, but {resolved.ref!r} is {resolved.kind!r};"
                f" pass a suitable --model (e.g. a .gguf file for llamacpp)"
            )
    texts = read_prompts(spec.prompts)
    tokenizer = resolved.tokenizer(trust_remote_code=spec.trust_remote_code)
    prompt_set = exact_length(texts, tokenizer, spec.input_tokens) if spec.input_tokens else tokenize(
        texts, tokenizer, chat=spec.chat_template
    )
    run_dir = Path(output) if output else Path("llmcompare-results") / time.strftime("%Y%m%d-%H%M%S")
    if (run_dir / REQUESTS_FILE).exists():
        raise UserError(f"{run_dir} already holds a run; pass another --output, or --resume {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    dists = sorted({d for r in spec.backends for d in registry.get(r.name).distributions})
    env = environment.capture(dists, model=resolved.identity())
    env["plugins"] = dict(registry.plugins)  # plugin -> "built-in" or "distribution==version"
    header = {"type": "run", "spec": spec.to_dict(), "model": resolved.to_dict(), "environment": env,
              "prompts": [p.to_dict() for p in prompt_set]}
    (run_dir / RUN_FILE).write_text(json.dumps(header, indent=2), encoding="utf-8")
    with RecordWriter(run_dir / REQUESTS_FILE) as w:
        w.write(header)
    return _execute(run_dir, header, progress)


def resume(run_dir: str | Path, progress: Progress | None = None) -> RunResult:
    """Continue an interrupted run: finished requests are kept, only the missing ones are run."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.exists():
        raise UserError(f"nothing to resume in {run_dir}: no {RUN_FILE} there (pass the directory of an earlier run)")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON; cannot resume this run") from None
    return _execute(run_dir, header, progress)


def _execute(run_dir: Path, header: dict[str, Any], progress: Progress | None) -> RunResult:
    spec_d = header["spec"]
    prompts = [Prompt.from_dict(p) for p in header["prompts"]]
    requests, backs, _ = read_records(run_dir / REQUESTS_FILE)
    for b in spec_d["backends"]:
        label = b["label"]
        finished = {(r.prompt_id, r.repeat) for r in requests if r.backend == label and not r.warmup and r.error is None}
        total = spec_d["repeats"] * len(prompts)
        if len(finished) >= total and any(x.backend == label and x.status == "ok" for x in backs):
            continue  # complete in an earlier run
        job = Job(
            run_dir=str(run_dir), label=label, name=b["name"], variant=b["variant"], options=dict(b["options"]),
            model=header["model"], prompts=header["prompts"], max_new_tokens=spec_d["max_new_tokens"],
            repeats=spec_d["repeats"], warmup=spec_d["warmup"], device=spec_d["device"],
            trust_remote_code=spec_d["trust_remote_code"], done=[list(k) for k in sorted(finished)],
        )
        if progress:
            progress.backend_started(label, total - len(finished))
        rec = run_isolated(job, spec_d["timeout_s"], on_request=(lambda r, l=label: progress.request_done(l, r))
                           if progress else None)
        if progress:
            progress.backend_done(label, rec)
    return load_result(run_dir, header)


def load_result(run_dir: str | Path, header: dict[str, Any] | None = None) -> RunResult:
    """Rebuild every summary and comparison from ``requests.jsonl`` (the durable truth)."""
    run_dir = Path(run_dir)
    requests, backs, runs = read_records(run_dir / REQUESTS_FILE)
    header = header or (runs[0] if runs else json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")))
    spec_d = header["spec"]
    labels = [b["label"] for b in spec_d["backends"]]
    summaries = [metrics.summarize(label, requests, backs) for label in labels]
    comparisons = compare_summaries(labels, requests, spec_d.get("reference"))
    by_label = {c["backend"]: c for c in comparisons}
    for s in summaries:
        if s.backend in by_label:
            s.agreement = by_label[s.backend].get("agreement")
    return RunResult(run_dir, spec_d, header["environment"], [Prompt.from_dict(p) for p in header["prompts"]],
                     summaries, comparisons, requests)


def compare_summaries(labels: list[str], requests: list[RequestRecord], reference: str | None) -> list[dict[str, Any]]:
    """Each backend against the reference (default: the first one): ratios with bootstrap CIs, agreement."""
    if len(labels) < 2:
        return []
    ref = reference or labels[0]
    by = {label: [r for r in requests if r.backend == label and not r.warmup and r.error is None] for label in labels}

    def series(label: str, key: str) -> list[float]:
        return [v for r in by[label] if (v := metrics.request_row(r)[key]) is not None]

    out = []
    for label in labels:
        if label == ref or not by[label] or not by[ref]:
            continue
        out.append({
            "backend": label,
            "reference": ref,
            "tpot_ratio": metrics.bootstrap_ratio(series(ref, "tpot_ms"), series(label, "tpot_ms")),
            "ttft_ratio": metrics.bootstrap_ratio(series(ref, "ttft_ms"), series(label, "ttft_ms")),
            "e2e_ratio": metrics.bootstrap_ratio(series(ref, "e2e_ms"), series(label, "e2e_ms")),
            "agreement": metrics.agreement(by[ref], by[label]),
        })
    return out
