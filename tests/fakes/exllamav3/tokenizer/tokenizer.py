"""Fake of ``exllamav3/tokenizer/tokenizer.py``: ``Tokenizer(config)`` / ``Tokenizer.from_config(config)``
over the model's ``tokenizer.json``, and ``encode(text, add_bos=False, add_eos=False,
encode_special_tokens=False, ...)`` returning a ``(1, n)`` tensor."""

from __future__ import annotations

import os

import torch


class Tokenizer:

    def __init__(self, config):
        from tokenizers import Tokenizer as HFTokenizer

        self.config = config
        self.tokenizer = HFTokenizer.from_file(os.path.join(config.directory, "tokenizer.json"))
        self.bos_token_id = config.bos_token_id
        self.eos_token_id = config.eos_token_id

    @staticmethod
    def from_config(config) -> "Tokenizer":
        return Tokenizer(config)

    def encode(self, text, add_bos: bool = False, add_eos: bool = False, encode_special_tokens: bool = False,
               return_offsets: bool = False, embeddings=None):
        if isinstance(text, list):
            raise NotImplementedError("the fake mirrors single strings only")
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        ids = ([self.bos_token_id] if add_bos else []) + ids + ([self.eos_token_id] if add_eos else [])
        return torch.tensor([ids], dtype=torch.long)
