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
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

from llmcompare.errors import ConfigError, OptionError, UserError
from llmcompare.plugins import Registry, get_registry
from llmcompare.redact import redact_mapping, redact_text, redact_url, secret_values


def is_secret_option(key: str, value: Any) -> bool:
    """Whether an option's value holds a credential (:mod:`llmcompare.redact`): a URL with userinfo
    or a secret-looking query parameter, a JSON object (``extra_body``) with a secret-looking key, or
    any value under a secret-looking key. Options named ``*_env`` hold the *name* of an environment
    variable (``api_key_env``), never its value: they are not secrets."""
    if not isinstance(key, str) or key.endswith("_env"):
        return False
    if secret_values({key: value}):
        return True
    return isinstance(value, str) and "://" in value and redact_url(value.strip()) != value.strip()


def public_option(key: str, value: Any) -> Any:
    """An option's value as it may be written or shown: a secret option redacted (``http://***@host/v1``)."""
    return redact_mapping({key: value})[key] if is_secret_option(key, value) else value


@dataclass(frozen=True)
class BackendRequest:
    """One backend of a run: its label, name, variant and options.

    Options holding credentials (:func:`is_secret_option`) are kept in memory only: :meth:`to_dict`
    writes their redacted form and lists their keys under ``withheld``, so ``run.json``, the run
    header in ``requests.jsonl``, ``jobs/*.json`` and ``results.json`` never hold a secret. A request
    read back from a run record has those keys in :attr:`withheld`, their values redacted, until
    :meth:`with_secrets` puts the real values back (the worker reads them from an environment
    variable its parent sets, ``--resume`` from the ``-o`` options given again)."""

    label: str
    name: str
    variant: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    withheld: tuple[str, ...] = ()
    """Options whose values were not written (they held credentials): ``options`` has their redacted form."""

    def secret_options(self) -> dict[str, Any]:
        """The options whose values hold credentials and are known here (never written)."""
        return {k: v for k, v in self.options.items() if k not in self.withheld and is_secret_option(k, v)}

    def public_options(self) -> dict[str, Any]:
        """The options as they may be written or shown: credentials redacted."""
        return {k: (v if k in self.withheld else public_option(k, v)) for k, v in self.options.items()}

    def with_secrets(self, secrets: Mapping[str, Any]) -> BackendRequest:
        """This request with the values of withheld options put back."""
        if not secrets:
            return self
        return BackendRequest(self.label, self.name, self.variant, {**self.options, **secrets},
                              tuple(k for k in self.withheld if k not in secrets))

    def to_dict(self) -> dict[str, Any]:
        out = {"label": self.label, "name": self.name, "variant": self.variant, "options": self.public_options()}
        withheld = sorted(set(self.withheld) | set(self.secret_options()))
        if withheld:
            out["withheld"] = withheld
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BackendRequest:
        return cls(d["label"], d["name"], d.get("variant"), dict(d.get("options") or {}),
                   tuple(str(k) for k in d.get("withheld") or ()))


def _fields(config: Any) -> tuple:
    return fields(config) if is_dataclass(config) and not isinstance(config, type) else ()


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

    def requests(self) -> list[BackendRequest]:
        """Every backend request of the run: its backends, then those its scenarios' configs hold
        (the fidelity reference), found by type, so no scenario is named here."""
        out = list(self.backends)
        for config in self.scenarios:
            out += [v for f in _fields(config) if isinstance(v := getattr(config, f.name), BackendRequest)]
        return out

    def with_secrets(self, secrets: Mapping[str, Mapping[str, Any]]) -> RunSpec:
        """The spec with the withheld options of each request put back, by label (``{label: {key: value}}``)."""
        def fill(r: BackendRequest) -> BackendRequest:
            return r.with_secrets(secrets.get(r.label) or {})

        configs = []
        for config in self.scenarios:
            changes = {f.name: fill(v) for f in _fields(config) if isinstance(v := getattr(config, f.name), BackendRequest)}
            configs.append(replace(config, **changes) if changes else config)
        return replace(self, backends=tuple(fill(b) for b in self.backends), scenarios=tuple(configs))

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
        if not sep or not key.strip():  # redacted: what was meant as a value may be a credential
            raise OptionError(f"--option {redact_text(pair)!r} must look like KEY=VALUE (or BACKEND.KEY=VALUE)")
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


def resume_secrets(registry: Registry, spec: RunSpec, options: Sequence[str], where: str) -> dict[str, dict[str, Any]]:
    """``--resume DIR -o ...``: the values of the options a run withheld (they held credentials), given
    again, by label. Every withheld option must be given, and only those (the others come from the run
    record); each value must be the one the run used, as far as its redacted form shows. Raises a
    one-line :class:`OptionError` naming the options, never their values."""
    requests = spec.requests()
    needed = {r.label: r for r in requests if r.withheld}
    parsed = parse_options(options)
    if parsed and not needed:
        raise OptionError(f"--resume {where} takes -o only to pass again the options that held credentials, and this"
                          " run has none: drop the -o options (the run's options come from its run.json)")
    out: dict[str, dict[str, Any]] = {}
    for scope, key, raw in parsed:
        mine = [r for r in needed.values() if scope in (None, r.name, r.label)]
        takers = [r for r in mine if key in r.withheld]
        if not takers:
            raise OptionError(f"--resume {where} takes -o only for the options that held credentials ({_withheld(needed)});"
                              f" {key} comes from the run's run.json: drop -o {(scope + '.') if scope else ''}{key}")
        for r in takers:
            value = registry.get(r.name).validate_options({key: raw})[key]
            if public_option(key, value) != r.options.get(key):
                raise OptionError(f"-o {key} is not the {key} this run used ({r.label}: {r.options.get(key)},"
                                  " credentials hidden); pass the same value again")
            out.setdefault(r.label, {})[key] = value
    missing = {label: [k for k in r.withheld if k not in out.get(label, {})] for label, r in needed.items()}
    missing = {label: keys for label, keys in missing.items() if keys}
    if missing:
        flags = " ".join(f"-o {label}.{k}=..." for label, keys in missing.items() for k in keys)
        raise OptionError(f"this run's options {_withheld(needed, missing)} held credentials, which are never written to"
                          f" {where}; pass them again: --resume {where} {flags}")
    return out


def _withheld(needed: Mapping[str, BackendRequest], only: Mapping[str, list[str]] | None = None) -> str:
    parts = [f"{', '.join(only[label] if only else r.withheld)} of {label}" for label, r in needed.items()
             if only is None or label in only]
    return "; ".join(parts)


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
