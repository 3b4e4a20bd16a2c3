"""Fake of ``exllamav2/tokenizer/tokenizer.py``: ``ExLlamaV2Tokenizer(config)`` over the model's
``tokenizer.json`` (the real one wraps the same file with the ``tokenizers`` library), and
``encode(text, add_bos=False, add_eos=False, encode_special_tokens=False, ...)`` returning a
``(1, n)`` tensor."""

from __future__ import annotations

import os

import torch


class ExLlamaV2Tokenizer:

    def __init__(self, config, lazy_init=True, force_json=False, force_spm=False):
        from tokenizers import Tokenizer

        self.config = config
        self.tokenizer_model = Tokenizer.from_file(os.path.join(config.model_dir, "tokenizer.json"))
        self.bos_token_id = config.bos_token_id
        self.eos_token_id = config.eos_token_id

    def encode(self, text, add_bos: bool = False, add_eos: bool = False, encode_special_tokens: bool = False,
               return_offsets: bool = False, embeddings=None):
        if isinstance(text, list):
            raise NotImplementedError("the fake mirrors single strings only")
        ids = self.tokenizer_model.encode(text, add_special_tokens=False).ids
        ids = ([self.bos_token_id] if add_bos else []) + ids + ([self.eos_token_id] if add_eos else [])
        return torch.tensor([ids], dtype=torch.long)
