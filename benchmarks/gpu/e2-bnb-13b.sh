#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200-d, step 2 on the same host after e1-gptq.sh (bundle .gpucarryC of make-carry-c.sh): transformers fp16, int8 and nf4
# (bitsandbytes, now loaded through load_model's one from_pretrained call) on the 7B shape, then the 13B
# shape at batch 1: transformers:fp16 with a static cache and exllamav2:fp16 (its causal prefill). Both runs
# 256 in / 256 out, 10 prompts after 1 warm-up. $OUT gets: e2.log, run-bnb.tar.gz, run-13b.tar.gz,
# agreement-*.json.
source benchmarks/gpu/setup-c.sh
exec > >(tee "$OUT/e2.log") 2>&1
# llmcompare stays installed from e1's snapshot (/tmp/lcsrc-*); this step brings .gpucarryC for bitsandbytes
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpucarryC/whl/bitsandbytes-*.whl
python3 -c "import llmcompare, bitsandbytes; print('llmcompare', llmcompare.__file__, 'bitsandbytes', bitsandbytes.__version__)" || exit 4
rm -rf /tmp/runs/bnb /tmp/runs/13b
timeout -k 10 280 python3 -m llmcompare run -q "${SHAPE[@]}" -r 1 -w 1 --no-fidelity --timeout 120 \
  -b transformers:fp16 -b transformers:int8 -b transformers:nf4 -O /tmp/runs/bnb
say "bnb run rc=$?"; kill_gpu_leftovers; roofline_of bnb
python3 benchmarks/gpu/agreement.py /tmp/runs/bnb=transformers:fp16 /tmp/runs/bnb=transformers:int8 \
  /tmp/runs/bnb=transformers:nf4 --json "$OUT/agreement-bnb.json"
rm -f /tmp/runs/bnb/requests.csv; bundle bnb
timeout -k 10 $(( $(left) - 25 )) python3 -m llmcompare run -q --model synthetic:llama-2-13b --device cuda \
  --input-tokens 256 -n 256 -r 1 -w 1 --no-fidelity --timeout 120 \
  -b transformers:fp16@static -o static.cache_implementation=static -b exllamav2:fp16 -O /tmp/runs/13b
say "13b run rc=$?"; kill_gpu_leftovers; roofline_of 13b
python3 benchmarks/gpu/agreement.py /tmp/runs/13b=transformers:fp16@static /tmp/runs/13b=exllamav2:fp16 \
  --json "$OUT/agreement-13b.json"
rm -f /tmp/runs/13b/requests.csv; bundle 13b
say "e2 done"
