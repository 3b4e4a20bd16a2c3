#!/usr/bin/env bash
# Build the bundles of c1-bnb.sh and c2-exllama.sh (benchmarks/results/2026-11-22-h200-c):
#   .gpucarryC/  lcsnap.tgz + whl/: platformdirs, rapidfuzz, bitsandbytes 0.50.2           -> c1-bnb.sh
#   .gpucarryD/  lcsnap.tgz + whl/: platformdirs, rapidfuzz, exllamav2 0.3.2 (+ fastparquet,
#                cramjam, websockets), exllamav3 1.6.5 (+ marisa-trie, pydantic, pydantic-core,
#                annotated-types, typing-inspection, llguidance)                           -> c2-exllama.sh
# lcsnap.tgz is the llmcompare that runs on the GPU: the package at commit BASE (default HEAD;
# llmcompare/, backends/, prompts/, pyproject.toml, README.md), plus the files named in OVERLAY (default
# none) taken from the working tree; LLMCOMPARE_SNAPSHOT inside it names the commit and each overlaid
# file's sha256. setup-c.sh installs it instead of the working tree. The commit (and overlay) behind each
# result of benchmarks/results/2026-11-22-h200-c is in its result file.
# Both folders must be ignored (.git/info/exclude); never commit them. Everything else in the image
# (torch 2.11, transformers 5.17, numpy, pandas, safetensors, sentencepiece, ninja, ...) is used as is.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
OVERLAY=(${OVERLAY:-})
for d in .gpucarryC .gpucarryD; do
  git check-ignore -q "$d/x" || { echo "add /$d/ to .git/info/exclude first" >&2; exit 2; }
done
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
get() { python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$@"; }

snap=$(mktemp -d)
BASE=$(git rev-parse "${BASE:-HEAD}")
git archive "$BASE" llmcompare backends prompts pyproject.toml README.md | tar -x -C "$snap"
for f in "${OVERLAY[@]}"; do install -D -m 644 "$f" "$snap/$f"; done
{ echo "base $BASE"; for f in "${OVERLAY[@]}"; do echo "overlay $(sha256sum "$f")"; done; } > "$snap/LLMCOMPARE_SNAPSHOT"
tar -czf /tmp/lcsnap.tgz -C "$snap" . && rm -rf "$snap"

rm -rf .gpucarryC .gpucarryD
mkdir -p .gpucarryC/whl .gpucarryD/whl
for d in .gpucarryC .gpucarryD; do
  get "$d/whl" platformdirs==4.14.7 rapidfuzz==3.14.6
  cp /tmp/lcsnap.tgz "$d/"
done
get .gpucarryC/whl bitsandbytes==0.50.2      # py3-none-manylinux_2_24 wheel; ships libbitsandbytes_cuda130.so
get .gpucarryD/whl exllamav2==0.3.2 fastparquet==2026.9.0 cramjam==2.14.0 websockets==17.4 \
    exllamav3==1.6.5 marisa-trie==1.4.1 pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 \
    typing-inspection==0.4.5 llguidance==1.6.1
tar -xzOf /tmp/lcsnap.tgz ./LLMCOMPARE_SNAPSHOT
du -b .gpucarryC/* .gpucarryC/whl/* .gpucarryD/* .gpucarryD/whl/*
