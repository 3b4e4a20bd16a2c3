#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200-b, step 1 of 3 on the GPU host, with the bundle .gpucarryA copied in
# (make-carry-b.sh): unpack vLLM part A, install llmcompare (the bundled snapshot), record the environment, measure the copy
# bandwidth once (llmcompare.hardware.roofline, cached for the later runs), then the transformers variants at
# batch 1, 256 in / 256 out, fp16 first as the agreement reference.
# $OUT gets: b1.log, env.txt, bandwidth.json, run-transformers.tar.gz, agreement-transformers.json.
source benchmarks/gpu/setup.sh
exec > >(tee "$OUT/b1.log") 2>&1
env_block | tee "$OUT/env.txt"
unpack .gpucarryA/A.tar.xz A_done
install_llmcompare || { say "llmcompare install FAILED"; exit 4; }
python3 -m llmcompare.hardware.roofline --json | tee "$OUT/bandwidth.json"
python3 -m llmcompare.hardware.roofline
say "bandwidth done"

timeout -k 10 $(( $(left) - 30 )) python3 -m llmcompare run -q "${SHAPE[@]}" -r 1 -w 2 --timeout 240 \
  -b transformers:fp16 \
  -b transformers:fp16@compile -o compile.compile=true \
  -b transformers:fp16@static -o static.cache_implementation=static \
  -b transformers:bf16 \
  -O /tmp/runs/transformers
rc=$?; say "transformers run rc=$rc"
[ $rc = 0 ] || python3 -m llmcompare report /tmp/runs/transformers
kill_gpu_leftovers
roofline_of transformers
python3 benchmarks/gpu/agreement.py /tmp/runs/transformers=transformers:fp16 /tmp/runs/transformers=compile \
  /tmp/runs/transformers=static /tmp/runs/transformers=transformers:bf16 --json "$OUT/agreement-transformers.json"
bundle transformers
say "b1 done"
