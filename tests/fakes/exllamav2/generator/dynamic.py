"""Fake of ``exllamav2/generator/dynamic.py``: ``ExLlamaV2DynamicGenerator`` and ``ExLlamaV2DynamicJob``.

What is mirrored, as a caller observes it:

* the constructor's arguments and assertions: paged mode needs flash-attn ≥ 2.5.7
  (``attn.assert_paged_attn``); the cache must have batch size 1 and a multiple of 256 tokens; pages
  are 256 tokens when paged, else one page of the whole cache (one job at a time);
* ``enqueue`` asserts that the job's pages fit the cache; jobs start when pages and batch slots are
  free, in order; ``cancel``, ``clear_queue``, ``num_remaining_jobs``, ``reset_page_table``;
* ``iterate()`` returns result dicts: ``started``, ``prefill``, then ``streaming`` with ``token_ids``
  (a (1, n) tensor of the tokens released at this step) and, on the last, ``eos``, ``eos_reason``
  (``max_new_tokens`` or ``stop_token``: a stop token is not emitted, it goes to ``held``),
  ``new_tokens``, ``prompt_tokens``, ``cached_pages`` and ``cached_tokens``. A job ends after
  ``max_new_tokens - num_draft_tokens`` tokens; stop tokens are only those in ``stop_conditions``;
* the prefix cache: a starting job reuses what it shares with any sequence the cache still holds
  since the last ``reset_page_table()`` (the real generator matches whole 256-token pages by hash,
  and a partial first page of at least 2 tokens; the fake counts shared leading tokens, at least 2),
  reported as ``cached_tokens``.

Not mirrored: text (results carry no ``text``), filters, banned strings, token healing, CFG pairs,
draft models, LoRAs, embeddings, timings (``time_*`` are 0).
"""

from __future__ import annotations

import random
import time
from typing import Any

import torch

from .. import _fake, attn
from ..attn import assert_paged_attn
from .sampler import ExLlamaV2Sampler

PAGED_PAGE_SIZE = 256


class ExLlamaV2DynamicGenerator:

    def __init__(self, model, cache, tokenizer, max_batch_size: int = None, max_seq_len: int | None = None,
                 max_chunk_size: int | None = None, max_q_size: int = 8, draft_model=None, draft_cache=None,
                 num_draft_tokens: int = 4, use_ngram_draft: bool = False, max_ngram: int = 4,
                 max_sampling_threads: int = 16, min_sampling_threads: int = 3, paged: bool = True,
                 filter_background_eval: bool = True, **kwargs):
        _fake.record("ExLlamaV2DynamicGenerator.__init__", paged=paged, max_batch_size=max_batch_size,
                     max_chunk_size=max_chunk_size, draft_model=draft_model, use_ngram_draft=use_ngram_draft,
                     cache_tokens=cache.max_seq_len, **kwargs)
        self.model = model
        self.cache = cache
        self.tokenizer = tokenizer
        cfg = model.config
        self.num_draft_tokens = num_draft_tokens if (draft_model or use_ngram_draft) else 0
        if paged:
            assert_paged_attn()
            assert not cfg.no_flash_attn, "Paged mode requires flash-attn, but flash-attn is disabled in model config."
        self.max_batch_size = max_batch_size or cfg.max_input_len // max_q_size
        self.max_seq_len = max_seq_len if max_seq_len is not None else cfg.max_seq_len
        self.paged = paged
        self.page_size = PAGED_PAGE_SIZE if paged else cache.max_seq_len
        assert cache.batch_size == 1, "DynamicGenerator requires cache to have batch_size = 1"
        assert cache.max_seq_len % PAGED_PAGE_SIZE == 0, \
            f"cache.max_seq_len must be multiple of {PAGED_PAGE_SIZE}, received {cache.max_seq_len}"
        self.max_pages = max(cache.max_seq_len // self.page_size, 1)
        self.max_total_tokens = cache.max_seq_len
        self.max_chunk_size = max_chunk_size or cfg.max_input_len
        self.job_serial = 0
        self.pending_jobs: list[ExLlamaV2DynamicJob] = []
        self.active_jobs: list[ExLlamaV2DynamicJob] = []
        self.reset_page_table()

    def reset_page_table(self):
        """Reset the page table."""
        _fake.record("ExLlamaV2DynamicGenerator.reset_page_table")
        self._held_sequences: list[list[int]] = []

    def num_remaining_jobs(self):
        return len(self.pending_jobs) + len(self.active_jobs)

    def clear_queue(self):
        self.active_jobs.clear()
        self.pending_jobs.clear()

    def enqueue(self, job):
        if isinstance(job, list):
            return [self.enqueue(j) for j in job]
        job.prepare_for_queue(self, self.job_serial)
        self.job_serial += 1
        self.pending_jobs.append(job)
        return job.serial_number

    def cancel(self, job):
        _fake.record("ExLlamaV2DynamicGenerator.cancel", serial=job.serial_number)
        if job in self.pending_jobs:
            self.pending_jobs.remove(job)
        elif job in self.active_jobs:
            self.active_jobs.remove(job)

    @torch.inference_mode
    def iterate(self) -> list[dict]:
        _fake.STATE["iterations"] += 1
        if _fake.SETTINGS.fail_on_iterate == _fake.STATE["iterations"]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (fake)")
        if _fake.SETTINGS.step_s:
            time.sleep(_fake.SETTINGS.step_s)
        results: list[dict] = []
        self._start_jobs(results)
        _fake.STATE["max_active"] = max(_fake.STATE["max_active"], len(self.active_jobs))
        for job in list(self.active_jobs):
            job.step(results)
            if job.is_finished:
                self.active_jobs.remove(job)
        return results

    def _start_jobs(self, results: list) -> None:
        used = sum(j.pages for j in self.active_jobs)
        for job in list(self.pending_jobs):
            if len(self.active_jobs) >= self.max_batch_size or used + job.pages > self.max_pages:
                break
            self.pending_jobs.remove(job)
            self.active_jobs.append(job)
            used += job.pages
            shared = max((_fake.common_prefix(job.sequence[:-1], s) for s in self._held_sequences), default=0)
            job.cached_tokens = shared if shared >= 2 else 0
            self._held_sequences.append(job.sequence)  # grows as the job generates, as its pages do
            results.append({"job": job, "stage": "started", "eos": False, "serial": job.serial_number})
            results.append({"job": job, "stage": "prefill", "eos": False, "serial": job.serial_number,
                            "curr_progress": len(job.sequence) - 1, "max_progress": len(job.sequence) - 1})


class ExLlamaV2DynamicJob:

    def __init__(self, input_ids, max_new_tokens: int, min_new_tokens: int = 0, max_skips: int | None = 4,
                 gen_settings: ExLlamaV2Sampler.Settings | None = None, seed: int = None, stop_conditions=None,
                 decode_special_tokens: bool = False, return_top_tokens: int = 0, return_logits: bool = False,
                 return_probs: bool = False, filters=None, filter_prefer_eos: bool = False,
                 token_healing: bool = False, identifier: object | None = None, banned_strings: list[str] | None = None,
                 embeddings=None, **kwargs):
        assert all(ids.device.type == "cpu" for ids in (input_ids if isinstance(input_ids, list) else [input_ids])), \
            "input_ids must reside in system memory"
        if isinstance(input_ids, list):
            raise NotImplementedError("the fake mirrors single-sequence jobs only (no CFG pairs)")
        assert input_ids.shape[-1] > 0, "Input IDs cannot be empty."
        assert input_ids.shape[0] == 1, "input_ids must be [1, seq_len] tensor or list of [1, seq_len] tensors"
        if gen_settings is None:
            gen_settings = ExLlamaV2Sampler.Settings()
        _fake.record("ExLlamaV2DynamicJob", input_ids=input_ids.tolist()[0], max_new_tokens=max_new_tokens,
                     min_new_tokens=min_new_tokens, gen_settings=gen_settings, seed=seed,
                     stop_conditions=stop_conditions, filters=filters, token_healing=token_healing,
                     banned_strings=banned_strings)
        self.generator = None
        self.serial_number = None
        self.identifier = identifier
        self.input_ids = input_ids.tolist()[0]
        self.sequence = list(self.input_ids)
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.gen_settings = gen_settings
        self.greedy = ExLlamaV2Sampler.is_greedy(gen_settings)
        self.rng = random.Random() if seed is None else random.Random(seed)
        self.stop_tokens: set[int] = set()
        self.stop_strings: set[str] = set()
        for t in stop_conditions or ():
            if isinstance(t, int):
                self.stop_tokens.add(t)
            elif isinstance(t, str):
                self.stop_strings.add(t)
            else:
                raise ValueError("Unsupported type in stop_conditions")
        self.new_tokens = 0
        self.held: list[int] = []
        self.cached_tokens = 0
        self.is_finished = False
        self.pages = 0

    def prepare_for_queue(self, generator, serial_number: int):
        self.serial_number = serial_number
        self.generator = generator
        page_size = generator.page_size
        self.pages = -(-(len(self.sequence) + self.max_new_tokens) // page_size)
        assert self.pages <= generator.max_pages, \
            f"Job requires {self.pages} pages (only {generator.max_pages} available) and cannot " + \
            f"be enqueued. Total cache allocated is {generator.max_pages} * {page_size} = " + \
            f"{generator.max_total_tokens} tokens"

    def step(self, results: list) -> None:
        """One generation step of this job (the fake's whole forward pass and sampling)."""
        last = self.sequence[-1]
        if self.new_tokens == 0 and len(self.sequence) > 1 and not attn.prefill_is_causal(self.generator.model.config):
            last += 1  # a prefill that attends both ways: the first token is not the causal model's
        token = _fake.greedy_next(last) if self.greedy else self.rng.randrange(3, 256)
        self.sequence.append(token)
        self.new_tokens += 1
        self.held.append(token)
        if token in self.stop_tokens and self.new_tokens > self.min_new_tokens:
            self._emit(results, eos_reason="stop_token", emit_held=False, stop_token=token)
        elif self.new_tokens >= self.max_new_tokens - self.generator.num_draft_tokens:
            self._emit(results, eos_reason="max_new_tokens", emit_held=True)
        elif len(self.held) >= max(1, _fake.SETTINGS.tokens_per_result):
            self._emit(results, eos_reason=None, emit_held=True)

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
                      "time_generate": 0.0, "cached_pages": self.cached_tokens // self.generator.page_size,
                      "cached_tokens": self.cached_tokens})
            if stop_token is not None:
                r["eos_triggering_token_id"] = stop_token
            if self.held:
                r["held"] = {"token_ids": torch.tensor([self.held], dtype=torch.long)}
        if self.identifier is not None:
            r["identifier"] = self.identifier
        results.append(r)
