"""Fake of ``exllamav3/model/config.py``: ``Config.from_directory(directory)``."""

from __future__ import annotations

import glob
import json
import os

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


class Config:

    def __init__(self, directory: str, **kwargs):
        self.directory = directory
        self.config_filename = os.path.join(directory, "config.json")
        with open(self.config_filename, encoding="utf8") as f:
            self.config_dict = json.load(f)
        self.architecture = self.config_dict["architectures"][0]
        self.bos_token_id = self.config_dict.get("bos_token_id")
        self.eos_token_id = self.config_dict.get("eos_token_id")
        self.vocab_size = self.config_dict.get("vocab_size")
        self.max_position_embeddings = self.config_dict.get("max_position_embeddings", 2048)
        self.tensor_files = glob.glob(os.path.join(directory, "*.safetensors"))
        if not self.tensor_files:
            raise ValueError(f"No .safetensors files found in {directory}")

    @staticmethod
    def from_directory(directory: str, **kwargs) -> "Config":
        """Create config from the specified directory if it contains a HF model of a supported architecture."""
        config_filename = os.path.join(directory, "config.json")
        with open(config_filename, encoding="utf8") as f:
            config_dict = json.load(f)
        assert "architectures" in config_dict, f"No architecture defined in {config_filename}"
        archs = config_dict["architectures"]
        assert len(archs) == 1, f"Multiple architectures defined in {config_filename}"
        assert archs[0] in ARCHITECTURES, f"Unknown architecture {archs[0]} in {config_filename}"
        return Config(directory, **kwargs)
