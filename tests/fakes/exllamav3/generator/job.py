"""Fake of ``exllamav3/generator/job.py``: ``Job``.

Mirrored: the constructor's arguments and defaults (no sampler means ``DefaultSampler``, which
samples; ``max_new_tokens=None`` means "as many as the cache holds"), its input assertions,
``prepare_for_queue`` capping ``max_new_tokens`` at the room the cache has (``max_total_tokens −
prompt − 1 − max_draft_tokens``) and asserting that the pages fit, stop conditions (a stop token ends
the job and is not emitted), and an exact ``max_new_tokens`` stop.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from .. import _fake
from .pagetable import PAGE_SIZE
from .sampler.presets import DefaultSampler


class Job:

    def __init__(self, input_ids, max_new_tokens: int | None = None, min_new_tokens: int = 0,
                 max_skips: int | None = 4, sampler=None, seed: int = None, stop_conditions=None,
                 decode_special_tokens: bool = False, return_top_tokens: int = 0, return_logits: bool = False,
                 return_probs: bool = False, filters=None, token_healing: bool = False, identifier: object = None,
                 banned_strings: list[str] | None = None, embeddings=None, max_rq_tokens: int | None = None,
                 stop_on_loop: tuple[int, int] = None, rq_state: dict | None = None, **kwargs):
        assert all(ids.device.type == "cpu" for ids in (input_ids if isinstance(input_ids, list) else [input_ids])), \
            "input_ids must reside in system memory"
        if isinstance(input_ids, list):
            assert len(input_ids) == 1, "A job holds exactly one sequence (multi-sequence jobs are not supported)"
            input_ids = input_ids[0]
        assert input_ids.shape[-1] > 0, "Input IDs cannot be empty."
        assert input_ids.shape[0] == 1, "input_ids must be [1, seq_len] tensor or list of [1, seq_len] tensors"
        assert max_new_tokens is None or max_new_tokens >= 1, "max_new_tokens must be >= 1, or None for no limit"
        if sampler is None:
            sampler = DefaultSampler()
        _fake.record("Job", input_ids=input_ids.tolist()[0], max_new_tokens=max_new_tokens,
                     min_new_tokens=min_new_tokens, sampler=sampler, seed=seed, stop_conditions=stop_conditions,
                     filters=filters, token_healing=token_healing, banned_strings=banned_strings,
                     stop_on_loop=stop_on_loop)
        self.generator = None
        self.serial_number = None
        self.identifier = identifier
        self.input_ids = input_ids.tolist()[0]
        self.sequence = list(self.input_ids)
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.sampler = sampler
        self.rng = random.Random() if seed is None else random.Random(seed)
        if isinstance(stop_conditions, (str, int)):
            stop_conditions = [stop_conditions]
        self.stop_tokens = {t for t in stop_conditions or () if isinstance(t, int)}
        if any(not isinstance(t, (int, str)) for t in stop_conditions or ()):
            raise ValueError("Unsupported type in stop_conditions")
        self.new_tokens = 0
        self.held: list[int] = []
        self.cached_tokens = 0
        self.is_finished = False
        self.pages = 0

    def prepare_for_queue(self, generator, serial_number: int):
        self.serial_number = serial_number
        self.generator = generator
        room = generator.max_total_tokens - len(self.input_ids) - 1 - generator.max_draft_tokens
        if self.max_new_tokens is None:
            self.max_new_tokens = max(1, room)
        elif room >= 1:
            self.max_new_tokens = min(self.max_new_tokens, room)
        self.pages = -(-(len(self.input_ids) + self.max_new_tokens + 1) // PAGE_SIZE)
        max_pages = generator.pagetable.max_pages
        assert self.pages <= max_pages, \
            f"Job requires {self.pages} pages (only {max_pages} available) and cannot " + \
            f"be enqueued. Total cache allocated is {max_pages} * {PAGE_SIZE} = " + \
            f"{generator.max_total_tokens} tokens"

    def step(self, results: list) -> None:
        """One generation step of this job (the fake's whole forward pass and sampling)."""
        last = self.sequence[-1]
        token = _fake.greedy_next(last) if self.sampler.is_argmax() else self.rng.randrange(3, 256)
        self.sequence.append(token)
        self.new_tokens += 1
        self.held.append(token)
        if token in self.stop_tokens and self.new_tokens > self.min_new_tokens:
            self._emit(results, "stop_token", emit_held=False, stop_token=token)
        elif self.new_tokens >= self.max_new_tokens:
            self._emit(results, "max_new_tokens", emit_held=True)
        elif len(self.held) >= max(1, _fake.SETTINGS.tokens_per_result):
            self._emit(results, None, emit_held=True)

    def _emit(self, results: list, eos_reason: str | None, emit_held: bool, stop_token: int | None = None) -> None:
        r: dict[str, Any] = {"job": self, "stage": "streaming", "eos": eos_reason is not None,
                             "serial": self.serial_number}
        if emit_held and self.held:
            r["token_ids"] = torch.tensor([self.held], dtype=torch.long)
            self.held = []
        if eos_reason is not None:
            self.is_finished = True
            r.update({"eos_reason": eos_reason, "full_completion": "", "new_tokens": self.new_tokens,
                      "prompt_tokens": len(self.input_ids), "time_enqueued": 0.0, "time_prefill": 0.0,
                      "time_generate": 0.0, "cached_pages": self.cached_tokens // PAGE_SIZE,
                      "cached_tokens": self.cached_tokens})
            if stop_token is not None:
                r["eos_triggering_token_id"] = stop_token
            if self.held:
                r["held"] = {"token_ids": torch.tensor([self.held], dtype=torch.long)}
        if self.identifier is not None:
            r["identifier"] = self.identifier
        results.append(r)
