"""Fake of ``exllamav3/generator/sampler/presets.py`` (and the step classes of ``custom.py`` it uses).

``DefaultSampler`` (min-p 0.08, temperature 0.8, sampled) is what a ``Job`` without a sampler gets;
``ArgmaxSampler`` (alias ``GreedySampler``) returns the top token; ``CategoricalSampler(0)`` is argmax too.
"""

from __future__ import annotations

__all__ = ["SS_Argmax", "SS_Sample", "SS_Temperature", "SS_MinP", "CustomSampler", "DefaultSampler",
           "ArgmaxSampler", "GreedySampler", "CategoricalSampler"]


class SS_Argmax:
    pass


class SS_Sample:
    pass


class SS_Temperature:
    def __init__(self, temperature: float):
        self.temperature = temperature


class SS_MinP:
    def __init__(self, min_p: float):
        self.min_p = min_p


class CustomSampler:
    def __init__(self, steps: list):
        self.steps = list(steps)

    def is_argmax(self) -> bool:
        """Fake only: whether this sampler returns the argmax of the raw logits."""
        return len(self.steps) == 1 and isinstance(self.steps[0], SS_Argmax)


class DefaultSampler(CustomSampler):
    def __init__(self):
        super().__init__([SS_MinP(0.08), SS_Temperature(0.8), SS_Sample()])


class ArgmaxSampler(CustomSampler):
    def __init__(self):
        super().__init__([SS_Argmax()])


GreedySampler = ArgmaxSampler


class CategoricalSampler(CustomSampler):
    def __init__(self, temperature: float = 1.0):
        if temperature == 0:
            super().__init__([SS_Argmax()])
        else:
            super().__init__([SS_Temperature(temperature), SS_Sample()])
