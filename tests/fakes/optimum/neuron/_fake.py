"""Controls and call log shared by the fake ``optimum.neuron`` modules (not part of the real package)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Settings:
    instance_type: str = "inf2"
    """What ``current_instance_type()`` answers on this (pretend) machine."""
    cores: int = 24
    """NeuronCores available (``get_available_cores()``)."""


SETTINGS = Settings()
CALLS: list[tuple[str, dict[str, Any]]] = []


def reset() -> None:
    SETTINGS.__dict__.update(Settings().__dict__)
    CALLS.clear()


def record(name: str, **kwargs: Any) -> None:
    CALLS.append((name, kwargs))


def names() -> list[str]:
    return [n for n, _ in CALLS]


def last(name: str) -> dict[str, Any]:
    for n, kw in reversed(CALLS):
        if n == name:
            return kw
    raise AssertionError(f"no {name!r} call recorded (calls: {names()})")
