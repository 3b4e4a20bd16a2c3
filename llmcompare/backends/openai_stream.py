"""The chunks of an OpenAI-compatible stream (``/completions`` and ``/chat/completions``), read as
evidence: every event is checked for shape, every number for type and range, and the counts the
stream gives are cross-checked before one of them becomes the request's count.

What an event may carry, and what is done with it (anything else of the wrong type is ``malformed``):

* ``[DONE]``: the end; anything after it is not read.
* ``{"error": ...}`` without choices: the failure it names (:func:`error_event_failure`).
* ``usage``: ``prompt_tokens`` and ``completion_tokens``, each an ``int`` in ``[0, MAX_COUNT]``
  (:func:`llmcompare.limits.count_value`); a ``completion_tokens`` beyond the request's token cap is
  ``overrun`` (the server says it produced more than it may).
* ``choices[0]``: ids in ``token_ids`` (vLLM) or ``tokens`` (llama.cpp), each a token id
  (:func:`llmcompare.limits.token_id`); else text (``text``, or ``delta.content`` in chat mode), a
  string; ``logprobs`` entries, counted where they are a list; ``finish_reason``, a string (kept to
  :data:`~llmcompare.limits.MAX_FINISH_REASON` characters).

Tokens read beyond :func:`~llmcompare.limits.token_cap` of the forced length cut the stream: the
request fails as ``overrun``. At the end the counts seen (ids, usage, log-probabilities, text events,
a ``length`` finish) go into the closing chunk's ``count_check`` (:func:`llmcompare.records.count_check`);
a disagreement keeps the request but marks it, and only verified tokens count toward throughput
(``docs/metrics.md``, "Verified tokens").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmcompare import limits
from llmcompare.backends.http_transport import CheckedChunk, error_event_failure
from llmcompare.errors import RequestFailed
from llmcompare.limits import count_value, safe_text, token_id
from llmcompare.records import count_check


class Tally:
    """What one streamed completion has said so far: ids seen, texts without ids, usage, finish."""

    __slots__ = ("cap", "chat", "counted", "done", "events", "finish", "logprob_tokens", "n_ids", "redact",
                 "saw_ids", "texts", "usage")

    def __init__(self, chat: bool, cap: int, redact: Callable[[str], str] | None = None):
        self.chat = chat
        self.cap = cap
        """The most tokens this request may read (:func:`llmcompare.limits.token_cap`)."""
        self.redact = redact
        self.counted = 0
        """Tokens given out so far (ids, text events, or the re-tokenized growth of the text)."""
        self.done = False
        self.finish: str | None = None
        self.saw_ids = False
        self.n_ids = 0
        self.events = 0
        """Text events without ids or log-probabilities: each holds at least one token."""
        self.logprob_tokens = 0
        """Tokens counted from the events' log-probabilities (one entry per token), where they came."""
        self.texts: list[str] = []
        self.usage: dict[str, int | None] | None = None

    def take(self, payloads: list[bytes]) -> tuple[list[int], int]:
        """Read one network read's events: the token ids they carried, and how many tokens came as
        text only (one per text event, or its log-probabilities' count)."""
        ids: list[int] = []
        n_text = 0
        for payload in payloads:
            if payload.strip() == b"[DONE]":
                self.done = True
                break
            obj = limits.parse_json(payload, "an event")
            if not isinstance(obj, dict):
                raise RequestFailed("malformed", f"an event that is not a JSON object: {_show(payload)}")
            choices = obj.get("choices")
            if "error" in obj and not choices:
                raise error_event_failure(obj, payload, self.redact)
            usage = obj.get("usage")
            if usage:
                if not isinstance(usage, dict):
                    raise RequestFailed("malformed", f"a usage that is not an object: {_show(payload)}")
                self.usage = {
                    "prompt_tokens": count_value(usage.get("prompt_tokens"), "usage.prompt_tokens"),
                    "completion_tokens": count_value(usage.get("completion_tokens"), "usage.completion_tokens",
                                                     self.cap),
                }
            if not choices:
                continue
            if not isinstance(choices, list) or not isinstance(choices[0], dict):
                raise RequestFailed("malformed", f"choices that are not a list of objects: {_show(payload)}")
            choice = choices[0]
            delta: Any = {}
            if self.chat:
                delta = choice.get("delta")
                if delta is None:
                    delta = {}
                elif not isinstance(delta, dict):
                    raise RequestFailed("malformed", f"a delta that is not an object: {_show(payload)}")
            got = choice.get("token_ids")
            if got is None:  # vLLM puts ids on the choice; llama.cpp's native answers call them tokens
                got = choice.get("tokens") or obj.get("tokens") or delta.get("token_ids")
            if got:
                if type(got) is not list:
                    raise RequestFailed("malformed", f"token ids that are not a list: {_show(payload)}")
                self._check_cap(len(ids) + n_text + len(got))
                ids.extend(token_id(t, "token ids with one") for t in got)
                self.saw_ids = True
            else:
                text = delta.get("content") if self.chat else choice.get("text")
                if text is not None and not isinstance(text, str):
                    raise RequestFailed("malformed", f"a text that is not a string: {_show(payload)}")
                held = _logprob_count(choice.get("logprobs"), self.chat)
                if held:  # the server's own tokens, one log-probability each: an exact count without ids
                    n_text += held
                    self.logprob_tokens += held
                    self.texts.append(safe_text(text or "", limits.MAX_EVENT_BYTES))
                elif text:
                    n_text += 1
                    self.events += 1
                    self.texts.append(safe_text(text, limits.MAX_EVENT_BYTES))
                self._check_cap(len(ids) + n_text)
            finish = choice.get("finish_reason")
            if finish is not None and not isinstance(finish, str):
                raise RequestFailed("malformed", f"a finish_reason that is not a string: {_show(payload)}")
            if finish:
                self.finish = safe_text(finish, limits.MAX_FINISH_REASON)
        self.n_ids += len(ids)
        return ids, n_text

    def _check_cap(self, pending: int) -> None:
        if self.counted + pending > self.cap:
            raise RequestFailed("overrun", f"the server sent more than {self.cap} tokens (the forced length and"
                                f" {limits.TOKEN_SLACK} of slack); the stream was cut")

    def add(self, count: int) -> None:
        """Count ``count`` more tokens given out; ``overrun`` past the cap."""
        self._check_cap(count)
        self.counted += count

    def closing(self, ids: list[int], arrived: float, n_tokens: int | None, asked: int, probe: bool,
                count_text: Callable[[str], int] | None) -> CheckedChunk:
        """The last chunk: the last read's tokens, the server's counts, where the count comes from,
        and the count cross-check.

        Without ids, the total is the server's ``usage.completion_tokens`` (else every text event's
        log-probabilities, a ``length`` finish, or the re-tokenized text); tokens it counts beyond
        those already given arrive with this chunk."""
        usage = self.usage or {}
        prompt_tokens = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        source = None
        retokenized = None
        if not self.saw_ids and self.texts:
            if completion is not None:
                source, total = "usage", completion
            elif self.logprob_tokens == self.counted and self.counted:
                source, total = "logprobs", self.counted  # every text event said how many tokens it held
            elif self.finish == "length" and not probe:
                # the server says it stopped because it reached max_tokens: exactly the tokens asked for
                source, total = "length", asked
            elif count_text is not None:
                source = "retokenized"
                total = retokenized = count_text("".join(self.texts))
                if total > self.cap:
                    raise RequestFailed("overrun", f"the text re-tokenizes to {total} tokens, more than the"
                                        f" {self.cap} this request may read")
            elif probe:  # load() decides what to do without a tokenizer
                total = self.counted
            else:
                raise RequestFailed("malformed", "the stream carried neither token ids nor usage, and no tokenizer"
                                                 " is loaded to count its text")
            if total > self.counted:
                n_tokens = (len(ids) if n_tokens is None else n_tokens) + total - self.counted
        without_ids = not self.saw_ids
        check = count_check(
            ids=self.n_ids if self.saw_ids else None,
            usage=completion,
            logprobs=self.logprob_tokens if without_ids and self.logprob_tokens and not self.events else None,
            length=asked if source == "length" else None,
            events=(self.events + self.logprob_tokens) if without_ids and self.events else None,
            retokenized=retokenized,
        )
        return CheckedChunk(ids, arrived, n_tokens=n_tokens, finish_reason=self.finish, prompt_tokens=prompt_tokens,
                            engine_output_tokens=completion, count_source=source, count_check=check)


def _logprob_count(logprobs: Any, chat: bool) -> int:
    """How many tokens an event's ``logprobs`` lists (completions: ``tokens``; chat: ``content``); 0
    for a shape this does not know (llmcompare does not ask for log-probabilities)."""
    if not isinstance(logprobs, dict):
        return 0
    entries = logprobs.get("content") if chat else logprobs.get("tokens")
    return len(entries) if isinstance(entries, list) else 0


def _show(payload: bytes) -> str:
    return safe_text(bytes(payload[:200]), 240)
