"""Fake of ``exllamav2/model.py``: ``ExLlamaV2(config)``, ``load``/``load_autosplit`` and ``unload``.

Loading holds ``_fake.SETTINGS.ballast_mb`` of host memory until ``unload()``, which is what frees a
real model's weights and its extension's unmanaged buffers.
"""

from __future__ import annotations

from typing import Callable

from . import _fake


class ExLlamaV2:

    def __init__(self, config, lazy_load=False, archparams=None):
        self.config = config
        self.modules = []
        self.loaded = False
        self._ballast: bytearray | None = None
        _fake.record("ExLlamaV2.__init__", model_dir=config.model_dir)

    def _load(self) -> None:
        size = _fake.SETTINGS.ballast_mb * _fake.MiB
        self._ballast = bytearray(size)
        self._ballast[::4096] = b"\x01" * len(self._ballast[::4096])
        _fake.STATE["live_bytes"] += size
        self.modules = ["embedding", "decoder", "head"]
        self.loaded = True

    def load(self, gpu_split: list[float] | None = None, lazy: bool = False, stats: bool = False,
             callback: Callable[[int, int], None] | None = None, callback_gen: Callable[[int, int], None] | None = None,
             progress: bool = False):
        _fake.record("ExLlamaV2.load", gpu_split=gpu_split, progress=progress)
        self._load()

    def load_autosplit(self, cache, reserve_vram=None, last_id_only: bool = False,
                       callback: Callable[[int, int], None] | None = None,
                       callback_gen: Callable[[int, int], None] | None = None, progress: bool = False):
        assert cache.model is self
        _fake.record("ExLlamaV2.load_autosplit", lazy_cache=cache.lazy, cache_tokens=cache.max_seq_len,
                     progress=progress)
        self._load()
        cache.allocated = True

    def unload(self):
        """Unloads the model and frees all unmanaged resources."""
        _fake.record("ExLlamaV2.unload")
        if self._ballast is not None:
            _fake.STATE["live_bytes"] -= len(self._ballast)
        self._ballast = None
        self.modules = []
        self.loaded = False
