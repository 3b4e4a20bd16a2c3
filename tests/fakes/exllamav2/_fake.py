"""Controls, call log and "model" shared by the fake ``exllamav2`` modules (not part of the real package).

The model is a seeded next-token table: greedy decoding continues token ``t`` with
``TABLE[t % len(TABLE)]``, so the output is deterministic and depends on the prompt's last token.
``TABLE[17]`` is the EOS id (2): a prompt ending in 17 makes EOS the first greedy token, and one
ending in 30 reaches EOS after three tokens. Any other
sampling setting draws from the job's own RNG (unseeded unless the job has a seed), so settings that
are not greedy show up as non-determinism, as they would on the real engine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

EOS = 2
_rng = random.Random(20260722)
TABLE = [_rng.randrange(3, 256) for _ in range(61)]
TABLE[17] = EOS  # a prompt ending in 17 makes EOS the first greedy token
TABLE[30], TABLE[23], TABLE[40] = 84, 101, 139  # after 30: 84, 101, 139, then EOS (139 % 61 == 17)
MiB = 1 << 20


def greedy_next(previous: int) -> int:
    return TABLE[previous % len(TABLE)]


@dataclass
class Settings:
    tokens_per_result: int = 1
    """Tokens held back and streamed in one result (the real generator holds text that ends inside a
    UTF-8 character, then emits the held tokens together)."""
    ballast_mb: int = 48
    """Host memory a loaded model holds (stands for its weights)."""
    fail_on_iterate: int | None = None
    """``iterate()`` raises on this call (1-based), as a CUDA error would."""
    step_s: float = 0.0
    """Seconds one ``iterate()`` takes (a real forward pass takes milliseconds: tests of batching set
    it, so that requests submitted together are in flight together on a loaded machine too)."""


SETTINGS = Settings()
CALLS: list[tuple[str, dict[str, Any]]] = []
STATE = {"live_bytes": 0, "iterations": 0, "max_active": 0}
"""``live_bytes``: ballast of models loaded and not unloaded (``ExLlamaV2.unload`` frees it);
``max_active``: the most jobs that ran in one ``iterate()`` (batched together)."""


def reset() -> None:
    SETTINGS.__dict__.update(Settings().__dict__)
    CALLS.clear()
    STATE.update(live_bytes=0, iterations=0, max_active=0)


def record(name: str, **kwargs: Any) -> None:
    CALLS.append((name, kwargs))


def last(name: str) -> dict[str, Any]:
    for n, kw in reversed(CALLS):
        if n == name:
            return kw
    raise AssertionError(f"no {name!r} call recorded (calls: {[n for n, _ in CALLS]})")


def names() -> list[str]:
    return [n for n, _ in CALLS]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
