#!/usr/bin/env bash
# benchmarks/results/2026-11-23-h200, last step (bundle .gpucarryE), on the same host after
# h3-exl-bench.sh has run EXL2: exllamav2:fp16 on the 13B shape (with TORCH_CUDA_ARCH_LIST as the extension
# was built: another list makes the extension rebuild at load, which a 120-s --timeout does not survive). The llama.cpp GGUFs go first (disk: the 13B fp16 checkpoint is 26 GB), then the 13B shape's
# fp16 checkpoint is built on the GPU (timed), then one run at batch 1 (256 in / 256 out, 10 prompts after
# 1 warm-up): transformers:fp16 with a static KV cache (label `static`, the agreement reference) and
# exllamav2:fp16. Then the floor per row and greedy agreement. Stops (exit 3) while a conversion still runs.
# $OUT gets: i4.log, run-13b.tar.gz, agreement-13b.json.
source benchmarks/gpu/setup-c.sh
exec > >(tee -a "$OUT/i4.log") 2>&1
export TORCH_CUDA_ARCH_LIST=9.0   # as h-convert.sh built exllamav2's extension
mkdir -p .whl && cp .gpucarryE/lcsnap.tgz .gpucarryE/whl/platformdirs-*.whl .whl/ && install_llmcompare || exit 4
for m in exl3 exl2; do
  if [ -e "/tmp/runs/qlogs/$m.out" ] && ! grep -q "^$m rc=" /tmp/runs/qlogs/status 2>/dev/null; then
    say "STOP: the $m conversion still runs; run h3-exl-bench.sh first"; exit 3
  fi
done
kill_gpu_leftovers
rm -rf /tmp/llmcompare-cache/gguf; df -h /tmp | tail -1
s=$(date +%s)
python3 -c "from llmcompare.models import resolve_model
from llmcompare.models.quantize import fp16_source
print(fp16_source(resolve_model('synthetic:llama-2-13b')))"
say "13B fp16 source rc=$? seconds=$(( $(date +%s) - s ))"; df -h /tmp | tail -1
sync
rm -rf /tmp/runs/13b
timeout -k 10 $(( $(left) - 40 )) python3 -m llmcompare run -q --model synthetic:llama-2-13b --device cuda \
  --input-tokens 256 -n 256 -r 1 -w 1 --no-fidelity --timeout 400 \
  -b transformers:fp16@static -o static.cache_implementation=static -b exllamav2:fp16 -O /tmp/runs/13b
say "13b run rc=$?"
python3 -m llmcompare report /tmp/runs/13b | tail -12
kill_gpu_leftovers
roofline_of 13b
python3 benchmarks/gpu/agreement.py /tmp/runs/13b=static /tmp/runs/13b=exllamav2:fp16 --json "$OUT/agreement-13b.json"
rm -f /tmp/runs/13b/requests.csv
bundle 13b
say "i4 done"
