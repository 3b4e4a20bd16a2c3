#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200x2, steps 2 and after on the same 2-GPU host (bundle .gpucarryB, from
# make-carry-f.sh). The first of them unpacks vLLM part B and installs rapidfuzz and llmcompare (the snapshot);
# later ones find them in /tmp/site. Then, for MODEL (default synthetic:llama-2-7b), through llmcompare's
# managed vLLM server (vllm-serve), one STEP per invocation:
#   STEP=load (default): the load driver's concurrency sweep, TP 2 on both GPUs against two TP-1
#     replicas (-o replicas=2, one server per GPU, each request to the one with the fewest in flight):
#     the JumpStart comparison. Its c=1 level is batch 1 at TP 2 and at TP 1 (one replica serves it).
#     A run folder that is already there is resumed (`llmcompare load --resume`), so a sweep cut by
#     the step's time limit goes on in the next invocation from its last finished level.
#   STEP=latency: `llmcompare run` at batch 1, one GPU (TP 1) against two (TP 2), for each model in
#     MODELS (default "7b 13b"), with the floor per row (TP 2: each GPU reads half the bytes).
# Knobs: LEVELS (1,8,32,64,128,256), DURATION (20 s per level).
# $OUT gets f2-<step>-<model(s)>.log, run-tp-*.tar.gz and, for load runs, requests-*.jsonl.xz (split in
# 15 MiB parts if larger, for a host that hands back files of 16 MiB at most).
source benchmarks/gpu/setup.sh
STEP=${STEP:-load}
MODEL=${MODEL:-synthetic:llama-2-7b}
tag=$(echo "$MODEL" | sed 's/.*llama-2-//')
logtag=$([ "$STEP" = latency ] && echo "${MODELS:-7b 13b}" | tr ' ' '-' || echo "$tag")
exec > >(tee "$OUT/f2-$STEP-$logtag.log") 2>&1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
[ -e /tmp/gpustate/A_done ] || { say "STATE LOST: part A is not in /tmp/site (the host did not keep /tmp since the earlier step)"; exit 3; }
unpack .gpucarryB/B.tar.xz B_done
python3 -c "import rapidfuzz" 2>/dev/null || \
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpucarryB/whl/rapidfuzz-*.whl
install_llmcompare || { say "llmcompare install FAILED"; exit 4; }
common() { for l in "$@"; do echo "-o $l.gpu_memory_utilization=0.85 -o $l.max_model_len=2048 -o $l.flashinfer_sampler=false"; done; }

bundle_load() {  # the run folder without requests.jsonl, then requests.jsonl alone, xz-compressed
  local name=$1 d=/tmp/runs/$1
  [ -d "$d" ] || return 0
  tar -czf "$OUT/run-$name.tar.gz" --exclude=requests.jsonl -C /tmp/runs "$name"
  if [ -f "$d/requests.jsonl" ]; then
    sha256sum "$d/requests.jsonl" | tee "$OUT/requests-$name.sha256"
    xz -T0 -6 -c "$d/requests.jsonl" > "/tmp/requests-$name.jsonl.xz"
    if [ "$(stat -c %s "/tmp/requests-$name.jsonl.xz")" -gt 15728640 ]; then
      split -b 15M -d "/tmp/requests-$name.jsonl.xz" "$OUT/requests-$name.jsonl.xz.part"
    else
      cp "/tmp/requests-$name.jsonl.xz" "$OUT/"
    fi
  fi
  say "bundled $name: $(du -ch "$OUT"/*"$name"* | tail -1 | cut -f1)"
}

if [ "$STEP" = latency ]; then
  for m in ${MODELS:-7b 13b}; do
    [ "$(left)" -gt 200 ] || { say "skipping $m: $(left) s left"; continue; }
    rm -rf "/tmp/runs/tp-latency-$m"
    timeout -k 10 $(( $(left) - 30 )) python3 -m llmcompare run -q --model "synthetic:llama-2-$m" --device cuda \
      --input-tokens 256 -n 256 -r 1 -w 1 --no-fidelity --timeout 200 \
      -b vllm-serve:fp16@tp1 -b vllm-serve:fp16@tp2 -o tp2.tensor_parallel_size=2 $(common tp1 tp2) \
      -O "/tmp/runs/tp-latency-$m"
    say "latency $m rc=$?"; kill_gpu_leftovers; roofline_of "tp-latency-$m"; bundle "tp-latency-$m"
  done
else
  d=/tmp/runs/tp-load-$tag
  if [ -f "$d/run.json" ]; then
    say "resuming $d"
    timeout -k 10 $(( $(left) - 40 )) python3 -m llmcompare load -q --resume "$d"
  else
    rm -rf "$d"
    timeout -k 10 $(( $(left) - 40 )) python3 -m llmcompare load -q --model "$MODEL" --device cuda \
      --input-tokens 256 -n 256 \
      -b vllm-serve:fp16@tp2 -o tp2.tensor_parallel_size=2 -b vllm-serve:fp16@replicas -o replicas.replicas=2 \
      $(common tp2 replicas) -c ${LEVELS:-1,8,32,64,128,256} --duration ${DURATION:-20} --price-per-hour 9.08 \
      --slo ttft_ms=1000,tpot_ms=50 -O "$d"
  fi
  say "load rc=$?"; kill_gpu_leftovers; bundle_load "tp-load-$tag"
fi
say "f2 done"
