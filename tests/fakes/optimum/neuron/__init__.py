"""Fake of ``optimum.neuron``'s ``NeuronModelForCausalLM``, for testing llmcompare's Neuron adapter.

Mirrors huggingface/optimum-neuron 0.4 at commit 213224e (2026-08-19), as a caller observes it:

* ``get_neuron_config(model_name_or_path, config=None, token=None, revision=None, instance_type=None,
  batch_size=None, sequence_length=None, tensor_parallel_size=None, prefill_chunk_size=None)``
  (``models/inference/modeling_utils.py``): defaults batch 1, the model's positions capped at 4096,
  every available core; chunked prefill (1024) for sequences longer than 1024; Llama gets
  ``on_device_sampling=True`` and continuous batching when batch > 1 (``llama/modeling_llama.py``);
* ``export(model_id, neuron_config, config=None, token=None, revision=None, load_weights=False)``
  "compiles"; ``save_pretrained(dir)`` writes the neuron config, the model config, the compiled
  graphs and (for a local checkpoint) the weights; ``from_pretrained(dir)`` refuses an artifact
  compiled for another instance type or for more cores than there are;
* ``generate(input_ids, attention_mask=None, generation_config=None, stopping_criteria=None, ...)``
  (``NxDGenerationMixin``): refuses inputs longer than the compiled sequence or a batch larger than
  the compiled one, and left padding; resets the KV cache; appends one token per step for every row
  and calls the stopping criteria after each step (after the prefill's first token, then after each
  decode step) with the ids so far. With on-device sampling, logits processors are skipped, so
  ``min_new_tokens`` has no effect; a row stops at an ``eos_token_id`` or at ``max_new_tokens``.

Generation is deterministic: each row's prompt ids (the unpadded ones), cyclically. A generation
config whose ``eos_token_id`` is ``None`` falls back to the model's own (``config.json``), as
transformers does. This fake needs torch and transformers (``GenerationConfig``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from . import _fake
from .version import __version__

__all__ = ["NeuronModelForCausalLM", "__version__"]

COMPILED_FILE = "model.pt"


class NxDNeuronConfig:
    """The compiled shapes (``models/inference/backend/config.py``), saved as ``neuron_config.json``."""

    FIELDS = ("checkpoint_id", "checkpoint_revision", "batch_size", "sequence_length", "tp_degree", "torch_dtype",
              "target", "on_device_sampling", "fused_qkv", "continuous_batching", "prefill_chunk_size")

    def __init__(self, checkpoint_id: Optional[str] = None, checkpoint_revision: Optional[str] = None,
                 batch_size: int = 1, sequence_length: int = 128, tp_degree: int = 1, torch_dtype: str = "bfloat16",
                 target: Optional[str] = None, on_device_sampling: bool = False, fused_qkv: bool = False,
                 continuous_batching: bool = False, prefill_chunk_size: int = 0):
        for name in self.FIELDS:
            setattr(self, name, locals()[name])

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def save_pretrained(self, directory: str) -> None:
        Path(directory, "neuron_config.json").write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_pretrained(cls, directory: str) -> NxDNeuronConfig:
        return cls(**json.loads(Path(directory, "neuron_config.json").read_text()))


def _model_config(path: str) -> dict[str, Any]:
    return json.loads(Path(path, "config.json").read_text())


class NeuronModelForCausalLM:

    def __init__(self, config: dict[str, Any], neuron_config: NxDNeuronConfig, weights: Optional[str]):
        from transformers import GenerationConfig, PretrainedConfig

        self.config = PretrainedConfig(**config)
        self.neuron_config = neuron_config
        self.weights = weights
        self.generation_config = GenerationConfig(eos_token_id=config.get("eos_token_id"),
                                                  bos_token_id=config.get("bos_token_id"))
        self._source = config

    # ---- compile and load ----
    @classmethod
    def get_neuron_config(cls, model_name_or_path, config=None, token=None, revision=None, instance_type=None,
                          batch_size=None, sequence_length=None, tensor_parallel_size=None, prefill_chunk_size=None):
        _fake.record("get_neuron_config", model_name_or_path=str(model_name_or_path), instance_type=instance_type,
                     batch_size=batch_size, sequence_length=sequence_length,
                     tensor_parallel_size=tensor_parallel_size, prefill_chunk_size=prefill_chunk_size)
        if not os.path.isdir(model_name_or_path):
            raise OSError(f"{model_name_or_path}: the fake cannot reach the hub")
        hf = _model_config(model_name_or_path)
        batch_size = 1 if batch_size is None else batch_size
        if sequence_length is None:
            sequence_length = min(hf.get("n_positions", hf.get("max_position_embeddings", 1024)), 4096)
        tensor_parallel_size = _fake.SETTINGS.cores if tensor_parallel_size is None else tensor_parallel_size
        if prefill_chunk_size is None:
            prefill_chunk_size = 1024 if sequence_length > 1024 else 0
        return NxDNeuronConfig(batch_size=batch_size, sequence_length=sequence_length, tp_degree=tensor_parallel_size,
                               torch_dtype=hf.get("torch_dtype") or hf.get("dtype") or "float32",
                               target=instance_type or _fake.SETTINGS.instance_type, on_device_sampling=True,
                               fused_qkv=True, continuous_batching=batch_size > 1,
                               prefill_chunk_size=prefill_chunk_size)

    @classmethod
    def export(cls, model_id, neuron_config, config=None, token=None, revision=None, load_weights=False, **kwargs):
        _fake.record("export", model_id=str(model_id), neuron_config=neuron_config.to_dict(), load_weights=load_weights)
        return cls(_model_config(model_id), neuron_config, str(model_id) if load_weights else None)

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        _fake.record("save_pretrained", save_directory=str(save_directory))
        os.makedirs(save_directory, exist_ok=True)
        self.neuron_config.save_pretrained(save_directory)
        Path(save_directory, "config.json").write_text(json.dumps(self._source))
        Path(save_directory, COMPILED_FILE).write_bytes(b"compiled graphs")
        Path(save_directory, "checkpoint").mkdir(exist_ok=True)

    @classmethod
    def from_pretrained(cls, model_id, **kwargs) -> NeuronModelForCausalLM:
        _fake.record("from_pretrained", model_id=str(model_id))
        neuron_config = NxDNeuronConfig.from_pretrained(str(model_id))
        if neuron_config.target != _fake.SETTINGS.instance_type:
            raise ValueError(f"The model was compiled for {neuron_config.target} but the current instance type is "
                             f"{_fake.SETTINGS.instance_type}. Please use a compatible instance type.")
        if _fake.SETTINGS.cores < neuron_config.tp_degree:
            raise ValueError(f"The model requires at least {neuron_config.tp_degree} Neuron cores but only "
                             f"{_fake.SETTINGS.cores} are available. Please use a compatible instance type.")
        if not Path(model_id, COMPILED_FILE).is_file():
            raise FileNotFoundError(f"{model_id}: no compiled model")
        return cls(_model_config(str(model_id)), neuron_config, str(model_id))

    # ---- generation ----
    def reset(self) -> None:
        _fake.record("reset")

    def generate(self, input_ids, attention_mask=None, generation_config=None, stopping_criteria=None, **kwargs):
        import torch

        batch, length = input_ids.shape
        nc = self.neuron_config
        if length > nc.sequence_length:
            raise ValueError(f"The input sequence length ({length}) exceeds the model static sequence length "
                             f"({nc.sequence_length})")
        if batch > nc.batch_size:
            raise ValueError(f"The specified batch_size ({batch}) exceeds the model static batch size "
                             f"({nc.batch_size})")
        if attention_mask is not None and (attention_mask[:, 0] == 0).any():
            raise ValueError("Left padding is not supported for Neuron models.")
        if self.weights is None:
            raise RuntimeError("the model weights are not loaded")
        self.reset()
        gen = generation_config if generation_config is not None else self.generation_config
        _fake.record("generate", input_ids=input_ids.tolist(),
                     attention_mask=None if attention_mask is None else attention_mask.tolist(),
                     generation_config=gen.to_dict(), kwargs=kwargs)
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        pad = gen.pad_token_id if gen.pad_token_id is not None else 0
        max_new = gen.max_new_tokens if gen.max_new_tokens is not None else 20
        if length + max_new > nc.sequence_length:
            raise RuntimeError(f"generation would write past the compiled sequence length ({nc.sequence_length})")
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        rows = [input_ids[r][mask[r] == 1].tolist() for r in range(batch)]
        unfinished = [True] * batch
        ids = input_ids.clone()
        for step in range(max_new):
            column = [rows[r][step % len(rows[r])] if unfinished[r] else pad for r in range(batch)]
            ids = torch.cat([ids, torch.tensor(column, dtype=ids.dtype)[:, None]], dim=-1)
            stop = (stopping_criteria(ids, None) if stopping_criteria is not None
                    else torch.zeros(batch, dtype=torch.bool))
            unfinished = [u and not bool(stop[r]) and column[r] not in eos_ids for r, u in enumerate(unfinished)]
            if not any(unfinished):
                break
        return ids
