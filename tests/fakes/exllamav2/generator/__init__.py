from .dynamic import ExLlamaV2DynamicGenerator, ExLlamaV2DynamicJob
from .sampler import ExLlamaV2Sampler

__all__ = ["ExLlamaV2DynamicGenerator", "ExLlamaV2DynamicJob", "ExLlamaV2Sampler"]
