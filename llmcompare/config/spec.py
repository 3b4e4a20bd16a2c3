"""The run specification: frozen, typed, validated without starting any engine, carried end to end.

``--backend transformers:bf16`` becomes a :class:`BackendRequest` (label ``transformers:bf16``, name
``transformers``, variant ``bf16``); ``transformers:fp16@static`` names that run ``static``, so one
variant can run twice with different options. ``--option KEY=VALUE`` applies to every backend in the
run; ``--option LABEL.KEY=VALUE`` (or ``NAME.KEY=VALUE``) to one of them only.

A :class:`RunSpec` holds one scenario: :class:`LatencyScenario` (batch 1, today's loop, one stage per
input length) or :class:`LoadScenario` (concurrency or arrival-rate levels). The same frozen objects
travel to the worker as JSON (``to_dict``/``from_dict``) and into the reports; nothing copies their
fields by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from llmcompare.errors import OptionError, UserError
from llmcompare.plugins import Registry


@dataclass(frozen=True)
class BackendRequest:
    label: str
    name: str
    variant: str | None
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "variant": self.variant, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BackendRequest:
        return cls(d["label"], d["name"], d.get("variant"), dict(d.get("options") or {}))


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise UserError(message)


@dataclass(frozen=True)
class LatencyScenario:
    """Batch 1: warm-up, then ``repeats`` passes over the prompts, one request at a time.

    With ``input_tokens`` every prompt is cut or repeated to each length in turn, and each length is a
    stage (``latency:in=256``), so prefill cost is compared as a curve.
    """

    kind: ClassVar[str] = "latency"
    max_new_tokens: int = 64
    repeats: int = 3
    warmup: int = 1
    input_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check(self.max_new_tokens >= 1, f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        _check(self.repeats >= 1, f"--repeats must be at least 1, got {self.repeats}")
        _check(self.warmup >= 0, f"--warmup must not be negative, got {self.warmup}")
        for n in self.input_tokens:
            _check(n >= 1, f"--input-tokens must be at least 1, got {n}")

    def stages(self) -> list[tuple[str, int | None]]:
        """``(stage name, input length or None)`` in run order."""
        if not self.input_tokens:
            return [("latency", None)]
        return [(f"latency:in={n}", n) for n in self.input_tokens]


@dataclass(frozen=True)
class LoadScenario:
    """Requests under load: closed-loop concurrency levels or open-loop arrival rates.

    Each level runs for ``duration_s`` seconds or ``requests`` requests after ``warmup_requests``
    warm-up requests (excluded). Open loop (``rates``) times every request from its *scheduled* send.
    """

    kind: ClassVar[str] = "load"
    concurrency: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    arrivals: str = "constant"
    seed: int = 0
    duration_s: float | None = None
    requests: int | None = None
    warmup_requests: int | None = None
    """Warm-up requests before each level, excluded; None: the level's concurrency (1 for rates)."""
    max_new_tokens: int = 64
    output_tokens_dist: str = "fixed"
    """``fixed``, or ``uniform:LO-HI`` for output lengths drawn per request (seeded)."""
    input_tokens: int | None = None
    """Synthetic prompts of exactly this many tokens; None: the prompt set, made distinct per request."""
    input_tokens_dist: str = "fixed"
    sweep: bool = False
    sweep_levels: int = 5
    slo: Mapping[str, float] = field(default_factory=dict)
    """Per-request limits, e.g. ``{"ttft_ms": 500, "tpot_ms": 100}``; goodput counts requests within all."""
    request_timeout_s: float | None = None
    clients: int = 1
    """Client processes that drive each level together (backends reached over HTTP only)."""

    SLO_KEYS: ClassVar[tuple[str, ...]] = ("ttft_ms", "tpot_ms", "e2e_ms", "itl_ms")
    ARRIVALS: ClassVar[tuple[str, ...]] = ("constant", "poisson")

    def __post_init__(self) -> None:
        _check(bool(self.concurrency) or bool(self.rates) or self.sweep,
               "load needs --concurrency LIST, --rate LIST or --sweep")
        _check(not (self.concurrency and self.rates), "give --concurrency or --rate, not both")
        for c in self.concurrency:
            _check(c >= 1, f"--concurrency levels must be at least 1, got {c}")
        for r in self.rates:
            _check(r > 0 and math.isfinite(r), f"--rate levels must be positive, got {r}")
        _check(self.arrivals in self.ARRIVALS, f"--arrivals must be one of {', '.join(self.ARRIVALS)}, got {self.arrivals!r}")
        _check((self.duration_s is None) != (self.requests is None),
               "give each level a length: --duration SECONDS or --requests N (one of the two)")
        if self.duration_s is not None:
            _check(self.duration_s > 0, f"--duration must be positive, got {self.duration_s}")
        if self.requests is not None:
            _check(self.requests >= 1, f"--requests must be at least 1, got {self.requests}")
        _check(self.warmup_requests is None or self.warmup_requests >= 0, "--warmup must not be negative")
        _check(self.max_new_tokens >= 1, f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        _check(self.input_tokens is None or self.input_tokens >= 1, "--input-tokens must be at least 1")
        _check(self.clients >= 1, "--clients must be at least 1")
        for k, v in self.slo.items():
            _check(k in self.SLO_KEYS, f"--slo key {k!r} is not one of {', '.join(self.SLO_KEYS)}")
            _check(v > 0, f"--slo {k} must be positive")
        parse_dist(self.output_tokens_dist, "--output-tokens-dist")
        parse_dist(self.input_tokens_dist, "--input-tokens-dist")


def parse_dist(text: str, flag: str) -> tuple[str, int, int]:
    """``fixed`` or ``uniform:LO-HI`` -> (kind, lo, hi)."""
    if text == "fixed":
        return ("fixed", 0, 0)
    kind, _, rng = text.partition(":")
    lo, _, hi = rng.partition("-")
    try:
        a, b = int(lo), int(hi)
    except ValueError:
        raise UserError(f"{flag} must be 'fixed' or 'uniform:LO-HI' (token counts), got {text!r}") from None
    _check(kind == "uniform" and 1 <= a <= b, f"{flag} must be 'fixed' or 'uniform:LO-HI' with 1 <= LO <= HI, got {text!r}")
    return (kind, a, b)


@dataclass(frozen=True)
class FidelitySpec:
    """The fidelity pass of a latency run (``llmcompare run``; ``--no-fidelity`` turns it off).

    Every backend that can stop at EOS decodes each prompt once more, greedily and with natural
    stopping, up to ``max_new_tokens``; then ``reference`` (by default transformers at the highest
    precision that fits) generates its own outputs and judges every backend's by teacher forcing.
    ``near_tie_margin`` (nats) splits first divergences into near-ties and real divergences when
    reports are built (docs/fidelity.md).
    """

    reference: BackendRequest | None = None
    """The judge; None when none can run here (``reference_note`` says why)."""
    reference_note: str = ""
    max_new_tokens: int = 128
    near_tie_margin: float = 0.5
    """Nats. exp(-0.5) ≈ 0.61: within it, the backend's token is at least 61% as likely as the reference's."""
    text_id: str = "reference-text-v1"
    """Which shipped text the perplexities are of (``prompts/reference_text.txt``)."""

    def __post_init__(self) -> None:
        _check(self.max_new_tokens >= 1, f"--fidelity-tokens must be at least 1, got {self.max_new_tokens}")
        _check(self.near_tie_margin >= 0 and math.isfinite(self.near_tie_margin),
               f"--near-tie-margin must be a non-negative number of nats, got {self.near_tie_margin}")

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference.to_dict() if self.reference else None,
                "reference_note": self.reference_note, "max_new_tokens": self.max_new_tokens,
                "near_tie_margin": self.near_tie_margin, "text_id": self.text_id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FidelitySpec:
        ref = d.get("reference")
        kwargs = {f.name: d[f.name] for f in fields(cls) if f.name != "reference" and f.name in d}
        return cls(BackendRequest.from_dict(ref) if ref else None, **kwargs)


Scenario = LatencyScenario | LoadScenario
SCENARIOS: dict[str, type] = {"latency": LatencyScenario, "load": LoadScenario}


def scenario_to_dict(s: Scenario) -> dict[str, Any]:
    d = asdict(s)
    d["slo"] = dict(d.get("slo") or {}) if "slo" in d else None
    if d["slo"] is None:
        del d["slo"]
    return {"kind": s.kind, **d}


def scenario_from_dict(d: Mapping[str, Any]) -> Scenario:
    cls = SCENARIOS[d.get("kind", "latency")]
    names = {f.name for f in fields(cls)}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    return cls(**kwargs)


@dataclass(frozen=True)
class RunSpec:
    backends: tuple[BackendRequest, ...]
    scenario: Scenario = field(default_factory=LatencyScenario)
    model: str | None = None
    prompts: str | None = None
    device: str = "cpu"
    timeout_s: float = 3600.0
    chat_template: bool = True
    baseline: str | None = None
    """The backend label the others' speed is compared with (default: the first)."""
    trust_remote_code: bool = False
    prices: Mapping[str, float] = field(default_factory=dict)
    """$/hour per backend label (``"*"`` for every backend), for cost per 1M output tokens."""
    python: Mapping[str, str] = field(default_factory=dict)
    """Backend name -> interpreter its worker runs under (``--python NAME=PATH``)."""
    fidelity: FidelitySpec | None = None
    """The fidelity pass (latency runs); None when it is off."""

    def backend(self, label: str) -> BackendRequest:
        """The run's backend of that label, or the fidelity reference."""
        for b in self.backends:
            if b.label == label:
                return b
        if self.fidelity is not None and self.fidelity.reference is not None and self.fidelity.reference.label == label:
            return self.fidelity.reference
        raise KeyError(label)

    def price(self, label: str) -> float | None:
        b = self.backend(label)
        for key in (label, b.name, "*"):
            if key in self.prices:
                return self.prices[key]
        return None

    @property
    def labels(self) -> list[str]:
        return [b.label for b in self.backends]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backends": [b.to_dict() for b in self.backends],
            "scenario": scenario_to_dict(self.scenario),
            "model": self.model, "prompts": self.prompts, "device": self.device, "timeout_s": self.timeout_s,
            "chat_template": self.chat_template, "baseline": self.baseline,
            "trust_remote_code": self.trust_remote_code, "prices": dict(self.prices), "python": dict(self.python),
            "fidelity": self.fidelity.to_dict() if self.fidelity else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        scenario = d.get("scenario")
        if scenario is None:  # a run written before scenarios existed (llmcompare 0.1, batch 1 only)
            n = d.get("input_tokens")
            scenario = {"kind": "latency", "max_new_tokens": d.get("max_new_tokens", 64), "repeats": d.get("repeats", 3),
                        "warmup": d.get("warmup", 1), "input_tokens": [n] if n else []}
        return cls(
            backends=tuple(BackendRequest.from_dict(b) for b in d["backends"]),
            scenario=scenario_from_dict(scenario),
            model=d.get("model"), prompts=d.get("prompts"), device=d.get("device", "cpu"),
            timeout_s=d.get("timeout_s", 3600.0), chat_template=d.get("chat_template", True),
            # runs before the fidelity pass called the speed baseline "reference"
            baseline=d["baseline"] if "baseline" in d else d.get("reference"),
            trust_remote_code=d.get("trust_remote_code", False),
            prices=dict(d.get("prices") or {}), python=dict(d.get("python") or {}),
            fidelity=FidelitySpec.from_dict(d["fidelity"]) if d.get("fidelity") else None,
        )


def parse_options(pairs: Sequence[str]) -> list[tuple[str | None, str, str]]:
    """``["k=v", "ctranslate2.k=v"]`` -> ``[(None, "k", "v"), ("ctranslate2", "k", "v")]``."""
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"--option {pair!r} must look like KEY=VALUE (or BACKEND.KEY=VALUE)")
        scope, dot, bare = key.strip().rpartition(".")
        out.append((scope if dot else None, bare, value))
    return out


def parse_backends(registry: Registry, backends: Sequence[str], options: Sequence[str] = (),
                   device: str = "cpu") -> tuple[BackendRequest, ...]:
    """Validate names, variants, options and devices; raise a :class:`UserError` for anything wrong."""
    if not backends:
        raise UserError("no backend given; pass --backend NAME (run 'llmcompare backends' to list them)")
    parsed_opts = parse_options(options)
    requests: list[BackendRequest] = []
    for raw in backends:
        base, _, alias = raw.partition("@")
        name, _, variant = base.partition(":")
        spec = registry.get(name)
        variant = spec.resolve_variant(variant or None)
        label = alias or (f"{name}:{variant}" if variant else name)
        if any(r.label == label for r in requests):
            raise UserError(f"backend {label!r} is listed twice")
        mine = {k: v for scope, k, v in parsed_opts if scope in (None, name, label, base, raw)}
        requests.append(BackendRequest(label, name, variant, spec.validate_options(mine)))
        if device not in spec.capabilities.devices:
            raise UserError(
                f"backend {label!r} does not run on device {device!r} (devices: {', '.join(spec.capabilities.devices)})"
            )
    scopes = {s for s, _, _ in parsed_opts if s is not None}
    known = {r.label for r in requests} | {r.name for r in requests} | {b.partition("@")[0] for b in backends}
    for s in sorted(scopes - known):
        raise OptionError(f"--option scope {s!r} names no backend in this run (backends: {', '.join(sorted(known))})")
    return tuple(requests)


def resolve_baseline(requests: Sequence[BackendRequest], baseline: str | None) -> str | None:
    if baseline is None:
        return None
    matches = [r.label for r in requests if r.label == baseline] or [r.label for r in requests if r.name == baseline]
    if len(matches) != 1:
        raise UserError(
            f"--baseline {baseline!r} must name exactly one of this run's backends ({', '.join(r.label for r in requests)})"
        )
    return matches[0]


def parse_prices(items: Sequence[str], labels: Sequence[str] = ()) -> dict[str, float]:
    """``["2.5"]`` -> ``{"*": 2.5}``; ``["vllm=4.1"]`` -> ``{"vllm": 4.1}``."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.rpartition("=")
        key = key if sep else "*"
        try:
            price = float(value)
        except ValueError:
            raise UserError(f"--price-per-hour {item!r} must be DOLLARS or BACKEND=DOLLARS, e.g. 1.52 or vllm=4.1") from None
        _check(price > 0 and math.isfinite(price), f"--price-per-hour must be positive, got {item!r}")
        out[key] = price
    return out


def parse_slo(text: str | None) -> dict[str, float]:
    """``"ttft_ms=500,tpot_ms=100"`` -> ``{"ttft_ms": 500.0, "tpot_ms": 100.0}``."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise UserError(f"--slo {part!r} must look like ttft_ms=500,tpot_ms=100") from None
        _check(bool(sep), f"--slo {part!r} must look like ttft_ms=500,tpot_ms=100")
    return out
