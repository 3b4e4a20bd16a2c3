#!/usr/bin/env bash
# Build the bundles of the tensor-parallel steps (f1-tp.sh, f2-tp.sh on a host with 2 × H200;
# benchmarks/results/2026-11-22-h200x2).
# Builds .gpucarryA/ (vLLM 0.26 part A) and .gpucarryB/ (part B, platformdirs, rapidfuzz, lcsnap.tgz of
# HEAD with no overlay) through make-carry-b.sh. rapidfuzz (a core dependency since the fidelity pass)
# goes in B only: A with the working tree is close to the 64 MiB limit of one transfer.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
OVERLAY=' ' bash benchmarks/gpu/make-carry-b.sh
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 -d .gpucarryB/whl rapidfuzz==3.14.6
rm -f .gpucarryA/lcsnap.tgz   # llmcompare is installed in f2, after part B
du -sb .gpucarryA .gpucarryB; git ls-files -z | xargs -0 du -cb | tail -1
