"""Random-weight models of real architectures, built in seconds, for speed comparisons offline.

``synthetic:<shape>`` names one of :data:`SHAPES`. The weights are random (seeded), so the text is
meaningless, but every matrix has the real size, which is all that decode speed depends on. The
tokenizer is a byte-level one with the shape's vocabulary size, generated here, so prompts tokenize
without any download.
"""

from __future__ import annotations

from typing import Any

# Published config.json values of the real models (architecture fields only).
SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_theta=100000.0, tie_word_embeddings=True,
    ),
    "llama-2-7b": dict(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=False,
    ),
    "llama-2-13b": dict(
        hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
        num_key_value_heads=40, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=False,
    ),
    "llama-3-8b": dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_theta=500000.0, tie_word_embeddings=False,
    ),
}

SEED = 0
SPECIAL = ("<unk>", "<s>", "</s>")


def param_count(shape: str) -> int:
    """Parameters of a Llama-architecture shape, counted from its config."""
    c = SHAPES[shape]
    h, i, n, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    head_dim = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h
    embed = v * h * (1 if c["tie_word_embeddings"] else 2)
    return n * per_layer + embed + h


def llama_config(shape: str):
    from transformers import LlamaConfig

    return LlamaConfig(
        **SHAPES[shape], bos_token_id=1, eos_token_id=2, pad_token_id=2, architectures=["LlamaForCausalLM"]
    )


def build_model(shape: str, dtype: Any = None, device: str = "cpu"):
    """Build the random-weight model directly on ``device`` (seconds on a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(SEED)
    dtype = dtype or torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(llama_config(shape), dtype=dtype)
    return model.eval()


def build_tokenizer(shape: str):
    """A byte-level tokenizer (no merges) padded to the shape's vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab_size = SHAPES[shape]["vocab_size"]
    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    while len(vocab) < vocab_size:
        vocab[f"<extra_{len(vocab)}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )


def save(shape: str, out_dir: str, dtype: Any = None) -> None:
    """Write the synthetic model and its tokenizer as a regular HF directory."""
    build_model(shape, dtype=dtype).save_pretrained(out_dir)
    build_tokenizer(shape).save_pretrained(out_dir)
