#!/usr/bin/env bash
# Tensor-parallel session, call 2 of 2 on the warm nvidia-h200-x2 (carry .gpucarryB, from make-carry-f.sh):
# unpack vLLM part B, install rapidfuzz and llmcompare (the snapshot), then, for MODEL (default
# synthetic:llama-2-7b; MODEL=synthetic:llama-2-13b for the second pass), through llmcompare's managed
# vLLM server:
#   1. batch 1: one GPU (TP 1) against two (TP 2);
#   2. the load driver's concurrency sweep: TP 2 on both GPUs against two TP-1 replicas (-o replicas=2,
#      one server per GPU, each request to the one with the fewest in flight), the JumpStart comparison.
# Knobs: LEVELS (1,8,32,64,128,256), DURATION (20 s per level), DO_LATENCY=0 skips step 1.
# Prepared, not yet run on a GPU. $OUT gets: f2.log, run-tp-latency.tar.gz, run-tp-load.tar.gz.
source benchmarks/gpu/setup.sh
exec > >(tee "$OUT/f2.log") 2>&1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
[ -e /tmp/gpustate/A_done ] || { say "STATE LOST: part A is not in /tmp/site (the machine was not kept warm)"; exit 3; }
unpack .gpucarryB/B.tar.xz B_done
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpucarryB/whl/rapidfuzz-*.whl
install_llmcompare || { say "llmcompare install FAILED"; exit 4; }
MODEL=${MODEL:-synthetic:llama-2-7b}
RUN=(--model "$MODEL" --device cuda --input-tokens 256 -n 256)
common() { for l in "$@"; do echo "-o $l.gpu_memory_utilization=0.85 -o $l.max_model_len=2048 -o $l.flashinfer_sampler=false"; done; }
tag=$(echo "$MODEL" | sed 's/.*llama-2-//')
if [ "${DO_LATENCY:-1}" = 1 ]; then
  rm -rf "/tmp/runs/tp-latency-$tag"
  timeout -k 10 240 python3 -m llmcompare run -q "${RUN[@]}" -r 1 -w 1 --no-fidelity --timeout 220 \
    -b vllm-serve:fp16@tp1 -b vllm-serve:fp16@tp2 -o tp2.tensor_parallel_size=2 $(common tp1 tp2) \
    -O "/tmp/runs/tp-latency-$tag"
  say "latency rc=$?"; kill_gpu_leftovers; roofline_of "tp-latency-$tag"; bundle "tp-latency-$tag"
fi
rm -rf "/tmp/runs/tp-load-$tag"
timeout -k 10 $(( $(left) - 20 )) python3 -m llmcompare load -q "${RUN[@]}" \
  -b vllm-serve:fp16@tp2 -o tp2.tensor_parallel_size=2 -b vllm-serve:fp16@replicas -o replicas.replicas=2 \
  $(common tp2 replicas) -c ${LEVELS:-1,8,32,64,128,256} --duration ${DURATION:-20} --price-per-hour 9.08 \
  --slo ttft_ms=1000,tpot_ms=50 -O "/tmp/runs/tp-load-$tag"
say "load rc=$?"; kill_gpu_leftovers; bundle "tp-load-$tag"
say "f2 done"
