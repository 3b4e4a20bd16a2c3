"""Fake of ``exllamav3/generator/pagetable.py``: the page table, as far as prompt-cache reuse goes.

The real table keys complete 256-token pages by a chained content hash, keeps unreferenced pages
indexed until they are evicted, and lets later jobs revive them. The fake keeps the token sequences
the cache holds since the last ``reset_page_table()`` and reports, for a starting job, the leading
tokens it shares with one of them (at least 2).
"""

from __future__ import annotations

from .. import _fake

PAGE_SIZE = 256


class PageTable:

    def __init__(self, generator, cache):
        self.generator = generator
        self.cache = cache
        self.max_pages = cache.max_num_tokens // PAGE_SIZE
        self.reset_page_table()

    def reset_page_table(self):
        """Reset the page table."""
        _fake.record("PageTable.reset_page_table")
        self.held_sequences: list[list[int]] = []

    def cached_prefix(self, sequence: list[int]) -> int:
        shared = max((_fake.common_prefix(sequence[:-1], s) for s in self.held_sequences), default=0)
        return shared if shared >= 2 else 0
