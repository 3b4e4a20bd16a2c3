"""Fake of ``exllamav2/generator/sampler.py``: ``ExLlamaV2Sampler.Settings``, with the real class
defaults (which sample: top-k 50, top-p 0.8, temperature 0.8, repetition penalty 1.025) and
``Settings.greedy()``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class ExLlamaV2Sampler:

    @dataclass
    class Settings:
        token_repetition_penalty: float = 1.025
        token_repetition_range: int = -1
        token_repetition_decay: int = 0
        token_frequency_penalty: float = 0.0
        token_presence_penalty: float = 0.0
        temperature: float = 0.8
        top_k: int = 50
        top_p: float = 0.8
        top_a: float = 0.0
        min_p: float = 0
        typical: float = 0
        mirostat: bool = False
        token_bias: torch.Tensor | None = None
        cfg_scale: float | None = None
        post_sampling_hooks: list = field(default_factory=list)
        dry_multiplier: float = 0.0

        @staticmethod
        def greedy(**kwargs) -> "ExLlamaV2Sampler.Settings":
            defaults = {
                "temperature": 1.0,
                "token_repetition_penalty": 1.0,
                "top_p": 0.0,
                "top_k": 1,
            }
            defaults.update(kwargs)
            return ExLlamaV2Sampler.Settings(**defaults)

    @staticmethod
    def is_greedy(s: "ExLlamaV2Sampler.Settings") -> bool:
        """Fake only: whether these settings make the sampler return the argmax of the raw logits."""
        return (s.top_k == 1 and s.token_repetition_penalty == 1.0 and s.token_frequency_penalty == 0
                and s.token_presence_penalty == 0 and s.token_bias is None and s.dry_multiplier == 0
                and not s.mirostat and s.cfg_scale is None and not s.post_sampling_hooks)
