#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200-d, on a fresh host, step 1 (bundle .gpucarryE, make-carry-d.sh): install; build exllamav2's extension (timed) while the 7B shape's fp16
# checkpoint is built and quantized to GPTQ (llmcompare.models.quantize gptq, timed); then at batch 1 (256 in /
# 256 out, 10 prompts after 1 warm-up): transformers:fp16 (reference), exllamav2:gptq, transformers:gptq
# with gptqmodel's Triton kernel, and with its Marlin kernel (built just in time, last: if its build
# outlasts the step, the other rows stand). gptqmodel's automatic choice on Hopper, Machete, downloads
# CUTLASS to build and cannot run without network (d2-bench.sh). $OUT gets: e1.log, env.txt, build-exllamav2.log,
# gptq.log, run-gptq.tar.gz, agreement-gptq*.json.
source benchmarks/gpu/setup-c.sh
exec > >(tee "$OUT/e1.log") 2>&1
install_carry .gpucarryE || { say "install FAILED"; exit 4; }
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
env_block | tee "$OUT/env.txt"
( s=$(date +%s); timeout -k 10 300 python3 -c "import exllamav2, importlib.metadata as m; print('exllamav2', m.version('exllamav2'))" \
    > "$OUT/build-exllamav2.log" 2>&1; echo "rc=$? seconds=$(( $(date +%s) - s ))" >> "$OUT/build-exllamav2.log" ) &
build=$!   # (wait names its pid: a bare wait would also wait for the tee of exec > >(tee))
s=$(date +%s)
timeout -k 10 300 python3 -m llmcompare.models.quantize gptq -m synthetic:llama-2-7b --log-dir /tmp/runs/qlogs > "$OUT/gptq.log" 2>&1
say "gptq rc=$? seconds=$(( $(date +%s) - s )) (fp16 source included): $(tail -n1 "$OUT/gptq.log")"
wait "$build"; say "exllamav2 build: $(tail -n1 "$OUT/build-exllamav2.log")"
rm -rf /tmp/runs/gptq
timeout -k 10 $(( $(left) - 30 )) python3 -m llmcompare run -q "${SHAPE[@]}" -r 1 -w 1 --no-fidelity --timeout 120 \
  -b transformers:fp16 -b exllamav2:gptq -b transformers:gptq@triton -o triton.gptq_backend=gptq_triton \
  -b transformers:gptq@marlin -o marlin.gptq_backend=gptq_marlin -O /tmp/runs/gptq
say "gptq run rc=$?"
python3 -m llmcompare report /tmp/runs/gptq | tail -22
kill_gpu_leftovers
roofline_of gptq
python3 benchmarks/gpu/agreement.py /tmp/runs/gptq=transformers:fp16 /tmp/runs/gptq=exllamav2:gptq \
  /tmp/runs/gptq=transformers:gptq@triton /tmp/runs/gptq=transformers:gptq@marlin --json "$OUT/agreement-gptq-fp16.json"
python3 benchmarks/gpu/agreement.py /tmp/runs/gptq=transformers:gptq@triton /tmp/runs/gptq=exllamav2:gptq \
  /tmp/runs/gptq=transformers:gptq@marlin --json "$OUT/agreement-gptq.json"
grep -h '"gptq_kernel\|"exllamav2_attention' /tmp/runs/gptq/results.json | sort -u | head
rm -f /tmp/runs/gptq/requests.csv
bundle gptq
say "e1 done"
