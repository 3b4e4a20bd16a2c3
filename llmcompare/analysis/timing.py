"""One request's figures from its token arrival times (seconds after the send): TTFT, TPOT, ITL, e2e,
tok/s. docs/metrics.md gives every formula; :mod:`.metrics` aggregates them per backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmcompare.records import RequestRecord


def ttft(times: Sequence[float]) -> float | None:
    return times[0] if times else None


def e2e(times: Sequence[float]) -> float | None:
    return times[-1] if times else None


def tpot(times: Sequence[float]) -> float | None:
    """(e2e - TTFT) / (n_out - 1); None when fewer than two tokens."""
    if len(times) < 2:
        return None
    return (times[-1] - times[0]) / (len(times) - 1)


def itl(times: Sequence[float]) -> list[float]:
    """Gaps between consecutive chunk arrivals (tokens sharing a timestamp form one chunk)."""
    chunks: list[float] = []
    for t in times:
        if not chunks or t != chunks[-1]:
            chunks.append(t)
    return [b - a for a, b in zip(chunks, chunks[1:])]


def tokens_per_second(times: Sequence[float]) -> float | None:
    """n_out / e2e for one request."""
    if not times or times[-1] <= 0:
        return None
    return len(times) / times[-1]


def request_row(r: RequestRecord) -> dict[str, Any]:
    """The per-request metrics in milliseconds (and tok/s), for tables and CSV."""
    t = r.token_times_s
    ms = lambda x: None if x is None else x * 1000.0  # noqa: E731
    return {
        "ttft_ms": ms(ttft(t)),
        "tpot_ms": ms(tpot(t)),
        "e2e_ms": ms(e2e(t)),
        "tok_s": tokens_per_second(t),
    }


