#!/usr/bin/env bash
# Live check of the transformers backend on CUDA, on the GPU host:
#   copy the bundle .whl (platformdirs, from make-wheels.sh) in, then run this from the repository root.
# Writes to $OUT: nvidia-smi.csv, bandwidth.json, conformance.txt, console.txt and the run's
# requests.jsonl / results.json / summary.md.
source benchmarks/gpu/setup.sh
install_llmcompare || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.csv"
python3 -m llmcompare backends
python3 benchmarks/gpu/bandwidth.py | tee "$OUT/bandwidth.json"
python3 - <<'PY' 2>&1 | tee "$OUT/conformance.txt"
from llmcompare.testing import check_backend
for variant in ("fp16", "bf16"):
    print(check_backend("transformers", model="synthetic:smollm2-135m", device="cuda", variant=variant, max_new_tokens=16))
PY
python3 -m llmcompare -b transformers:fp16 -b transformers:bf16 -b transformers:fp16@fp16-static \
  -o fp16-static.cache_implementation=static --model synthetic:llama-2-7b --device cuda \
  --input-tokens 256 -n 256 -r 1 -w 2 -O /tmp/run-llama2-7b 2>&1 | tee "$OUT/console.txt"
cp /tmp/run-llama2-7b/requests.jsonl /tmp/run-llama2-7b/results.json /tmp/run-llama2-7b/summary.md "$OUT/"
tail -n 5 /tmp/run-llama2-7b/logs/*.log
