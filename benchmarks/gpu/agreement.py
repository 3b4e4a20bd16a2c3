"""Greedy agreement with a reference, per prompt: the length of the prefix of output token ids two
backends share, read from the runs' ``requests.jsonl`` (each request keeps its ``token_ids``).

    python benchmarks/gpu/agreement.py REF_RUN=REF_LABEL RUN=LABEL [RUN=LABEL ...] [--json OUT]

The runs may differ (a CPU run against a CUDA run of the same model). For each prompt id, the first
successful measured request of each side is compared (warm-ups excluded); a prompt missing on either
side is skipped and counted. Only the stages named ``--stage`` (default: the latency stages) count.
Prints, per backend: prompts compared, the agreeing-prefix length per
prompt, its mean and minimum, and how many prompts agree on every token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def first_outputs(run_dir: str, label: str, stage: str = "latency") -> dict[str, list[int]]:
    """prompt id (with its stage) -> token ids of the first successful measured request of ``label``,
    in the stages whose name starts with ``stage``."""
    out: dict[str, list[int]] = {}
    path = Path(run_dir) / "requests.jsonl"
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a truncated last line
            if r.get("type") != "request" or r.get("backend") != label or r.get("warmup") or r.get("error"):
                continue
            if not str(r.get("stage", "latency")).startswith(stage):
                continue
            key = f"{r.get('stage', 'latency')}/{r['prompt_id']}"
            out.setdefault(key, [int(t) for t in r.get("token_ids") or []])
    if not out:
        raise SystemExit(f"{path}: no successful measured request of backend {label!r}")
    return out


def prefix(a: list[int], b: list[int]) -> int:
    """Index of the first differing token (the shorter length when one is a prefix of the other)."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def compare(ref: dict[str, list[int]], other: dict[str, list[int]]) -> dict:
    keys = [k for k in ref if k in other]
    per = {k: {"prefix": prefix(ref[k], other[k]), "length": min(len(ref[k]), len(other[k]))} for k in keys}
    prefixes = [v["prefix"] for v in per.values()]
    return {
        "prompts": len(keys), "missing": len(set(ref) ^ set(other)),
        "mean_prefix": statistics.fmean(prefixes) if prefixes else None,
        "min_prefix": min(prefixes) if prefixes else None,
        "identical": sum(1 for v in per.values() if v["prefix"] == v["length"]),
        "per_prompt": per,
    }


def _pair(text: str) -> tuple[str, str]:
    run, sep, label = text.partition("=")
    if not sep or not run or not label:
        raise argparse.ArgumentTypeError(f"expected RUN_DIR=LABEL, got {text!r}")
    return run, label


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reference", type=_pair, help="RUN_DIR=LABEL of the reference")
    p.add_argument("others", type=_pair, nargs="+", help="RUN_DIR=LABEL of each backend to compare")
    p.add_argument("--stage", default="latency", help="compare stages whose name starts with this (default latency)")
    p.add_argument("--json", default=None, help="also write the full comparison here")
    args = p.parse_args(argv)
    ref = first_outputs(*args.reference, stage=args.stage)
    report = {"reference": "=".join(args.reference), "backends": {}}
    print(f"reference {args.reference[1]} ({args.reference[0]}): {len(ref)} prompts")
    for run, label in args.others:
        try:
            outputs = first_outputs(run, label, stage=args.stage)
        except SystemExit as missing:  # a backend that failed: said, and the others still compared
            print(f"  {label} ({run}): not compared: {missing}")
            report["backends"][f"{run}={label}"] = {"error": str(missing)}
            continue
        c = compare(ref, outputs)
        report["backends"][f"{run}={label}"] = c
        lengths = [v["length"] for v in c["per_prompt"].values()]
        print(f"  {label} ({run}): {c['prompts']} prompts, agreeing prefix mean {c['mean_prefix']:.1f}"
              f" min {c['min_prefix']} of {max(lengths) if lengths else 0} tokens; identical {c['identical']}/{c['prompts']};"
              f" per prompt {[v['prefix'] for v in c['per_prompt'].values()]}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
