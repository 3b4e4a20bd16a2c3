"""Fake of ``exllamav3/cache/cache.py``: ``Cache(model, max_num_tokens, layer_type=None, max_batch_size=16, ...)``."""

from __future__ import annotations

import weakref

from .. import _fake


class Cache:

    def __init__(self, model, max_num_tokens: int, layer_type=None, max_batch_size: int = 16, max_history: int = 0,
                 **kwargs):
        _fake.record("Cache.__init__", max_num_tokens=max_num_tokens, layer_type=layer_type)
        self.model = model
        self.initialized = False  # set by Model.load(), cleared by Model.unload()
        self.config = model.config
        self.max_num_tokens = max_num_tokens
        self.max_history = max_history
        model.cache_weakrefs[id(self)] = weakref.ref(self)
