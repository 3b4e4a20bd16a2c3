"""``llmcompare bandwidth [RUN_DIR]``: the GPU's copy bandwidth (measured once per GPU and driver,
cached), or a run's batch-1 floor against its TPOT p50 (:mod:`llmcompare.hardware.roofline`)."""

from __future__ import annotations

import argparse
import json

from llmcompare.analysis.result import load_result
from llmcompare.hardware.roofline import ASSUMPTION, print_bandwidth

HELP = "the GPU's copy bandwidth (measured once, cached), or a run's % of the decode floor"
DESCRIPTION = ("Measure the device-to-device copy bandwidth once per GPU and driver (cached), or print a run's batch-1"
               " floor, (weight bytes + KV bytes read) / bandwidth, against its TPOT p50.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", default=None,
                   help="a run directory: print its floor and %% of floor per backend (default: the device's bandwidth)")
    p.add_argument("--device", default="cuda", help="CUDA device to measure, cuda or cuda:K (default cuda)")
    p.add_argument("--force", action="store_true", help="measure again even if a figure is cached")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    if args.run_dir:
        return _print_run(args.run_dir, args.json)
    return print_bandwidth(args)


def _print_run(run_dir: str, as_json: bool) -> int:
    result = load_result(run_dir)
    rows = [{"backend": s.backend, "stage": s.stage, **s.info["roofline"]}
            for s in result.summaries if "roofline" in s.info]
    if as_json:
        print(json.dumps({"bandwidth": result.environment.get("bandwidth"), "backends": rows}, indent=2))
        return 0
    bw = result.environment.get("bandwidth") or {}
    if not bw.get("bytes_per_s"):
        print(f"{run_dir}: no bandwidth in the environment block ({bw or 'not recorded'}); no floor")
        return 0
    print(f"bandwidth {bw['bytes_per_s'] / 1e9:,.1f} GB/s ({bw.get('source')}, {bw.get('method')}); {ASSUMPTION}")
    for r in rows:
        if "error" in r:
            print(f"  {r['backend']} [{r['stage']}]: no floor: {r['error']}")
            continue
        tpot, pct = r["tpot_p50_ms"], r["percent_of_floor"]
        over = f" over {r['n_gpus']} GPUs" if r.get("n_gpus", 1) > 1 else ""
        print(f"  {r['backend']} [{r['stage']}]: {r['weight_dtype']} weights {r['weight_bytes'] / 1e9:.2f} GB + KV"
              f" {r['kv_bytes'] / 1e9:.3f} GB at {r['context_tokens']} tokens"
              f"{over} -> floor {r['ms_per_token']:.3f} ms/token;"
              f" TPOT p50 {'–' if tpot is None else f'{tpot:.3f}'} ms = {'–' if pct is None else f'{pct:.1f}%'} of the floor")
    return 0


