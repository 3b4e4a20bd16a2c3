"""Fake of ``exllamav2/cache.py``: ``ExLlamaV2Cache(model, batch_size=1, max_seq_len=-1, ..., lazy=False)``."""

from __future__ import annotations

from . import _fake


class ExLlamaV2CacheBase:

    def __init__(self, model, batch_size: int, max_seq_len: int, lazy: bool):
        self.model = model
        self.max_seq_len = max_seq_len if max_seq_len != -1 else self.model.config.max_seq_len
        self.batch_size = batch_size
        self.lazy = lazy
        self.allocated = not lazy


class ExLlamaV2Cache(ExLlamaV2CacheBase):

    def __init__(self, model, batch_size: int = 1, max_seq_len: int = -1, copy_from=None, lazy: bool = False,
                 num_key_value_heads: int | None = None, fixed_device: int | None = None):
        super().__init__(model, batch_size, max_seq_len, lazy)
        _fake.record("ExLlamaV2Cache.__init__", batch_size=batch_size, max_seq_len=self.max_seq_len, lazy=lazy)
