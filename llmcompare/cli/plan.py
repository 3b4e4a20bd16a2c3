"""``llmcompare plan``: memory, KV-cache capacity and the bandwidth floor of a model on an accelerator
(the JumpStart guide's formulas; no run)."""

from __future__ import annotations

import argparse
import json

from llmcompare.hardware.gpus import get_accelerator, known_names
from llmcompare.hardware.plan import (
    DEFAULT_CONTEXT,
    DEFAULT_RESERVE,
    KV_DTYPES,
    WEIGHT_DTYPES,
    load_model_config,
    plan,
    print_plan,
)

HELP = "memory, KV-cache capacity and bandwidth floor of a model on an accelerator (no run)"
DESCRIPTION = ("Roofline and capacity arithmetic (the JumpStart guide's formulas): what fits, the critical batch, the"
               " batch-1 floor in ms/token, and the best-case cost per 1M output tokens.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default=None,
                   help="HF model directory, GGUF file or synthetic:<shape> (default: SmolLM2-135M-Instruct's GGUF)")
    p.add_argument("--gpu", "-g", required=True, metavar="NAME", help=f"accelerator: {', '.join(known_names())}")
    p.add_argument("--context", "-c", type=int, default=DEFAULT_CONTEXT, metavar="TOKENS",
                   help=f"tokens in the KV cache per sequence, prompt plus output (default {DEFAULT_CONTEXT})")
    p.add_argument("--dtype", default="fp16", choices=WEIGHT_DTYPES, help="weight type (default fp16)")
    p.add_argument("--kv-dtype", default=None, choices=KV_DTYPES,
                   help="KV-cache type (default: --dtype for fp16/bf16/fp32, else fp16)")
    p.add_argument("--n-gpus", type=int, default=1, metavar="N",
                   help="tensor-parallel degree: weights and KV heads split over N accelerators (default 1)")
    p.add_argument("--price-per-hour", type=float, default=None, metavar="USD",
                   help="price of the N accelerators together, $/h: adds the cost per 1M output tokens")
    p.add_argument("--bandwidth-gbs", type=float, default=None, metavar="GB/S",
                   help="a measured memory bandwidth in GB/s, used instead of the datasheet's")
    p.add_argument("--reserve", type=float, default=DEFAULT_RESERVE, metavar="FRACTION",
                   help=f"share of memory kept for activations and the runtime (default {DEFAULT_RESERVE})")
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Run ``llmcompare plan``; bad input raises :class:`~llmcompare.errors.UserError`. Returns 0."""
    config = load_model_config(args.model)
    gpu = get_accelerator(args.gpu)
    if args.bandwidth_gbs is not None:
        gpu = gpu.with_bandwidth(args.bandwidth_gbs)
    result = plan(config, gpu, args.context, dtype=args.dtype, kv_dtype=args.kv_dtype,
                  price_per_hour=args.price_per_hour, n_gpus=args.n_gpus, reserve_fraction=args.reserve)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print_plan(result)
    return 0
