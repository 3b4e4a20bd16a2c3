"""The study driver's own cost per cell, local executor against Ray, on echo cells.

For each executor and each study size N, a study of N echo cells (batch-1 scenario, one token, one
repeat: each cell is a full ``python -m llmcompare`` run that does almost nothing) is run with
``python -m llmcompare study run`` (the registered command) from a fresh directory, timed from outside. The driver's overhead is
the study's wall time less the time the cells' CLI subprocesses themselves took (``cli_wall_s`` in
``study.json``). Fitting ``overhead = fixed + per_cell × N`` over the sizes separates what a study pays
once (for Ray: the private network namespace, starting the local instance, shutting it down) from what
each cell adds (writing the manifest, starting the launcher; for Ray: scheduling the task, the tar of the
run directory and unpacking it).

    python benchmarks/study_overhead.py                       # local and ray, 2 and 6 cells
    python benchmarks/study_overhead.py --executors local --cells 1,4,8 --json out.json

Cells run one at a time on a CPU host under both executors, so the two are compared like for like.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """\
name: overhead
model: synthetic:smollm2-135m
scenario: run
workload: {{max_new_tokens: 1, repeats: 1, warmup: 1}}
hardware:
  cpu: {{}}
matrix:
  backend: [echo]
  option: [{options}]
"""


def run_once(executor: str, n: int, workdir: Path) -> dict:
    study = workdir / f"overhead-{executor}-{n}.yaml"
    study.write_text(STUDY.format(options=", ".join(f'"ttft_ms={i}"' for i in range(n))), encoding="utf-8")
    out = workdir / f"study-{executor}-{n}"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "llmcompare", "study", "run", str(study), "-O", str(out),
                           "--executor", executor, "-q"], capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{executor} with {n} cells failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    cells = json.loads((out / "study.json").read_text())["cells"]
    cli = sum(c.get("cli_wall_s") or 0.0 for c in cells)
    return {"executor": executor, "cells": n, "wall_s": wall, "cli_wall_s": cli, "overhead_s": wall - cli,
            "overhead_per_cell_s": (wall - cli) / n}


def fit(rows: list[dict]) -> tuple[float, float]:
    """Least squares ``overhead_s = fixed + per_cell × cells``."""
    xs = [r["cells"] for r in rows]
    ys = [r["overhead_s"] for r in rows]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")
    return my - slope * mx, slope


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--cells", default="2,6", help="study sizes, comma separated (at least two for the fit)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    sizes = [int(x) for x in args.cells.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="study-overhead-") as tmp:
        for executor in args.executors.split(","):
            for n in sizes:
                r = run_once(executor, n, Path(tmp))
                rows.append(r)
                print(f"{executor:>5}  {n:>2} cells  wall {r['wall_s']:7.1f} s  cells' CLI {r['cli_wall_s']:7.1f} s"
                      f"  driver {r['overhead_s']:6.1f} s  ({r['overhead_per_cell_s']:.2f} s per cell)", flush=True)
    summary = {}
    for executor in args.executors.split(","):
        mine = [r for r in rows if r["executor"] == executor]
        fixed, per_cell = fit(mine) if len(mine) > 1 else (float("nan"), mine[0]["overhead_per_cell_s"])
        summary[executor] = {"fixed_s": fixed, "per_cell_s": per_cell}
        print(f"{executor:>5}: fixed {fixed:.2f} s per study, {per_cell:.2f} s per cell")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "host": platform.node(), "python": platform.python_version(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "runs": rows, "fit": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
