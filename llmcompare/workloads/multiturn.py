"""Multi-turn replay: a conversation's user turns sent in order, each with its history.

**Rule**: turn *k*'s prompt is the conversation up to and including user turn *k* — turns 1..k-1 with
their *recorded* replies (the dataset's, not the model's), then turn *k* — and **turn k+1 is sent only
after turn k finished** (its last token arrived, or it failed). Several conversations run at once
(a closed-loop level's users, or open-loop conversation starts); the turns of one never overlap.

Recorded replies make every backend receive identical ids, turn after turn; the model's own answer
is generated (and timed) but never fed back. The output length of turn *k* is the recorded reply's
length (``len(tokenizer(reply, add_special_tokens=False))``), or ``output_len``.

A turn's ``cacheable_tokens`` is the length of the common prefix of its prompt with the previous
turn's prompt: what a prefix cache still holds from the turn before (the model's generated reply
differs from the recorded one, so it cannot hit). :func:`planned_hit_rate` turns those into the hit
rate a server with a prefix cache should report; :func:`replay` is the reference executor.

Message handling: a leading system message is kept (as ``system``); leading assistant messages are
dropped; consecutive messages of one role are joined with a blank line; a conversation with a role
outside user/assistant/system is skipped (counted). A turn whose reply is shorter than ``min_len``
tokens, or whose prompt plus output exceeds ``max_context``, ends the conversation before it;
conversations left with fewer than ``min_turns`` turns are dropped.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from llmcompare.errors import UserError
from llmcompare.workloads.conversations import ConversationText, Message, chat_ids, encode

SEND_RULE = ("turn k+1 is sent only after turn k finished; turn k's prompt holds turns 1..k-1 with their"
             " recorded replies")


@dataclass(frozen=True)
class Turn:
    index: int
    """1-based position in the conversation."""
    prompt_ids: tuple[int, ...]
    """The whole prompt of this turn: history (earlier turns and their recorded replies) + this user turn."""
    expected_output_tokens: int
    cacheable_tokens: int = 0
    """Leading ids shared with the previous turn's prompt (0 for turn 1)."""

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "prompt_ids": list(self.prompt_ids),
                "expected_output_tokens": self.expected_output_tokens, "cacheable_tokens": self.cacheable_tokens}


@dataclass(frozen=True)
class Conversation:
    """One conversation to replay, turn after turn (:data:`SEND_RULE`)."""

    id: str
    turns: tuple[Turn, ...]

    def request_id(self, turn: Turn) -> str:
        """``<conversation>/t<k>``: the request id of turn ``k``."""
        return f"{self.id}/t{turn.index}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "turns": [t.to_dict() for t in self.turns]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Conversation:
        return cls(d["id"], tuple(Turn(t["index"], tuple(t["prompt_ids"]), t["expected_output_tokens"],
                                       t.get("cacheable_tokens", 0)) for t in d["turns"]))


@dataclass
class MultiTurnPlan:
    conversations: list[Conversation]
    seed: int
    dropped: Counter = field(default_factory=Counter)
    """Conversations not used, by reason."""
    cut: int = 0
    """Conversations kept but ended early by a rule (reply too short, context exceeded, max_turns)."""
    rules: dict[str, Any] = field(default_factory=dict)

    @property
    def turns(self) -> int:
        return sum(len(c.turns) for c in self.conversations)

    def summary(self) -> str:
        text = f"{len(self.conversations):,} conversations, {self.turns:,} turns (seed {self.seed})"
        if self.cut:
            text += f"; {self.cut:,} ended early by a rule"
        if self.dropped:
            text += "; dropped: " + ", ".join(f"{n:,} {why}" for why, n in sorted(self.dropped.items()))
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "conversations": len(self.conversations), "turns": self.turns, "cut": self.cut,
                "dropped": dict(self.dropped), "rules": self.rules, "send_rule": SEND_RULE}


def _normalise(messages: tuple[Message, ...]) -> list[Message] | None:
    """System first (optional), then user/assistant alternating, starting with user; None when a
    role is unknown."""
    out: list[Message] = []
    for m in messages:
        if m.role not in ("user", "assistant", "system"):
            return None
        if m.role == "system":
            if out:  # a system message in the middle: keep it as user text would change the turn pairing
                return None
            out.append(m)
            continue
        if m.role == "assistant" and not any(x.role == "user" for x in out):
            continue  # leading replies with no question
        if out and out[-1].role == m.role:
            out[-1] = Message(m.role, out[-1].content + "\n\n" + m.content)
        else:
            out.append(m)
    return out


def build_conversations(conversations: list[ConversationText], tokenizer: Any, *, num_conversations: int | None = None,
                        seed: int = 0, shuffle: bool = True, max_turns: int | None = None, min_turns: int = 2,
                        max_context: int = 2048, min_len: int = 4, output_len: int | None = None,
                        chat_template: bool = True) -> MultiTurnPlan:
    """Turn conversations into replay plans (module docstring for the rules). ``chat_template``: each
    turn's prompt is the chat template over the history (as llmcompare tokenizes prompt sets); when the
    tokenizer has none, or ``False``, the raw texts are concatenated (ids of each message, the first
    with the tokenizer's special tokens), so each prompt extends the previous one exactly."""
    if min_turns < 1:
        raise UserError(f"min_turns must be at least 1, got {min_turns}")
    order = list(conversations)
    if shuffle:
        random.Random(seed).shuffle(order)
    plan = MultiTurnPlan([], seed, rules={"max_turns": max_turns, "min_turns": min_turns, "max_context": max_context,
                                          "min_len": min_len, "output_len": output_len, "chat_template": chat_template,
                                          "shuffle": shuffle})
    use_chat = chat_template and bool(getattr(tokenizer, "chat_template", None))
    for conv in order:
        if num_conversations is not None and len(plan.conversations) >= num_conversations:
            break
        msgs = _normalise(conv.messages)
        if msgs is None:
            plan.dropped["unknown role"] += 1
            continue
        turns, cut = _turns(msgs, tokenizer, use_chat, max_turns, max_context, min_len, output_len)
        if len(turns) < min_turns:
            plan.dropped[f"fewer than {min_turns} usable turns"] += 1
            continue
        plan.cut += cut
        plan.conversations.append(Conversation(conv.id, tuple(turns)))
    return plan


def _turns(msgs: list[Message], tokenizer: Any, use_chat: bool, max_turns: int | None, max_context: int, min_len: int,
           output_len: int | None) -> tuple[list[Turn], bool]:
    turns: list[Turn] = []
    history: list[dict[str, str]] = []
    raw: list[int] = []
    previous: tuple[int, ...] = ()
    i = 0
    while i < len(msgs):
        m = msgs[i]
        if m.role != "user":
            history.append({"role": m.role, "content": m.content})
            if not use_chat:
                raw += encode(tokenizer, m.content, add_special_tokens=not raw)
            i += 1
            continue
        if i + 1 >= len(msgs):
            return turns, False  # a last question with no recorded reply: nothing to size its output by
        reply = msgs[i + 1].content
        if max_turns is not None and len(turns) >= max_turns:
            return turns, True
        if use_chat:
            ids = chat_ids(tokenizer, [*history, {"role": "user", "content": m.content}]) or []
        else:
            ids = raw + encode(tokenizer, m.content, add_special_tokens=not raw)
        n_out = len(encode(tokenizer, reply, add_special_tokens=False)) if output_len is None else output_len
        if n_out < min_len or len(ids) + n_out > max_context:
            return turns, True
        turns.append(Turn(len(turns) + 1, tuple(ids), n_out, common_prefix(ids, previous)))
        previous = tuple(ids)
        history += [{"role": "user", "content": m.content}, {"role": "assistant", "content": reply}]
        if not use_chat:
            raw = ids + encode(tokenizer, reply, add_special_tokens=False)
        i += 2
    return turns, False


def common_prefix(a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def planned_hit_rate(conversations: list[Conversation], block_size: int = 1) -> float:
    """The prefix-cache hit rate (hit tokens / prompt tokens) a server should report for the whole
    replay, when its cache keeps every conversation's blocks: each turn can hit its
    ``cacheable_tokens`` rounded down to whole blocks (and never its last prompt token)."""
    hits = total = 0
    for conv in conversations:
        for t in conv.turns:
            total += len(t.prompt_ids)
            hits += (min(t.cacheable_tokens, len(t.prompt_ids) - 1) // block_size) * block_size
    return hits / total if total else 0.0


async def replay(conversation: Conversation, send: Callable[[Conversation, Turn], Awaitable[Any]]) -> list[Any]:
    """The reference executor of :data:`SEND_RULE`: ``await send(conversation, turn)`` for each
    turn in order, the next only after the previous returned; returns what each returned. A
    ``send`` that raises ends the conversation there (the exception propagates)."""
    results = []
    for turn in conversation.turns:
        results.append(await send(conversation, turn))
    return results
