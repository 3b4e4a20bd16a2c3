"""Fake of ``exllamav3/model/model.py``: ``Model.from_config(config)``, ``load(...)``, ``unload()``.

As in the real package, a ``Cache`` attaches itself to the model when it is built, and the model
allocates the cache's tensors when it loads (a cache built after ``load`` is never initialized) and
drops them when it unloads. Loading holds ``_fake.SETTINGS.ballast_mb`` of host memory until ``unload``.
"""

from __future__ import annotations

import weakref

from .. import _fake


class Model:

    def __init__(self, config, component: str = "text", **kwargs):
        self.config = config
        self.component = component
        self.cache_weakrefs: dict[int, weakref.ref] = {}
        self.loaded = False
        self._ballast: bytearray | None = None

    @staticmethod
    def from_config(config, component: str = "text", **kwargs) -> "Model":
        """Create model instance from config."""
        _fake.record("Model.from_config", directory=config.directory, component=component)
        return Model(config, component, **kwargs)

    def load(self, device=None, reserve_per_device=None, use_per_device=None, tensor_p: bool = False,
             progressbar: bool = False, max_chunk_size: int = 2048, **kwargs):
        _fake.record("Model.load", device=device, tensor_p=tensor_p, progressbar=progressbar,
                     caches=len(self.cache_weakrefs))
        size = _fake.SETTINGS.ballast_mb * _fake.MiB
        self._ballast = bytearray(size)
        self._ballast[::4096] = b"\x01" * len(self._ballast[::4096])
        _fake.STATE["live_bytes"] += size
        self.loaded = True
        for ref in self.cache_weakrefs.values():
            cache = ref()
            if cache is not None:
                cache.initialized = True

    def unload(self):
        _fake.record("Model.unload")
        if self._ballast is not None:
            _fake.STATE["live_bytes"] -= len(self._ballast)
        self._ballast = None
        self.loaded = False
        for ref in self.cache_weakrefs.values():
            cache = ref()
            if cache is not None:
                cache.initialized = False
