#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200-d, step 2, on the same host after d1-quant.sh: finish any
# conversion d1 left (EXL2/EXL3 resume; a finished one is a cache hit), then, with nothing else on the
# GPU, one llmcompare run of every 7B variant these steps add, at batch 1 (256 in / 256 out, 10 prompts
# after 1 warm-up): transformers:fp16 (the agreement reference), exllamav2:fp16 (causal prefill now),
# exllamav2:gptq, transformers:gptq (the same GPTQ checkpoint through optimum/gptqmodel), exllamav2:exl2,
# exllamav3:exl3. Then the floor per row and greedy agreement (with transformers:fp16, and exllamav2:gptq
# with transformers:gptq). $OUT gets: d2.log, run-quant.tar.gz, agreement-quant.json, quant-logs-d2.tar.gz.
source benchmarks/gpu/setup-c.sh
exec > >(tee "$OUT/d2.log") 2>&1
mkdir -p .whl && cp .gpucarryE/lcsnap.tgz .gpucarryE/whl/platformdirs-*.whl .whl/ && install_llmcompare || exit 4
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
QUANT_BUDGET=${QUANT_BUDGET:-330}   # seconds the unfinished conversions may take before the runs start
mkdir -p /tmp/runs/qlogs
quants=()   # (wait names its pids: a bare wait would also wait for the tee of exec > >(tee))
for m in gptq exl2 exl3; do
  ( s=$(date +%s); timeout -k 10 "$QUANT_BUDGET" python3 -m llmcompare.models.quantize "$m" -m synthetic:llama-2-7b \
      --log-dir "/tmp/runs/qlogs/$m" > "/tmp/runs/qlogs/$m-d2.out" 2>&1
    echo "$m (d2) rc=$? seconds=$(( $(date +%s) - s ))" >> /tmp/runs/qlogs/status ) &
  quants+=($!)
done
wait "${quants[@]}"
cat /tmp/runs/qlogs/status
tar -czf "$OUT/quant-logs-d2.tar.gz" -C /tmp/runs qlogs
kill_gpu_leftovers
BACKENDS=(-b transformers:fp16 -b exllamav2:fp16)
for pair in exllamav2:gptq exllamav2:exl2 exllamav3:exl3 transformers:gptq; do
  m=${pair#*:}; grep -q "^$m.* rc=0 " /tmp/runs/qlogs/status && BACKENDS+=(-b "$pair") || say "no $m checkpoint: $pair left out"
done
rm -rf /tmp/runs/quant
say "running ${BACKENDS[*]} ($(left) s left)"
timeout -k 10 $(( $(left) - 30 )) python3 -m llmcompare run -q "${SHAPE[@]}" -r 1 -w 1 --no-fidelity --timeout 120 \
  "${BACKENDS[@]}" -O /tmp/runs/quant
rc=$?; say "quant run rc=$rc"
python3 -m llmcompare report /tmp/runs/quant | tail -25
kill_gpu_leftovers
roofline_of quant
ARGS=()   # every backend of the run but the reference; agreement.py says which had no successful request
for l in "${BACKENDS[@]}"; do case $l in -b|transformers:fp16) ;; *) ARGS+=("/tmp/runs/quant=$l");; esac; done
python3 benchmarks/gpu/agreement.py /tmp/runs/quant=transformers:fp16 "${ARGS[@]}" --json "$OUT/agreement-quant.json"
case " ${ARGS[*]} " in *"=transformers:gptq "*)
  python3 benchmarks/gpu/agreement.py /tmp/runs/quant=transformers:gptq /tmp/runs/quant=exllamav2:gptq \
    --json "$OUT/agreement-gptq.json";; esac
rm -f /tmp/runs/quant/requests.csv
bundle quant
say "d2 done"
