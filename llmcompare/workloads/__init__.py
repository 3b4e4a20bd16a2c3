"""Workloads beyond prompt sets: ShareGPT requests sampled as ``vllm bench serve`` samples them,
local conversation files, multi-turn replay, and shared-prefix workloads with a planned prefix-cache
hit rate. Every workload here is data (token ids and output lengths); the load driver executes it.

=====================  =====================================  ===============
module                 what                                   prefix cache
=====================  =====================================  ===============
``conversations``      reading conversation files              –
``sharegpt``           ShareGPT V3 (offline), vLLM's rules     off
``multiturn``          turn-after-turn replay with history     **on**
``shared_prefix``      G prefixes of P tokens, planned rate    **on**
=====================  =====================================  ===============

The two workloads marked *on* exist to measure a prefix cache, so the server runs with its cache on
for them (and only for them); :data:`PREFIX_CACHE_NOTE` is the sentence the reports show beside
their figures, :func:`prefix_cache_note` the same with the planned and observed rates.
"""

from __future__ import annotations

from llmcompare.workloads.conversations import ConversationText, Message, ReadReport, read_conversations
from llmcompare.workloads.multiturn import SEND_RULE, Conversation, MultiTurnPlan, Turn, build_conversations, replay
from llmcompare.workloads.shared_prefix import (
    HitRateCheck,
    PrefixRequest,
    PrefixStream,
    SharedPrefixPlan,
    check_hit_rate,
    ordinary_ids,
    plan_shared_prefix,
    planned_hit_rate,
)
from llmcompare.workloads.sharegpt import SampledRequest, SampleResult, sample_requests, sample_sharegpt

PREFIX_CACHE_WORKLOADS = frozenset({"shared-prefix", "multi-turn"})
"""The workloads that run with the server's prefix cache on; every other one keeps it off."""

PREFIX_CACHE_NOTE = (
    "Prefix cache on: this workload reuses prompt prefixes on purpose (shared-prefix groups or multi-turn"
    " history), so its TTFT and throughput include prefix-cache hits and are not comparable with llmcompare's"
    " other workloads, which keep every prefix cache off. The planned hit rate is checked against the"
    " server's own counters where it exposes them."
)


def prefix_cache_note(planned: float | None = None, observed: float | None = None) -> str:
    """:data:`PREFIX_CACHE_NOTE`, with the planned and the server-reported hit rates when known."""
    figures = []
    if planned is not None:
        figures.append(f"planned hit rate {planned:.1%}")
    if observed is not None:
        figures.append(f"server-reported {observed:.1%}")
    elif planned is not None:
        figures.append("the server reported none")
    return PREFIX_CACHE_NOTE + (f" ({', '.join(figures)})" if figures else "")


def needs_prefix_cache(workload: str) -> bool:
    """Whether a workload kind (``sharegpt``, ``multi-turn``, ``shared-prefix`` ...) runs with the
    server's prefix cache on."""
    return workload in PREFIX_CACHE_WORKLOADS


__all__ = [
    "PREFIX_CACHE_NOTE", "PREFIX_CACHE_WORKLOADS", "SEND_RULE", "Conversation", "ConversationText", "HitRateCheck",
    "Message", "MultiTurnPlan", "PrefixRequest", "PrefixStream", "ReadReport", "SampleResult", "SampledRequest", "SharedPrefixPlan",
    "Turn", "build_conversations", "check_hit_rate", "needs_prefix_cache", "ordinary_ids", "plan_shared_prefix",
    "planned_hit_rate", "prefix_cache_note", "read_conversations", "replay", "sample_requests", "sample_sharegpt",
]
