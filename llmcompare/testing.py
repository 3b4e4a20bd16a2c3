"""The conformance kit: check that a backend keeps the protocol, before anyone trusts its numbers.

Use it in a plugin's own tests::

    from llmcompare.testing import assert_conforms

    def test_my_backend():
        assert_conforms("mybackend", model="path/to/model.gguf")

It runs the backend in-process, through the same :class:`~llmcompare.runner.session.BackendSession` the
drivers use, on two real prompts, and checks, each as a named check (a backend with both ``generate``
and ``astream`` is checked through both, and the two must agree):

* ``protocol``: the class has the protocol's methods and its spec declares :class:`~llmcompare.Capabilities`;
* ``engine_version``: a non-empty ``{name: version}`` mapping;
* ``forced_length``: exactly N token ids for N in two lengths, on two prompts;
* ``token_ids``: every id is an ``int`` inside the tokenizer's vocabulary;
* ``timestamps``: one per token, monotonic, between hand-over and return;
* ``greedy_deterministic``: the same prompt gives the same ids twice;
* ``count_tokens``: a positive int for a non-empty text;
* ``unload_frees_memory``: unloading gives back at least half of what loading and generating took,
  where the model lives: torch's CUDA allocator when the backend grew it, host RSS otherwise. It is
  measured on a second load, after a first load/generate/unload cycle has done the one-off work
  (conversions, caches, a CUDA context). Too little growth to measure passes, and says so.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from llmcompare.backend import Capabilities, clock
from llmcompare.config.spec import BackendRequest
from llmcompare.models import resolve_model
from llmcompare.models.prompting import read_prompts, tokenize
from llmcompare.plugins import get_registry
from llmcompare.runner.session import BackendSession, timestamp_problem

MEASURABLE_BYTES = 32 * 2**20


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class ConformanceReport:
    backend: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def add(self, name: str, passed: bool, detail: str = "") -> None:
        self.checks.append(Check(name, bool(passed), detail))

    def __str__(self) -> str:
        lines = [f"conformance of {self.backend!r}: {'PASS' if self.ok else 'FAIL'}"]
        lines += [f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)


def _rss() -> int:
    """Resident set after a collection and, on glibc, ``malloc_trim(0)``: what the backend freed, not
    what the allocator chose to keep for reuse."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return psutil.Process().memory_info().rss


def _cuda_allocated() -> int | None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        return int(torch.cuda.memory_allocated())
    return None


def _both_paths(session: BackendSession, feed, n: int) -> tuple[list, list[str]]:
    """Generate through ``generate`` and, where the backend also streams asynchronously, ``astream``:
    returns ``[(generation, t0, t1), ...]`` and problems found between the two paths."""
    out, problems = [], []
    t0 = clock()
    gen = session.generate(feed, n)
    out.append((gen, t0, clock()))
    backend = session.backend
    if hasattr(backend, "astream") and hasattr(backend, "generate"):
        t0 = clock()
        streamed = session.run(session._collect(feed, n))
        out.append((streamed, t0, clock()))
        if list(streamed.token_ids) != list(gen.token_ids):
            problems.append("astream and generate gave different ids for the same prompt")
    return out, problems


def check_backend(
    name: str,
    *,
    model: str | None = None,
    variant: str | None = None,
    options: Mapping[str, Any] | None = None,
    device: str = "cpu",
    max_new_tokens: int = 8,
) -> ConformanceReport:
    """Run every check on backend ``name`` and return the report (it never raises for a failed check;
    an exception from the engine itself propagates, with its traceback, for the plugin author)."""
    spec = get_registry().get(name)
    cls = spec.load_class()
    report = ConformanceReport(f"{name}:{variant}" if variant else name)
    missing = [m for m in ("load", "count_tokens", "engine_version", "unload") if not callable(getattr(cls, m, None))]
    if not (callable(getattr(cls, "generate", None)) or callable(getattr(cls, "astream", None))):
        missing.append("generate or astream")
    report.add("protocol", not missing and isinstance(spec.capabilities, Capabilities),
               f"missing methods: {missing}" if missing else "the protocol's methods; capabilities declared on the spec")
    if missing:
        return report
    resolved = resolve_model(model)
    tokenizer = resolved.tokenizer()
    prompts = tokenize(read_prompts("default")[:2], tokenizer)
    request = BackendRequest(report.backend, name, spec.resolve_variant(variant), spec.validate_options(dict(options or {})))

    def session() -> BackendSession:
        return BackendSession(request, resolved, device=device, raise_errors=True, spec=spec)

    # A first load/generate/unload cycle does one-off work (conversions, caches, CUDA context) so the
    # measured cycle below sees only the model's own memory. It also checks that a backend reloads.
    with session() as s:
        s.generate(s.feed(prompts[0]), 2)
    rss0, cuda0 = _rss(), _cuda_allocated()
    with session() as s:
        versions = s.backend.engine_version()
        report.add("engine_version", isinstance(versions, Mapping) and bool(versions)
                   and all(isinstance(k, str) and isinstance(v, str) for k, v in versions.items()), repr(versions))

        lengths_ok, ids_ok, times_ok, details = True, True, True, []
        vocab = len(tokenizer)
        first_ids: list[int] = []
        lengths = (max_new_tokens, max(1, max_new_tokens // 2 + 1))
        for n in lengths:
            for p in prompts:
                runs, problems = _both_paths(s, s.feed(p), n)
                details += problems
                lengths_ok = lengths_ok and not problems
                for gen, t0, t1 in runs:
                    first_ids = first_ids or list(gen.token_ids)
                    if len(gen.token_times) != n:
                        lengths_ok = False
                        details.append(f"{p.id}: asked {n}, got {len(gen.token_times)}")
                    if not all(isinstance(t, int) and 0 <= t < max(vocab, 1) for t in gen.token_ids):
                        ids_ok = False
                    if timestamp_problem(gen, t0, t1) is not None:
                        times_ok = False
        report.add("forced_length", lengths_ok, "; ".join(details) or f"exactly N tokens for N in {lengths}")
        report.add("token_ids", ids_ok, f"ints in [0, {vocab})")
        report.add("timestamps", times_ok, "one per token, monotonic, within the call")

        p = prompts[0]
        again = s.generate(s.feed(p), max_new_tokens)
        report.add("greedy_deterministic", list(again.token_ids) == first_ids, "same prompt, same ids")

        count = s.backend.count_tokens(p.text)
        ours = len(tokenizer(p.text, add_special_tokens=False)["input_ids"])
        report.add("count_tokens", isinstance(count, int) and count > 0,
                   f"engine counts {count}, the shared tokenizer {ours}")
        rss1, cuda1 = _rss(), _cuda_allocated()  # after generating: weights paged in, caches allocated
        del again
    rss2, cuda2 = _rss(), _cuda_allocated()
    grew = rss1 - rss0
    host_detail = f"host load+generate +{grew / 2**20:.0f} MiB, unload -{(rss1 - rss2) / 2**20:.0f} MiB"
    if cuda0 is not None and cuda1 is not None and cuda1 - cuda0 >= MEASURABLE_BYTES:
        # The model lives on the GPU: judge device memory. Host growth there is the CUDA runtime's
        # lazily loaded kernels and handles, which no unload can or should give back.
        freed = cuda1 - (cuda2 or 0)
        passed = cuda2 is not None and freed >= (cuda1 - cuda0) / 2
        detail = f"CUDA load+generate +{(cuda1 - cuda0) / 2**20:.0f} MiB, unload -{freed / 2**20:.0f} MiB; {host_detail}"
    elif grew < MEASURABLE_BYTES:
        passed, detail = True, f"load grew host RSS by {grew / 2**20:.0f} MiB only: too little to measure"
    else:
        passed, detail = (rss1 - rss2) >= grew / 2, host_detail
    report.add("unload_frees_memory", passed, detail)
    return report


def assert_conforms(name: str, **kwargs: Any) -> ConformanceReport:
    """:func:`check_backend`, raising ``AssertionError`` with the full report when a check fails."""
    report = check_backend(name, **kwargs)
    assert report.ok, str(report)
    return report
