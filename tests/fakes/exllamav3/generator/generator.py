"""Fake of ``exllamav3/generator/generator.py``: ``Generator``.

Mirrored: the constructor's arguments (``max_batch_size=256``, ``max_chunk_size=2048``, the CPU and
disk prompt-cache tiers ``cpu_cache_size=0``/``disk_cache_dir=None``, a disk tier without a CPU tier
being a ``ValueError``), ``pagetable``, ``enqueue``/``cancel``/``clear_queue``/``num_remaining_jobs``,
``close()``, and ``iterate()``, which asserts that the cache was initialized by ``Model.load`` and
returns result dicts (``started``, ``prefill``, ``streaming`` with ``token_ids`` and, on the last,
``eos_reason``, ``new_tokens``, ``prompt_tokens``, ``cached_pages``, ``cached_tokens``).
"""

from __future__ import annotations

import time

import torch

from .. import _fake
from .pagetable import PAGE_SIZE, PageTable


class Generator:

    def __init__(self, model, cache, tokenizer, max_batch_size: int = 256, max_chunk_size: int = 2048,
                 shared_chunk_size: int | None = None, prefill_cooldown: int | None = 4, max_q_size: int = 8,
                 draft_model=None, draft_cache=None, num_draft_tokens: int | None = None,
                 show_visualizer: bool = False, enable_defrag: bool = True, cpu_cache_size: int = 0,
                 disk_cache_dir: str | None = None, disk_cache_size: int = 50 * 1024 ** 3,
                 ngram_match_min: int = 0, hybrid_draft_tokens: int = 0, **kwargs):
        _fake.record("Generator.__init__", max_batch_size=max_batch_size, max_chunk_size=max_chunk_size,
                     cpu_cache_size=cpu_cache_size, disk_cache_dir=disk_cache_dir, draft_model=draft_model,
                     ngram_match_min=ngram_match_min, hybrid_draft_tokens=hybrid_draft_tokens, **kwargs)
        if disk_cache_dir and not cpu_cache_size:
            raise ValueError("disk_cache_dir needs a CPU page cache tier to write through from (cpu_cache_size > 0)")
        self.model = model
        self.cache = cache
        self.tokenizer = tokenizer
        self.pagetable = PageTable(self, cache)
        self.max_total_tokens = PAGE_SIZE * self.pagetable.max_pages
        self.max_batch_size = max_batch_size
        self.max_chunk_size = max_chunk_size
        self.num_draft_tokens = 0
        self.max_draft_tokens = 0
        self.job_serial = 0
        self.pending_jobs = []
        self.active_jobs = []
        self.closed = False

    def num_remaining_jobs(self):
        return len(self.pending_jobs) + len(self.active_jobs)

    def clear_queue(self):
        """Abort all active and pending jobs."""
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
        _fake.record("Generator.cancel", serial=job.serial_number)
        if job in self.pending_jobs:
            self.pending_jobs.remove(job)
        elif job in self.active_jobs:
            self.active_jobs.remove(job)

    def close(self):
        _fake.record("Generator.close")
        self.closed = True

    @torch.inference_mode
    def iterate(self) -> list[dict]:
        assert self.cache.initialized, \
            "Cache tensors were never allocated. Construct the Cache BEFORE calling model.load()"
        _fake.STATE["iterations"] += 1
        if _fake.SETTINGS.fail_on_iterate == _fake.STATE["iterations"]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (fake)")
        if _fake.SETTINGS.step_s:
            time.sleep(_fake.SETTINGS.step_s)
        results: list[dict] = []
        used = sum(j.pages for j in self.active_jobs)
        for job in list(self.pending_jobs):
            if len(self.active_jobs) >= self.max_batch_size or used + job.pages > self.pagetable.max_pages:
                break
            self.pending_jobs.remove(job)
            self.active_jobs.append(job)
            used += job.pages
            job.cached_tokens = self.pagetable.cached_prefix(job.sequence)
            self.pagetable.held_sequences.append(job.sequence)
            results.append({"job": job, "stage": "started", "eos": False, "serial": job.serial_number})
            results.append({"job": job, "stage": "prefill", "eos": False, "serial": job.serial_number,
                            "curr_progress": len(job.sequence) - 1, "max_progress": len(job.sequence) - 1})
        _fake.STATE["max_active"] = max(_fake.STATE["max_active"], len(self.active_jobs))
        for job in list(self.active_jobs):
            job.step(results)
            if job.is_finished:
                self.active_jobs.remove(job)
        return results
