#!/usr/bin/env bash
# Build the bundles for the offline GPU host (no network there; each transfer to it, code included, is at
# most 64 MiB, so vLLM goes in two parts):
#   .gpucarryA/A.tar.xz   vLLM 0.26.0 part A (vllm/_C_stable_libtorch.abi3.so)                    -> call1.sh
#   .gpucarryA/whl/       platformdirs, the one llmcompare dependency the GPU image lacks        -> call1.sh
#   .gpucarryB/B.tar.xz   vLLM 0.26.0 part B (the rest of vllm and its 59 other wheels)         -> call2.sh
# (A once also held mistral_common and pycountry: 62.4 MB, which with the grown working tree went over
# 64 MiB. build_archives.sh now puts them in B.)
# Both folders must be ignored (.git/info/exclude: /.gpucarryA/ and /.gpucarryB/): never commit them.
# The archives come from vllm-0.26/build_archives.sh (wheels.txt lists every wheel and what is stripped).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
for d in .gpucarryA .gpucarryB; do
  git check-ignore -q "$d/x" || { echo "add /$d/ to .git/info/exclude first" >&2; exit 2; }
done
if [ ! -s /tmp/vw-arch/A.tar.xz ] || [ ! -s /tmp/vw-arch/B.tar.xz ]; then
  PY312=${PY312:-$(command -v python3.12)} bash benchmarks/gpu/vllm-0.26/build_archives.sh
fi
rm -rf .gpucarryA .gpucarryB
mkdir -p .gpucarryA/whl .gpucarryB
cp /tmp/vw-arch/A.tar.xz .gpucarryA/
cp /tmp/vw-arch/B.tar.xz .gpucarryB/
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d .gpucarryA/whl platformdirs
du -b .gpucarryA/* .gpucarryA/whl/* .gpucarryB/*
