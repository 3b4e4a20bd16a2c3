"""Fake of the ``exllamav2`` package, for testing llmcompare's ExLlamaV2 adapter without a GPU.

Mirrors turboderp-org/exllamav2 at tag v0.3.2 (commit 6a2d8311408aa23af34e8ec32e28085ea68dada7; the
PyPI wheel ``exllamav2-0.3.2-py3-none-any.whl``, sha256 7cd61ae4…6079e): the loading classes
(``config.py``, ``model.py``, ``cache.py``, ``tokenizer/tokenizer.py``, ``attn.py``), the dynamic
generator and its jobs (``generator/dynamic.py``), the sampler settings (``generator/sampler.py``) and
the EXL2 converter script (``conversion/convert_exl2.py``). Only the surface llmcompare uses is
mirrored, with the real names, signatures, defaults, assertions and result dicts; what a caller can
observe of greedy decoding is kept, the arithmetic is not: the "model" is the seeded next-token table
in ``_fake``, which also holds the controls and the call log.
"""

from .cache import ExLlamaV2Cache, ExLlamaV2CacheBase
from .config import ExLlamaV2Config
from .model import ExLlamaV2
from .tokenizer.tokenizer import ExLlamaV2Tokenizer
from .version import __version__

__all__ = ["ExLlamaV2", "ExLlamaV2Cache", "ExLlamaV2CacheBase", "ExLlamaV2Config", "ExLlamaV2Tokenizer",
           "__version__"]
