"""Controls and call log shared by the fake ``sglang`` modules (not part of the real package)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Settings:
    tokens_per_chunk: int = 1
    """Output tokens per streamed dict (the scheduler can emit several between two wake-ups)."""
    abort_after: int | None = None
    """Finish the request with an ``abort`` finish reason after this many tokens."""
    delay_s: float = 0.0
    """Seconds awaited between streamed dicts (0 still yields to the event loop)."""


SETTINGS = Settings()
CALLS: list[tuple[str, dict[str, Any]]] = []


def reset() -> None:
    SETTINGS.__dict__.update(Settings().__dict__)
    CALLS.clear()


def record(name: str, **kwargs: Any) -> None:
    CALLS.append((name, kwargs))


def last(name: str) -> dict[str, Any]:
    for n, kw in reversed(CALLS):
        if n == name:
            return kw
    raise AssertionError(f"no {name!r} call recorded (calls: {[n for n, _ in CALLS]})")
