#!/usr/bin/env bash
# Build the bundles of b1-transformers.sh, b2-vllm.sh and b3-serve-ct2.sh (benchmarks/results/2026-11-22-h200-b):
#   .gpucarryA/  A.tar.xz (vLLM part A), whl/platformdirs, lcsnap.tgz      -> b1-transformers.sh
#   .gpucarryB/  B.tar.xz (vLLM part B), whl/platformdirs, lcsnap.tgz      -> b2-vllm.sh
#   .whl/        ctranslate2 4.8.5 cp312 wheel, platformdirs, lcsnap.tgz   -> b3-serve-ct2.sh
# lcsnap.tgz is the llmcompare that runs on the GPU: the package at commit BASE (default HEAD;
# llmcompare/, backends/, prompts/, pyproject.toml, README.md) with the files in OVERLAY taken from the
# working tree. It is installed instead of the working tree (setup.sh), so work in progress in other
# files never reaches the GPU; LLMCOMPARE_SNAPSHOT inside it names the commit and each overlaid
# file's sha256. benchmarks/results/2026-11-22-h200-b used BASE=90b32b9 (each result file's commit_overlay).
# All three folders must be ignored (.git/info/exclude); never commit them.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
OVERLAY=(${OVERLAY:-llmcompare/roofline.py llmcompare/cuda_compat.py llmcompare/environment.py
         llmcompare/isolation.py llmcompare/report/columns.py})
for d in .gpucarryA .gpucarryB .whl; do
  git check-ignore -q "$d/x" || { echo "add /$d/ to .git/info/exclude first" >&2; exit 2; }
done
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

snap=$(mktemp -d)
BASE=$(git rev-parse "${BASE:-HEAD}")
git archive "$BASE" llmcompare backends prompts pyproject.toml README.md | tar -x -C "$snap"
for f in "${OVERLAY[@]}"; do install -D -m 644 "$f" "$snap/$f"; done
{ echo "base $BASE"; for f in "${OVERLAY[@]}"; do echo "overlay $(sha256sum "$f")"; done; } > "$snap/LLMCOMPARE_SNAPSHOT"
tar -czf /tmp/lcsnap.tgz -C "$snap" . && rm -rf "$snap"

bash benchmarks/gpu/make-carry.sh   # .gpucarryA/{A.tar.xz,whl/} and .gpucarryB/B.tar.xz
mkdir -p .gpucarryB/whl .whl
cp .gpucarryA/whl/platformdirs-*.whl .gpucarryB/whl/
rm -f .whl/*.whl .whl/lcsnap.tgz
cp .gpucarryA/whl/platformdirs-*.whl .whl/
python3 -m pip download -q --no-deps "${PLAT[@]}" -d .whl ctranslate2==4.8.5
for d in .gpucarryA .gpucarryB .whl; do cp /tmp/lcsnap.tgz "$d/"; done
tar -xzOf /tmp/lcsnap.tgz ./LLMCOMPARE_SNAPSHOT
du -b .gpucarryA/* .gpucarryA/whl/* .gpucarryB/* .gpucarryB/whl/* .whl/*
