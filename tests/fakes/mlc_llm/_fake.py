"""Controls and call log shared by the fake ``mlc_llm`` modules (not part of the real package).

Tests set :data:`SETTINGS` fields, run the adapter, then read :data:`CALLS` to see exactly what the
adapter asked the engine for. :func:`reset` puts both back to their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Settings:
    tokens_per_chunk: int = 1
    """Tokens the engine delivers per stream callback (several tokens then share one chunk)."""
    silent_ids: frozenset[int] = frozenset()
    """Token ids whose text is empty (a partial UTF-8 sequence the text streamer holds back): a chunk
    made only of them is dropped by MLC's completion path, logprobs included."""
    fail_after: int | None = None
    """Raise inside the stream after this many tokens (an engine failure mid-request)."""
    delay_s: float = 0.0
    """Seconds between chunks (the async engine awaits, so concurrent requests interleave)."""


SETTINGS = Settings()
CALLS: list[tuple[str, dict[str, Any]]] = []


def reset() -> None:
    SETTINGS.__dict__.update(Settings().__dict__)
    CALLS.clear()


def token_text(token_id: int) -> str:
    return "" if token_id in SETTINGS.silent_ids else f"<{token_id}>"


def last(name: str) -> dict[str, Any]:
    for n, kw in reversed(CALLS):
        if n == name:
            return kw
    raise AssertionError(f"no {name!r} call recorded (calls: {[n for n, _ in CALLS]})")


def record(name: str, **kwargs: Any) -> None:
    CALLS.append((name, kwargs))
