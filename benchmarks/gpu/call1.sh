#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200, step 1 of 3 on the GPU host (bundle .gpucarryA): unpack vLLM part A,
# install llmcompare (editable), record the
# environment, measure copy bandwidth, then the transformers variants at batch 1, 256 in / 256 out.
# $OUT gets: call1.log, env.txt, bandwidth.json, run-transformers.tar.gz.
source benchmarks/gpu/setup.sh
exec > >(tee "$OUT/call1.log") 2>&1
env_block | tee "$OUT/env.txt"
unpack .gpucarryA/A.tar.xz A_done
install_llmcompare || { say "llmcompare install FAILED"; exit 4; }
python3 -m llmcompare backends
python3 benchmarks/gpu/bandwidth.py | tee "$OUT/bandwidth.json"
say "bandwidth done"

# Same shape and repeats as the 2026-11-21 run (-r 1 -w 2), plus transformers' static cache with the
# adapter's own torch.compile (compile=true: forward compiled with mode=reduce-overhead).
timeout -k 10 $(( $(left) - 25 )) python3 -m llmcompare run -q "${SHAPE[@]}" -r 1 -w 2 \
  -b transformers:fp16 -b transformers:bf16 \
  -b transformers:fp16@static -o static.cache_implementation=static \
  -b transformers:fp16@static-compile -o static-compile.cache_implementation=static -o static-compile.compile=true \
  -O /tmp/runs/transformers
rc=$?; say "transformers run rc=$rc"
[ $rc = 0 ] || python3 -m llmcompare report /tmp/runs/transformers
kill_gpu_leftovers
bundle transformers
say "call1 done"
