#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200-b, step 3 of 3 (bundle .whl: the ctranslate2 wheel, platformdirs, the snapshot):
#  (a) vllm-serve at batch 1 (llmcompare's managed vLLM server), if vLLM is still in /tmp/site;
#  (b) CTranslate2 on CUDA through the opt-in cuBLAS 12 -> 13 alias (LLMCOMPARE_CUBLAS12_ALIAS=1):
#      a CPU-vs-GPU greedy-id check on synthetic:smollm2-135m, then the 7B shape in float16 and
#      int8_float16 from an fp16 HF directory built on the GPU, transformers fp16 (static cache) from the
#      same directory as the agreement reference.
# Knobs: DO_SERVE=0 skips (a). $OUT gets: b3.log, env.txt, run-*.tar.gz, agreement-*.json.
source benchmarks/gpu/setup.sh
exec > >(tee "$OUT/b3.log") 2>&1
install_llmcompare || { say "llmcompare install FAILED"; exit 4; }
python3 -m llmcompare.hardware.roofline

if [ "${DO_SERVE:-1}" = 1 ] && [ -e /tmp/gpustate/B_done ]; then
  timeout -k 10 200 python3 -m llmcompare run -q "${SHAPE[@]}" -r 2 -w 1 -b vllm-serve:fp16 \
    -o vllm-serve.gpu_memory_utilization=0.85 -o vllm-serve.max_model_len=2048 -o vllm-serve.flashinfer_sampler=false \
    -O /tmp/runs/vllm-serve
  rc=$?; say "vllm-serve run rc=$rc"
  [ $rc = 0 ] || python3 -m llmcompare report /tmp/runs/vllm-serve
  kill_gpu_leftovers
  roofline_of vllm-serve
  bundle vllm-serve
else
  say "vllm-serve skipped (DO_SERVE=${DO_SERVE:-1}, B_done: $([ -e /tmp/gpustate/B_done ] && echo yes || echo no))"
fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/ct2site .whl/ctranslate2-*.whl \
  || { say "ctranslate2 install FAILED"; exit 5; }
export PYTHONPATH=/tmp/ct2site:$PYTHONPATH LLMCOMPARE_CUBLAS12_ALIAS=1
python3 -c "import ctranslate2; print('ctranslate2', ctranslate2.__version__, 'cuda devices', ctranslate2.get_cuda_device_count())"
env_block | tee "$OUT/env.txt"

# (b1) CPU against GPU, same converted model family: float32 on both, float16 on the GPU.
SMALL=(--model synthetic:smollm2-135m -n 64 -r 1 -w 1)
timeout -k 10 150 python3 -m llmcompare run -q "${SMALL[@]}" --device cpu -b ctranslate2:float32 -O /tmp/runs/ct2-small/cpu
say "ct2 small cpu rc=$?"
timeout -k 10 150 python3 -m llmcompare run -q "${SMALL[@]}" --device cuda -b ctranslate2:float32 -b ctranslate2:float16 \
  -O /tmp/runs/ct2-small/cuda
say "ct2 small cuda rc=$?"
python3 benchmarks/gpu/agreement.py /tmp/runs/ct2-small/cpu=ctranslate2:float32 /tmp/runs/ct2-small/cuda=ctranslate2:float32 \
  /tmp/runs/ct2-small/cuda=ctranslate2:float16 --json "$OUT/agreement-ct2-small.json"
kill_gpu_leftovers
bundle ct2-small

# (b2) the 7B shape
timeout -k 10 150 python3 benchmarks/gpu/make_hf_dir.py llama-2-7b /tmp/l7b-hf
say "hf dir rc=$?"
timeout -k 10 $(( $(left) - 25 )) python3 -m llmcompare run -q --model /tmp/l7b-hf --device cuda --input-tokens 256 -n 256 \
  -r 1 -w 1 --timeout 300 -b ctranslate2:float16 -b ctranslate2:int8_float16 \
  -b transformers:fp16@static -o static.cache_implementation=static --baseline static --no-fidelity -O /tmp/runs/ct2-7b
rc=$?; say "ct2 7b run rc=$rc"
[ $rc = 0 ] || python3 -m llmcompare report /tmp/runs/ct2-7b
kill_gpu_leftovers
roofline_of ct2-7b
python3 benchmarks/gpu/agreement.py /tmp/runs/ct2-7b=static /tmp/runs/ct2-7b=ctranslate2:float16 \
  /tmp/runs/ct2-7b=ctranslate2:int8_float16 --json "$OUT/agreement-ct2-7b.json"
bundle ct2-7b
say "b3 done"
