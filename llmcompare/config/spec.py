"""The run specification: frozen, typed, validated without starting any engine, carried end to end.

``--backend transformers:bf16`` becomes a :class:`BackendRequest` (label ``transformers:bf16``, name
``transformers``, variant ``bf16``); ``transformers:fp16@static`` names that run ``static``, so one
variant can run twice with different options. ``--option KEY=VALUE`` applies to every backend in the
run; ``--option LABEL.KEY=VALUE`` (or ``NAME.KEY=VALUE``) to one of them only.

A :class:`RunSpec` holds one config per scenario of the run (each scenario's own frozen dataclass,
:mod:`llmcompare.scenarios`), the main one first. The same frozen objects travel to the worker as JSON
(``to_dict``/``from_dict``, each scenario converting its own config) and into the reports; nothing
copies their fields by hand. Errors name fields (:class:`~llmcompare.errors.ConfigError`), which the CLI
shows as its flags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmcompare.errors import ConfigError, OptionError, UserError
from llmcompare.plugins import Registry, get_registry


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


def scenario_config_to_dict(config: Any) -> dict[str, Any]:
    """A scenario config as JSON data, by its scenario (``{"kind": ..., ...}``)."""
    return get_registry().scenario(config.kind).config_to_dict(config)


def scenario_config_from_dict(d: Mapping[str, Any]) -> Any:
    kind = d.get("kind", "latency")
    registry = get_registry()
    if kind not in registry.scenarios:
        raise UserError(f"this run was made with a scenario {kind!r} that no installed plugin registers"
                        f" (scenarios: {', '.join(sorted(registry.scenarios))}); install the plugin that provides it")
    return registry.scenario(kind).config_from_dict(dict(d))


@dataclass(frozen=True)
class RunSpec:
    backends: tuple[BackendRequest, ...]
    scenarios: tuple[Any, ...] = ()
    """One config per scenario, the main one first (``llmcompare run``: latency, then fidelity unless
    ``--no-fidelity``; ``llmcompare load``: load). Each config's class has a ``kind`` naming its scenario."""
    model: str | None = None
    prompts: str | None = None
    device: str = "cpu"
    timeout_s: float = 3600.0
    chat_template: bool = True
    trust_remote_code: bool = False
    prices: Mapping[str, float] = field(default_factory=dict)
    """$/hour per backend label (``"*"`` for every backend), for cost per 1M output tokens."""
    python: Mapping[str, str] = field(default_factory=dict)
    """Backend name -> interpreter its worker runs under (``--python NAME=PATH``)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError("{timeout_s} must be a positive number of seconds, got {got}", got=self.timeout_s)

    @property
    def scenario(self) -> Any:
        """The main scenario's config."""
        return self.scenarios[0]

    def config(self, kind: str) -> Any | None:
        """The config of scenario ``kind`` in this run, or None."""
        return next((c for c in self.scenarios if c.kind == kind), None)

    def backend(self, label: str) -> BackendRequest:
        """The run's backend of that label."""
        for b in self.backends:
            if b.label == label:
                return b
        raise KeyError(label)

    def price(self, label: str) -> float | None:
        b = next((r for r in self.backends if r.label == label), None)
        for key in (label, b.name if b else None, "*"):
            if key in self.prices:
                return self.prices[key]
        return None

    @property
    def labels(self) -> list[str]:
        return [b.label for b in self.backends]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backends": [b.to_dict() for b in self.backends],
            "scenarios": [scenario_config_to_dict(c) for c in self.scenarios],
            "model": self.model, "prompts": self.prompts, "device": self.device, "timeout_s": self.timeout_s,
            "chat_template": self.chat_template, "trust_remote_code": self.trust_remote_code,
            "prices": dict(self.prices), "python": dict(self.python),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        return cls(
            backends=tuple(BackendRequest.from_dict(b) for b in d["backends"]),
            scenarios=tuple(scenario_config_from_dict(c) for c in _scenario_dicts(d)),
            model=d.get("model"), prompts=d.get("prompts"), device=d.get("device", "cpu"),
            timeout_s=d.get("timeout_s", 3600.0), chat_template=d.get("chat_template", True),
            trust_remote_code=d.get("trust_remote_code", False),
            prices=dict(d.get("prices") or {}), python=dict(d.get("python") or {}),
        )


def _scenario_dicts(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The scenario configs of a run record, whatever llmcompare version wrote it: 0.2's ``scenarios``
    list; 0.1's ``scenario`` (with ``baseline`` beside it) and ``fidelity``; 0.1's first runs, batch 1
    only, with the scenario's fields at the top."""
    if d.get("scenarios"):
        return [dict(c) for c in d["scenarios"]]
    scenario = d.get("scenario")
    if scenario is None:
        n = d.get("input_tokens")
        scenario = {"kind": "latency", "max_new_tokens": d.get("max_new_tokens", 64), "repeats": d.get("repeats", 3),
                    "warmup": d.get("warmup", 1), "input_tokens": [n] if n else []}
    out = [dict(scenario)]
    if out[0].get("kind", "latency") == "latency":
        # runs before the fidelity pass called the speed baseline "reference"
        out[0].setdefault("baseline", d["baseline"] if "baseline" in d else d.get("reference"))
    if d.get("fidelity"):
        out.append({"kind": "fidelity", **d["fidelity"]})
    return out


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
