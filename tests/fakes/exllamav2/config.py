"""Fake of ``exllamav2/config.py``: ``ExLlamaV2Config(model_dir)`` reads ``config.json`` in ``prepare()``."""

from __future__ import annotations

import glob
import json
import os


class ExLlamaV2Config:

    def __init__(self, model_dir: str | None = None):
        self.max_batch_size = 1
        self.max_input_len = 2048
        self.max_attention_size = 2048 ** 2
        self.max_output_len = None
        self.no_flash_attn = "EXLLAMA_NO_FLASH_ATTN" in os.environ
        self.no_xformers = "EXLLAMA_NO_XFORMERS" in os.environ
        self.no_sdpa = "EXLLAMA_NO_SDPA" in os.environ
        self.load_in_q4 = False
        self.no_graphs = "EXLLAMA_NO_GRAPHS" in os.environ
        if model_dir is not None:
            self.model_dir = model_dir
            self.prepare()
        else:
            self.model_dir = None

    def prepare(self, no_tensors: bool = False):
        assert self.model_dir is not None, "No model_dir specified in ExLlamaV2Config"
        assert os.path.exists(self.model_dir), "Can't find " + self.model_dir
        with open(os.path.join(self.model_dir, "config.json"), encoding="utf8") as f:
            read_config = json.load(f)
        self.architecture = read_config["architectures"][0]
        self.vocab_size = read_config["vocab_size"]
        self.bos_token_id = read_config.get("bos_token_id", 1)
        self.eos_token_id = read_config.get("eos_token_id", 2)
        self.max_seq_len = 2048
        for key in ("max_sequence_length", "model_max_length", "max_position_embeddings", "max_seq_len", "n_positions"):
            if key in read_config:
                self.max_seq_len = read_config[key]
                break
        checkpoint_format = (read_config.get("quantization_config") or {}).get("checkpoint_format")
        self.checkpoint_offset_qzeros = checkpoint_format == "gptq_v2"
        if no_tensors:
            return
        self.tensor_files = glob.glob(os.path.join(self.model_dir, "*.safetensors"))
        if len(self.tensor_files) == 0:
            raise ValueError(f" ## No .safetensors files found in {self.model_dir}")

    def arch_compat_overrides(self, quiet: bool = False, warn_only: bool = False):
        pass
