#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200-b, step 2 of 3 (bundle .gpucarryB; must follow b1-transformers.sh on the
# same host, with its /tmp intact): unpack vLLM part B, then the load driver's concurrency sweep (first: it is the priority),
# then llmcompare's vllm adapter at batch 1 (the run that reports % of the floor).
# $OUT gets: b2.log, env.txt, run-vllm-load.tar.gz, run-vllm-latency.tar.gz.
source benchmarks/gpu/setup.sh
exec > >(tee "$OUT/b2.log") 2>&1
[ -e /tmp/gpustate/A_done ] || { say "STATE LOST: part A is not in /tmp/site (the host did not keep /tmp since the earlier step)"; exit 3; }
unpack .gpucarryB/B.tar.xz B_done
install_llmcompare || { say "llmcompare install FAILED"; exit 4; }
env_block | tee "$OUT/env.txt"
python3 -m llmcompare.hardware.roofline

# The load driver: closed-loop concurrency levels, 30 s of sending each. The price is Spheron's
# published on-demand H200 rate ($4.54/h, 17 March 2026), an illustration, not this machine's cost.
timeout -k 10 $(( $(left) - 150 )) python3 -m llmcompare load -q "${SHAPE[@]}" -b vllm:fp16 "${VLLM_OPTS[@]}" \
  -c ${LEVELS:-1,8,32,64,128,256,512} --duration ${DURATION:-30} --price-per-hour 4.54 \
  --slo ttft_ms=1000,tpot_ms=50 -O /tmp/runs/vllm-load
rc=$?; say "vllm load run rc=$rc"
[ $rc = 0 ] || python3 -m llmcompare report /tmp/runs/vllm-load
kill_gpu_leftovers
bundle vllm-load

timeout -k 10 $(( $(left) - 20 )) python3 -m llmcompare run -q "${SHAPE[@]}" -r 2 -w 1 -b vllm:fp16 "${VLLM_OPTS[@]}" \
  -O /tmp/runs/vllm-latency
rc=$?; say "vllm latency run rc=$rc"
[ $rc = 0 ] || python3 -m llmcompare report /tmp/runs/vllm-latency
kill_gpu_leftovers
roofline_of vllm-latency
bundle vllm-latency
say "b2 done"
