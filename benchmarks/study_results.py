"""A study's cells as compact result files, the ones docs/results.md is written from.

    python benchmarks/study_results.py STUDY_DIR --commit HASH [-O benchmarks/results] [--date 2026-12-10]

For each hardware entry of the study, one folder ``<date>-<hardware>-<study name>/`` under ``-O`` (default
``benchmarks/results``), holding one JSON per finished cell (its run, as every other result file: ``run``,
``title``, ``date``, ``hardware``, ``commit``, ``command``, ``environment``, ``figures``), read from the
cell's run directory (``results.json``, ``levels.csv``) and the study's ``study.json``. Then
``python benchmarks/results_md.py`` writes docs/results.md with a section per file, and a template
place-holder ``{{overview FOLDER}}`` renders a batch-1 table from that folder alone: one row per
backend of its cells, sorted by TPOT p50 (benchmarks/gpu/README.md).

``--commit`` is the llmcompare commit that ran the study (a pack's ``pack.json`` names it:
``llmcompare.commit``); the cells do not record it. Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SUMMARY_KEYS = ("backend", "status", "error", "stage", "n_requests", "n_errors", "n_length_mismatch", "output_tokens",
                "throughput_tok_s", "ttft_ms", "tpot_ms", "e2e_ms", "load_s", "peak_rss_bytes", "gpu_peak_bytes")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def utc(stamp: str | None) -> str | None:
    if not stamp:
        return None
    try:
        dt = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def hardware_of(env: dict, entry: dict) -> dict:
    gpus = env.get("gpus") or []
    g = gpus[0] if gpus else {}
    return {"gpu": g.get("name") or (entry.get("accelerator") or "cpu"), "gpu_count": len(gpus) or entry.get("count", 1),
            **({"gpu_memory_mib": round(g["memory_bytes"] / 2**20)} if g.get("memory_bytes") else {}),
            "driver": g.get("driver") or "–", "cuda": g.get("cuda_driver") or "–", "cpu": env.get("cpu"),
            "cpu_count": env.get("cpu_count_logical"), "ram_bytes": env.get("ram_bytes"), "os": env.get("os")}


def backend_figures(s: dict) -> dict:
    info = s.get("info") or {}
    out = {k: s.get(k) for k in SUMMARY_KEYS if k in s}
    out["engine"] = info.get("name", s["backend"]) + (f":{info['variant']}" if info.get("variant") else "")
    out["options"] = info.get("options") or {}
    if s.get("tok_s"):
        out["tok_s_per_request"] = {k: s["tok_s"].get(k) for k in ("mean", "p50", "std")}
    out["ci95"] = {k: [v["lo"], v["hi"]] for k, v in (s.get("ci") or {}).items() if isinstance(v, dict) and "lo" in v}
    if info.get("gpu_memory"):
        out["gpu_memory"] = info["gpu_memory"]
    out["versions"] = info.get("versions") or {}
    roof = info.get("roofline") or {}
    if roof.get("ms_per_token"):
        out["floor"] = {**{k: roof.get(k) for k in ("weight_dtype", "weight_bytes", "kv_bytes", "context_tokens",
                                                     "bandwidth_bytes_per_s", "n_gpus", "ms_per_token",
                                                     "percent_of_floor")},
                        "source": "llmcompare's roofline in the cell's results.json"}
    energy = info.get("energy") or {}
    if energy.get("joules_per_token") is not None:  # NVML, over the timed requests (docs/telemetry.md)
        out["energy"] = {k: energy.get(k) for k in ("seconds", "joules", "mean_power_w", "method", "output_tokens",
                                                   "joules_per_token", "tokens_per_joule", "sm_util_mean_pct")}
    return out


def _num(v: str):
    if v is None or v == "":
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return v
    return int(x) if x.is_integer() and "." not in v else x


def level_figures(path: Path) -> list[dict]:
    """``levels.csv`` rows in the compact form (ttft_ms/tpot_ms as percentile mappings)."""
    if not path.exists():
        return []
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            r = {k: _num(v) for k, v in row.items()}
            lv = {"backend": r.get("backend"), "concurrency": r.get("concurrency"), "requests": r.get("requests"),
                  "errors": r.get("errors"), "output_tok_s": r.get("output_tok_s"),
                  "ttft_ms": {p: r.get(f"ttft_{p}_ms") for p in ("p50", "p90", "p99")},
                  "tpot_ms": {p: r.get(f"tpot_{p}_ms") for p in ("p50", "p90", "p99")},
                  "goodput_req_s": r.get("goodput_req_s"), "meets_slo": str(row.get("meets_slo")) == "True",
                  "cost_per_1m_tokens": r.get("cost_per_1m_tokens") if r.get("cost_per_1m_tokens") != "" else None}
            out.append(lv)
    return out


def convert(study_dir: Path, out_root: Path, commit: str, date: str | None = None) -> list[Path]:
    manifest = json.loads((study_dir / "study.json").read_text(encoding="utf-8"))
    study = manifest["study"]
    written = []
    for cell in manifest["cells"]:
        if cell.get("status") != "done":
            continue
        cell_dir = study_dir / "cells" / cell["id"]
        results = json.loads((cell_dir / "results.json").read_text(encoding="utf-8"))
        env = results.get("environment") or {}
        when = utc(cell.get("ended")) or utc(cell.get("started")) or datetime.now(timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        folder = f"{date or when[:10]}-{slug(cell['hardware'])}-{slug(study['name'])}"
        name = slug(cell["name"].removeprefix(cell["hardware"] + " · ").replace("@", " at "))
        name = name if cell.get("kind", "cell") == "cell" else f"{name}-{cell['id']}"
        doc = {
            "run": f"{folder}/{name}",
            "title": f"{cell['name'].removeprefix(cell['hardware'] + ' · ')} (study {study['name']}, cell {cell['id']})",
            "date": when,
            "date_source": "the cell's end time in study.json",
            "hardware": hardware_of(env, (study.get("hardware") or {}).get(cell["hardware"], {})),
            "commit": commit,
            "commit_source": "given to benchmarks/study_results.py (--commit)",
            "command": "llmcompare " + " ".join(cell["argv"]),
            "study": {"name": study["name"], "cell": cell["id"], "hardware": cell["hardware"],
                      "price_per_hour": cell.get("price_per_hour")},
            "spec": results.get("spec"),
            "environment": env,
            "figures": {"backends": [backend_figures(s) for s in results.get("summaries") or []]},
            "notes": [],
        }
        levels = level_figures(cell_dir / "levels.csv")
        if levels:
            doc["figures"]["levels"] = levels
        path = out_root / f"{doc['run']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_dir", type=Path)
    ap.add_argument("--commit", required=True, help="the llmcompare commit that ran the study (pack.json names it)")
    ap.add_argument("-O", "--output", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--date", default=None, help="the folders' date (default: each cell's end, UTC)")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[0-9a-f]{7,40}", args.commit):
        print("study_results: --commit takes a commit hash", file=sys.stderr)
        return 2
    for p in convert(args.study_dir, args.output, args.commit, args.date):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
