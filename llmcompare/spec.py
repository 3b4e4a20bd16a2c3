"""The run specification: frozen, validated without starting any engine.

``--backend transformers:bf16`` becomes a :class:`BackendRequest` (label ``transformers:bf16``, name
``transformers``, variant ``bf16``); ``transformers:fp16@static`` names that run ``static``, so one
variant can run twice with different options. ``--option KEY=VALUE`` applies to every backend in the
run; ``--option LABEL.KEY=VALUE`` (or ``NAME.KEY=VALUE``) to one of them only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import OptionError, UserError
from .plugins import Registry


@dataclass(frozen=True)
class BackendRequest:
    label: str
    name: str
    variant: str | None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSpec:
    backends: tuple[BackendRequest, ...]
    model: str | None = None
    prompts: str | None = None
    input_tokens: int | None = None
    max_new_tokens: int = 64
    repeats: int = 3
    warmup: int = 1
    device: str = "cpu"
    timeout_s: float = 3600.0
    chat_template: bool = True
    reference: str | None = None
    trust_remote_code: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["backends"] = [asdict(b) | {"options": dict(b.options)} for b in self.backends]
        return d


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


def build_spec(
    registry: Registry,
    backends: Sequence[str],
    options: Sequence[str] = (),
    **kwargs: Any,
) -> RunSpec:
    """Validate names, variants, options and numbers; raise a :class:`UserError` for anything wrong."""
    if not backends:
        raise UserError("no backend given; pass --backend NAME (run 'llmcompare backends' to list them)")
    parsed_opts = parse_options(options)
    device = kwargs.get("device", "cpu")
    requests: list[BackendRequest] = []
    for raw in backends:
        base, _, alias = raw.partition("@")
        name, _, variant = base.partition(":")
        spec = registry.get(name)
        variant = spec.resolve_variant(variant or None)
        spec.ensure_installed()
        label = alias or (f"{name}:{variant}" if variant else name)
        if any(r.label == label for r in requests):
            raise UserError(f"backend {label!r} is listed twice")
        mine = {k: v for scope, k, v in parsed_opts if scope in (None, name, label, base, raw)}
        requests.append(BackendRequest(label, name, variant, spec.validate_options(mine)))
    scopes = {s for s, _, _ in parsed_opts if s is not None}
    known = {r.label for r in requests} | {r.name for r in requests} | {b.partition("@")[0] for b in backends}
    for s in sorted(scopes - known):
        raise OptionError(f"--option scope {s!r} names no backend in this run (backends: {', '.join(sorted(known))})")
    for r in requests:
        caps = registry.get(r.name).capabilities()
        if device not in caps.devices:
            raise UserError(f"backend {r.label!r} does not run on device {device!r} (devices: {', '.join(caps.devices)})")
    for key in ("max_new_tokens", "repeats"):
        if key in kwargs and int(kwargs[key]) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be at least 1, got {kwargs[key]}")
    if int(kwargs.get("warmup", 0)) < 0:
        raise UserError(f"--warmup must not be negative, got {kwargs['warmup']}")
    if kwargs.get("input_tokens") is not None and int(kwargs["input_tokens"]) < 1:
        raise UserError(f"--input-tokens must be at least 1, got {kwargs['input_tokens']}")
    if float(kwargs.get("timeout_s", 1)) <= 0:
        raise UserError("--timeout must be positive")
    ref = kwargs.get("reference")
    if ref is not None:
        matches = [r.label for r in requests if ref in (r.label, r.name)]
        if len(matches) != 1:
            raise UserError(
                f"--reference {ref!r} must name exactly one of this run's backends ({', '.join(r.label for r in requests)})"
            )
        kwargs["reference"] = matches[0]
    return RunSpec(backends=tuple(requests), **kwargs)

