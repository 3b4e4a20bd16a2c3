"""Write a Hugging Face Llama checkpoint as a GGUF file that llama.cpp loads.

llama.cpp's own ``convert_hf_to_gguf.py`` identifies a BPE tokenizer by hashing its output on a test
string and refuses one it does not know, such as the synthetic shapes' byte-level tokenizer; so
llmcompare writes the file itself with gguf-py's :class:`gguf.GGUFWriter`. What it writes follows
that script's Llama path (read in llama-cpp-python 0.3.36's ``vendor/llama.cpp/conversion/``):

* architecture ``llama`` and its hyper-parameters: context length, embedding length, block count,
  feed-forward length, head counts, rope dimension count and frequency base, RMS-norm epsilon, key
  and value lengths, vocabulary size, file type;
* tensors under llama.cpp's names (``token_embd``, ``blk.N.attn_q`` … ``ffn_down``, ``attn_norm``,
  ``ffn_norm``, ``output_norm``, ``output``; no ``output`` when the embeddings are tied). The rows of
  ``attn_q`` and ``attn_k`` are reordered per head (:func:`rope_interleave`): HF rotates dimension
  ``j`` with ``j + d/2`` (rotate-half), llama.cpp's ``llama`` rope rotates ``2j`` with ``2j + 1``;
* 1-D tensors (the norms) in float32, the matrices (embedding included) in the file's type, float32
  or float16, as that script does for ``--outtype f32``/``f16``;
* the tokenizer as ``tokenizer.ggml.model = "gpt2"`` (byte-level BPE only): every token of the
  model's vocabulary size (ids the tokenizer lacks become ``[PAD<i>]``, type unused), special added
  tokens typed control, the merges (an empty list when there are none: llama.cpp refuses a gpt2
  vocabulary without the key, and loads an empty one), the pre-tokenizer (:func:`pre_tokenizer`),
  the bos/eos/unk/pad ids and whether the HF tokenizer adds bos/eos.

Q8_0 and Q4_0 are llama.cpp's own quantizer (``llama_model_quantize``) run on the float16 file, with
its default rules (it keeps the norms float32 and gives the output matrix, or the tied embedding,
more bits). :func:`check` refuses, in one line, everything else before anything is written.
"""

from __future__ import annotations

import ctypes
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llmcompare.errors import UserError
from llmcompare.models import safetensors_header

ARCHITECTURES = ("LlamaForCausalLM",)
TYPES = ("f32", "f16", "q8_0", "q4_0")
FLOAT_TYPES = {"f32": np.float32, "f16": np.float16}
LLAMA_FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
"""Quantized type -> the ``llama_cpp`` constant ``llama_model_quantize`` takes."""

_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
_BLOCK = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")
_BLOCK_TENSORS = {
    "self_attn.q_proj": "ATTN_Q", "self_attn.k_proj": "ATTN_K", "self_attn.v_proj": "ATTN_V",
    "self_attn.o_proj": "ATTN_OUT", "mlp.gate_proj": "FFN_GATE", "mlp.up_proj": "FFN_UP",
    "mlp.down_proj": "FFN_DOWN", "input_layernorm": "ATTN_NORM", "post_attention_layernorm": "FFN_NORM",
}
"""HF module inside ``model.layers.N`` -> gguf-py's ``MODEL_TENSOR`` member."""
Loader = Callable[[], np.ndarray]
_TOP_TENSORS = {"model.embed_tokens.weight": "TOKEN_EMBD", "model.norm.weight": "OUTPUT_NORM",
                "lm_head.weight": "OUTPUT"}


# ---------------------------------------------------------------- reading the checkpoint
def read_config(source: Path) -> dict[str, Any]:
    try:
        return json.loads((source / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{str(source)!r} has no readable config.json ({exc})") from None


def read_safetensors(source: Path) -> dict[str, tuple[str, np.ndarray]]:
    """Every tensor of ``source/*.safetensors``: name -> (safetensors dtype, memory-mapped array).

    Nothing is read until an array is used. BF16 arrays come back as their raw ``uint16`` words
    (:func:`as_float` widens them)."""
    out: dict[str, tuple[str, np.ndarray]] = {}
    files = sorted(source.glob("*.safetensors"))
    if not files:
        raise UserError(f"{str(source)!r} holds no .safetensors file to convert")
    for file in files:
        offset, header = safetensors_header(file)
        data = np.memmap(file, dtype=np.uint8, mode="r", offset=offset)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            kind = info["dtype"]
            if kind not in _SAFETENSORS_DTYPES:
                raise UserError(f"tensor {name!r} of {file.name} is {kind}; the GGUF converter reads F32, F16"
                                " and BF16 checkpoints")
            start, end = info["data_offsets"]
            out[name] = (kind, data[start:end].view(_SAFETENSORS_DTYPES[kind]).reshape(info["shape"]))
    return out


def as_float(kind: str, array: np.ndarray) -> np.ndarray:
    """The tensor as float32 or float16 values (BF16 widened exactly to float32)."""
    if kind == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(array)


def rope_theta(config: dict[str, Any]) -> float:
    """transformers 5 keeps it in ``rope_parameters``, earlier versions at the top level."""
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


# ---------------------------------------------------------------- what is refused
def check(source: Path) -> tuple[dict[str, Any], list[tuple[str, str, tuple[int, ...], Loader]]]:
    """Raise a one-line :class:`UserError` for a checkpoint this converter would not write faithfully:
    another architecture, rope scaling, biases, an activation other than SiLU, a quantized checkpoint,
    a tokenizer that is not byte-level BPE, or tensors it cannot place. Reads only metadata; returns
    the config and the :func:`tensor_plan` that :func:`write_float` writes."""
    config = read_config(source)
    archs = config.get("architectures") or [config.get("model_type", "unknown")]
    if not set(archs) & set(ARCHITECTURES):
        raise UserError(f"GGUF conversion supports the Llama architecture ({', '.join(ARCHITECTURES)}) only;"
                        f" {str(source)!r} is {', '.join(map(str, archs))}")
    if config.get("quantization_config"):
        raise UserError(f"{str(source)!r} is already quantized; GGUF conversion starts from an unquantized checkpoint")
    scaling = (config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in (None, "default"):
        raise UserError(f"GGUF conversion writes plain rope only; {str(source)!r} uses rope scaling {rope_type!r}")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise UserError(f"GGUF conversion writes bias-free Llama layers only; {str(source)!r} sets {flag}")
    if config.get("hidden_act", "silu") != "silu":
        raise UserError(f"GGUF conversion writes SiLU feed-forward layers only; {str(source)!r} uses"
                        f" {config['hidden_act']!r}")
    tokenizer_json(source)
    return config, tensor_plan(config, read_safetensors(source))


def tokenizer_json(source: Path) -> dict[str, Any]:
    """``tokenizer.json``, refused unless it is a byte-level BPE (what llama.cpp's gpt2 vocabulary is)."""
    try:
        spec = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"GGUF conversion needs the model's tokenizer.json ({exc})") from None
    model = spec.get("model") or {}
    byte_level = "ByteLevel" in json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
    if model.get("type") != "BPE" or not byte_level or model.get("byte_fallback"):
        kind = f"{model.get('type', 'unknown')}{' with byte fallback' if model.get('byte_fallback') else ''}"
        raise UserError(f"GGUF conversion writes byte-level BPE tokenizers only (llama.cpp's gpt2 vocabulary);"
                        f" {str(source / 'tokenizer.json')!r} is {kind}" + ("" if byte_level else ", not byte-level"))
    return spec


def pre_tokenizer(spec: dict[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer when its regexes are the same, else
    ``"default"``: ``gpt-2`` for a plain byte-level one (GPT-2's regex), ``smollm`` for single digits
    split first, then the same byte-level step."""
    gpt2 = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}

    def plain_byte_level(p: Any) -> bool:
        return isinstance(p, dict) and all(p.get(k) == v for k, v in gpt2.items())

    pre = spec.get("pre_tokenizer") or {}
    if plain_byte_level(pre):
        return "gpt-2"
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if steps and len(steps) == 2 and steps[0] == {"type": "Digits", "individual_digits": True} \
            and plain_byte_level(steps[1]):
        return "smollm"
    return "default"


def tensor_plan(config: dict[str, Any],
                tensors: dict[str, tuple[str, np.ndarray]]) -> list[tuple[str, str, tuple[int, ...], Loader]]:
    """(GGUF name, HF name, shape, loader) for every tensor to write, in the file's order: the embedding,
    each block, the final norm, the output matrix unless tied. Q and K rows are reordered for rope.
    Refuses a tensor it cannot place, and a missing one."""
    import gguf

    heads, kv_heads = int(config["num_attention_heads"]), int(config.get("num_key_value_heads")
                                                              or config["num_attention_heads"])
    blocks, tied = int(config["num_hidden_layers"]), bool(config.get("tie_word_embeddings", False))

    def gguf_name(member: str, bid: int | None = None) -> str:
        return gguf.TENSOR_NAMES[getattr(gguf.MODEL_TENSOR, member)].format(bid=bid) + ".weight"

    def loader(name: str, rope_heads: int | None = None) -> Loader:
        def load() -> np.ndarray:
            data = as_float(*tensors[name])
            return rope_interleave(data, rope_heads) if rope_heads else data
        return load

    placed: dict[str, tuple[str, tuple[int, ...], Loader]] = {}
    for name in tensors:
        if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
            continue  # recomputed by llama.cpp / the tied embedding serves as output
        if name in _TOP_TENSORS:
            placed[gguf_name(_TOP_TENSORS[name])] = (name, tensors[name][1].shape, loader(name))
            continue
        match = _BLOCK.fullmatch(name)
        member = _BLOCK_TENSORS.get(match.group(2)) if match else None
        if member is None or int(match.group(1)) >= blocks:
            raise UserError(f"the checkpoint's tensor {name!r} has no place in a GGUF llama model")
        rope = {"ATTN_Q": heads, "ATTN_K": kv_heads}.get(member)
        placed[gguf_name(member, int(match.group(1)))] = (name, tensors[name][1].shape, loader(name, rope))
    order = [gguf_name("TOKEN_EMBD")]
    order += [gguf_name(m, b) for b in range(blocks) for m in _BLOCK_TENSORS.values()]
    order += [gguf_name("OUTPUT_NORM")] + ([] if tied else [gguf_name("OUTPUT")])
    missing = [n for n in order if n not in placed]
    if missing:
        raise UserError(f"the checkpoint lacks {len(missing)} tensor(s) a GGUF llama model needs, e.g. {missing[0]!r}")
    return [(n, *placed[n]) for n in order]


def rope_interleave(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder the rows of a Q or K projection from HF's rotate-half layout to llama.cpp's.

    Each head's ``d`` rows hold, in HF, the first members of the ``d/2`` rotation pairs and then the
    second members (row ``j`` rotates with row ``j + d/2``); llama.cpp's ``llama`` rope rotates
    adjacent rows. So row ``2j + s`` of a head (s = 0, 1) becomes HF row ``s·d/2 + j``."""
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


# ---------------------------------------------------------------- writing
def _writer_class() -> type:
    import gguf

    class Writer(gguf.GGUFWriter):
        """gguf-py refuses to pack an empty array. The GGUF format has one (an element type and a count
        of 0), llama.cpp reads it, and a BPE vocabulary without merges must carry an empty
        ``tokenizer.ggml.merges``: llama.cpp refuses a gpt2 vocabulary without the key."""

        def _pack_val(self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any = None) -> bytes:
            if vtype == gguf.GGUFValueType.ARRAY and sub_type is not None and len(val) == 0:
                head = self._pack("I", vtype) if add_vtype else b""
                return head + self._pack("I", sub_type) + self._pack("Q", 0)
            return super()._pack_val(val, vtype, add_vtype, sub_type)

    return Writer


def _hyper_parameters(writer: Any, config: dict[str, Any], file_type: Any, name: str) -> None:
    import gguf

    writer.add_name(name)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or config["num_attention_heads"]))
    writer.add_rope_dimension_count(head_dim(config))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_key_length(head_dim(config))
    writer.add_value_length(head_dim(config))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _vocabulary(writer: Any, source: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Write the tokenizer; return what was written, for the log."""
    import gguf
    from transformers import AutoTokenizer

    spec = tokenizer_json(source)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    vocab_size = int(config["vocab_size"])
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise UserError(f"the tokenizer has id {max(by_id)}, beyond the model's vocab_size {vocab_size}")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges") or []]
    pre = pre_tokenizer(spec)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_key_value(gguf.Keys.Tokenizer.MERGES, merges, gguf.GGUFValueType.ARRAY,
                         sub_type=gguf.GGUFValueType.STRING)
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.unk_token_id,
           "pad": tokenizer.pad_token_id}
    for role, setter in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                         ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        if ids[role] is not None:
            setter(int(ids[role]))
    probe = tokenizer("a")["input_ids"]  # what the HF tokenizer adds around a text by default
    add_bos = ids["bos"] is not None and probe[:1] == [ids["bos"]]
    add_eos = ids["eos"] is not None and probe[-1:] == [ids["eos"]]
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        writer.add_chat_template(tokenizer.chat_template)
    return {"tokens": len(tokens), "merges": len(merges), "pre": pre, "add_bos": add_bos, "add_eos": add_eos, **ids}


def write_float(source: Path, out: Path, type_: str) -> None:
    """Write ``source`` as a GGUF of ``type_`` (``f32`` or ``f16``) at ``out``, one tensor in memory at
    a time (tensor infos first, then each tensor's data)."""
    import gguf

    config, plan = check(source)
    dtype = FLOAT_TYPES[type_]
    file_type = gguf.LlamaFileType.ALL_F32 if type_ == "f32" else gguf.LlamaFileType.MOSTLY_F16
    writer = _writer_class()(str(out), "llama")
    _hyper_parameters(writer, config, file_type, source.name)
    vocab = _vocabulary(writer, source, config)
    print(f"vocabulary: {json.dumps(vocab)}", flush=True)

    def stored(shape: tuple[int, ...]) -> np.dtype:
        return np.dtype(np.float32 if len(shape) <= 1 else dtype)  # norms stay float32

    for name, _, shape, _ in plan:
        writer.add_tensor_info(name, shape, stored(shape), int(np.prod(shape)) * stored(shape).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, _, shape, load in plan:
        writer.write_tensor_data(np.ascontiguousarray(load().astype(stored(shape), copy=False)))
    writer.close()
    print(f"wrote {len(plan)} tensors ({type_}) to {out}: {out.stat().st_size} bytes", flush=True)


def quantize_file(source: Path, out: Path, type_: str) -> None:
    """llama.cpp's quantizer (``llama_model_quantize``, default rules) from a float GGUF to ``type_``."""
    import llama_cpp

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_FTYPES[type_])
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0 or not out.is_file():
        raise RuntimeError(f"llama_model_quantize({source.name} -> {type_}) returned {status}")
    print(f"quantized to {type_} by llama.cpp: {out} ({out.stat().st_size} bytes)", flush=True)


def convert(source: Path, out: Path, type_: str, from_f16: Path | None = None) -> None:
    """``source`` (an HF Llama directory) as a GGUF of ``type_`` at ``out``. A quantized type is made
    from ``from_f16`` (the cached f16 GGUF of the same source) when given, else from a float16 file
    written beside ``out`` first and removed after."""
    if type_ not in TYPES:
        raise UserError(f"GGUF type {type_!r} is not one of {', '.join(TYPES)}")
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    if type_ in FLOAT_TYPES:
        write_float(source, out, type_)
    elif from_f16 is not None:
        print(f"quantizing the cached f16 file {from_f16}", flush=True)
        quantize_file(from_f16, out, type_)
    else:
        intermediate = out.with_name(out.stem + ".f16-intermediate.gguf")
        try:
            write_float(source, intermediate, "f16")
            quantize_file(intermediate, out, type_)
        finally:
            intermediate.unlink(missing_ok=True)
    print(f"done in {time.perf_counter() - started:.1f} s", flush=True)


def is_gguf(path: Path) -> bool:
    """Whether ``path`` is a file that starts with GGUF's magic."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def describe(path: str | Path) -> str:
    """One line for the environment block: the file type and how many tensors of each type it holds
    (``MOSTLY_Q4_0: 180 Q4_0, 61 F32, 1 Q8_0``), read with gguf-py; just the file name's quantization
    when gguf-py is not installed."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        match = re.search(r"[._-]((?:I?Q\d\w*)|F16|F32|BF16)\.gguf$", str(path), re.IGNORECASE)
        return f"{match.group(1).upper() if match else 'unknown type'} (from the file name)"
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields.get("general.file_type")
        file_type = gguf.LlamaFileType(int(field.contents())).name if field is not None else "unknown type"
        counts: dict[str, int] = {}
        for tensor in reader.tensors:
            counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    except Exception as exc:  # noqa: BLE001 - a description only: a file newer than gguf-py must still run
        return f"not readable by gguf-py ({type(exc).__name__}: {exc})"
    return f"{file_type}: " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
