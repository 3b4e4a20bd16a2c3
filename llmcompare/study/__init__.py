"""Studies: "which configuration should I deploy?" as one resumable matrix of llmcompare runs.

A study file (YAML) names a model, a scenario (``run`` or ``load``) and its workload, an SLO, the
hardware cells may run on with its price, and a matrix of backends, options, models, hardware and
scenario flags. ``llmcompare study run`` turns each cell into an ordinary llmcompare run directory by
running the CLI in a subprocess, prunes cells that cannot fit or cannot meet the SLO before anything
starts, re-measures each deployment's highest level that meets the SLO, and answers with the three
seeds' questions (most cost-effective, best latency, best throughput) with 95% intervals. See
docs/studies.md.

Nothing here imports an engine or Ray at import time.
"""

from llmcompare.study.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
