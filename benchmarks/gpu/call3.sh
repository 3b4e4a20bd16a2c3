#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200, step 3 of 3 (no bundle; after call2.sh on the same host): vLLM tuning knobs at batch 1
# (CUDA graphs off = enforce_eager, async scheduling off) and the harness overhead against a bare
# AsyncLLM loop in the same process. $OUT gets: call3.log, run-vllm-knobs.tar.gz, overhead.json.
source benchmarks/gpu/setup.sh
exec > >(tee "$OUT/call3.log") 2>&1
[ -e /tmp/gpustate/B_done ] || { say "STATE LOST: vLLM is not in /tmp/site (the host did not keep /tmp since the earlier step)"; exit 3; }
install_llmcompare || { say "llmcompare install FAILED"; exit 4; }

timeout -k 10 200 python3 benchmarks/gpu/vllm_overhead.py --rounds 3 --json "$OUT/overhead.json" "${VLLM_OPTS[@]}"
say "overhead rc=$?"
kill_gpu_leftovers

timeout -k 10 $(( $(left) - 25 )) python3 -m llmcompare run -q "${SHAPE[@]}" -r 2 -w 1 "${VLLM_OPTS[@]}" \
  -b vllm:fp16@sync-sched -o sync-sched.async_scheduling=false \
  -b vllm:fp16@eager -o eager.enforce_eager=true \
  -O /tmp/runs/vllm-knobs
rc=$?; say "vllm knobs run rc=$rc"
[ $rc = 0 ] || python3 -m llmcompare report /tmp/runs/vllm-knobs
kill_gpu_leftovers
bundle vllm-knobs
say "call3 done"
