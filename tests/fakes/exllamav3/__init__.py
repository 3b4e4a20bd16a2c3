"""Fake of the ``exllamav3`` package, for testing llmcompare's ExLlamaV3 adapter without a GPU.

Mirrors the PyPI wheel ``exllamav3-1.6.5-py3-none-any.whl`` (sha256 550c0d04…e8ded; its source is
turboderp-org/exllamav3 after tag v1.4.1, commit 4f8ad01, the newest the mirror here holds):
``Config.from_directory`` (``model/config.py``), ``Model.from_config``/``load``/``unload``
(``model/model.py``), ``Cache`` (``cache/cache.py``), ``Tokenizer`` (``tokenizer/tokenizer.py``),
``Generator``, ``Job`` and the page table (``generator/``), the sampler presets
(``generator/sampler/presets.py``) and the converter (``conversion/convert_model.py``). Only the
surface llmcompare uses is mirrored, with the real names, signatures, defaults, assertions and result
dicts; the "model" is the seeded next-token table in ``_fake``, which also holds the controls and
the call log.
"""

from .cache import Cache
from .generator import Generator, Job
from .generator.sampler import *  # noqa: F403 (as the real package re-exports its samplers)
from .model.config import Config
from .model.model import Model
from .tokenizer import Tokenizer
from .version import __version__

__all__ = ["Cache", "Config", "Generator", "Job", "Model", "Tokenizer", "__version__",  # noqa: F405
           "ArgmaxSampler", "CategoricalSampler", "CustomSampler", "DefaultSampler", "GreedySampler"]
