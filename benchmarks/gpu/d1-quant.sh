#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200-d, step 1 (bundle .gpucarryE, from make-carry-d.sh): install,
# build exllamav2's and exllamav3's CUDA extensions just in time (in parallel, timed, sm_90 only), build
# the 7B shape's fp16 checkpoint (llmcompare.models.quantize.fp16_source), check ExLlamaV2's logits against
# transformers' with and without its SDPA prefill (c3-exl2-logits.py), then make the GPTQ, EXL2 and EXL3
# checkpoints with llmcompare's recipes, the three converters side by side on the one GPU (nothing is timed
# while they run). EXL2 and EXL3 resume where they stopped when this step ends first: d2-bench.sh goes on.
# REUSE=1 on the same host keeps /tmp/site (no reinstall, no extension rebuild).
# $OUT gets: d1.log, env.txt, build-*.log, c3.log, quant-logs.tar.gz.
source benchmarks/gpu/setup-c.sh
exec > >(tee "$OUT/d1.log") 2>&1
if [ "${REUSE:-0}" = 1 ] && [ -d /tmp/site/exllamav2 ]; then
  mkdir -p .whl && cp .gpucarryE/lcsnap.tgz .gpucarryE/whl/platformdirs-*.whl .whl/ && install_llmcompare || exit 4
else install_carry .gpucarryE || { say "install FAILED"; exit 4; }; fi
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-8}
env_block | tee "$OUT/env.txt"
python3 -c "import gptqmodel, optimum, pcre, importlib.metadata as m; print('gptqmodel', m.version('gptqmodel'), 'optimum', m.version('optimum'), 'pypcre', m.version('pypcre'))" 2>&1 | tail -3

# (wait names its pids: a bare wait would also wait for the tee of exec > >(tee), which never ends)
builds=()
for e in exllamav2 exllamav3; do
  ( s=$(date +%s); timeout -k 10 330 python3 -c "import $e, importlib.metadata as m; print('$e', m.version('$e'))" \
      > "$OUT/build-$e.log" 2>&1; echo "rc=$? seconds=$(( $(date +%s) - s ))" >> "$OUT/build-$e.log" ) &
  builds+=($!)
done
say "fp16 source (the 7B shape's seeded weights, built on the GPU, saved once)"
python3 -c "from llmcompare.models import resolve_model; from llmcompare.models.quantize import fp16_source; print(fp16_source(resolve_model('synthetic:llama-2-7b')))"
wait "${builds[@]}"
say "extension builds: $(tail -qn1 "$OUT"/build-*.log | tr '\n' ' ')"
timeout -k 10 120 python3 benchmarks/gpu/c3-exl2-logits.py 1 2 16 256 2>&1 | grep -v Warning > "$OUT/c3.log"
say "c3 rc=$?"; cat "$OUT/c3.log" | grep -E "length|read"

mkdir -p /tmp/runs/qlogs
quants=()
for m in gptq exl2 exl3; do
  ( s=$(date +%s); timeout -k 10 $(( $(left) - 25 )) python3 -m llmcompare.models.quantize "$m" -m synthetic:llama-2-7b \
      --log-dir "/tmp/runs/qlogs/$m" > "/tmp/runs/qlogs/$m.out" 2>&1
    echo "$m rc=$? seconds=$(( $(date +%s) - s ))" >> /tmp/runs/qlogs/status ) &
  quants+=($!)
done
while kill -0 "${quants[@]}" 2>/dev/null; do sleep 30; say "converting: $(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader)"; done
wait "${quants[@]}"
cat /tmp/runs/qlogs/status
for m in gptq exl2 exl3; do say "$m: $(tail -n2 /tmp/runs/qlogs/$m.out | tr '\n' ' ')"; done
tar -czf "$OUT/quant-logs-d1.tar.gz" -C /tmp/runs qlogs
say "d1 done"
