#!/usr/bin/env bash
# benchmarks/results/2026-11-23-h200, step 2 (bundles .gpucarryE and .gpucarryG), on the same host after h1-start.sh:
# the llama-cpp-python build's rest when h1's stopped at the step's time limit (g1-llamacpp-build.sh, GGUF=0:
# g2 makes the GGUFs), then g2-llamacpp-bench.sh in the time left (the GGUFs, then the llama.cpp run at
# batch 1 with the background conversions paused). g1 exit 5 means: run this again.
T=$(date +%s)
if [ ! -e /tmp/gpustate/llamacpp-cuda ]; then
  GGUF=0 bash benchmarks/gpu/g1-llamacpp-build.sh; rc=$?
  [ $rc = 0 ] || exit $rc
fi
CALL_LIMIT=$(( 585 - $(date +%s) + T )) bash benchmarks/gpu/g2-llamacpp-bench.sh
