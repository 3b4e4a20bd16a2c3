"""Fake of ``python -m mlc_llm``: the ``convert_weight`` and ``gen_config`` subcommands.

Mirrors the arguments of mlc-ai/mlc-llm ``python/mlc_llm/cli/convert_weight.py`` and
``cli/gen_config.py`` at commit 79d603f (2026-07-23): a positional HF model directory,
``--quantization`` (required), ``--output/-o`` (required), and for ``gen_config`` a required
``--conv-template`` and an optional ``--context-window-size``. It writes what the engine reads
(``mlc-chat-config.json``, a weight shard and the tokenizer files) and appends its argv to the JSON
lines file named by ``FAKE_MLC_CLI_LOG``, when set, so tests can see each conversion that ran.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

QUANTIZATIONS = ("q0f16", "q0bf16", "q0f32", "q3f16_0", "q3f16_1", "q4f16_0", "q4f16_1", "q4bf16_0", "q4bf16_1",
                 "q4f32_1", "q4f16_2", "q4f16_autoawq", "q4f16_ft")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


def _hf_config(source: str) -> dict:
    path = Path(source)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        sys.exit(f"error: {source}: config.json not found")
    return json.loads(path.read_text())


def convert_weight(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="mlc_llm convert_weight")
    p.add_argument("config")
    p.add_argument("--quantization", required=True, choices=QUANTIZATIONS)
    p.add_argument("--model-type", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--source")
    p.add_argument("--source-format", default="auto")
    p.add_argument("--output", "-o", required=True)
    args = p.parse_args(argv)
    _hf_config(args.config)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "params_shard_0.bin").write_bytes(b"\0" * 64)
    (out / "tensor-cache.json").write_text(json.dumps({"quantization": args.quantization, "records": []}))


def gen_config(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="mlc_llm gen_config")
    p.add_argument("config")
    p.add_argument("--quantization", required=True, choices=QUANTIZATIONS)
    p.add_argument("--model-type", default="auto")
    p.add_argument("--conv-template", required=True)
    p.add_argument("--context-window-size", type=int)
    p.add_argument("--output", "-o", required=True)
    args = p.parse_args(argv)
    hf = _hf_config(args.config)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": hf.get("model_type", "llama"),
        "quantization": args.quantization,
        "conv_template": {"name": args.conv_template},
        "context_window_size": args.context_window_size or hf.get("max_position_embeddings", 2048),
        "eos_token_id": hf.get("eos_token_id"),
    }
    (out / "mlc-chat-config.json").write_text(json.dumps(config, indent=2))
    src = Path(args.config)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, out / name)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("convert_weight", "gen_config"):
        sys.exit("error: the fake mlc_llm CLI mirrors only convert_weight and gen_config")
    command, argv = sys.argv[1], sys.argv[2:]
    log = os.environ.get("FAKE_MLC_CLI_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps([command, *argv]) + "\n")
    {"convert_weight": convert_weight, "gen_config": gen_config}[command](argv)


if __name__ == "__main__":
    main()
