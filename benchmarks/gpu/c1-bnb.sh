#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200-c, step 1 (bundle .gpucarryC, from make-carry-c.sh): install the
# bitsandbytes wheel and llmcompare (the bundled snapshot), record the environment, measure the copy
# bandwidth (llmcompare bandwidth / llmcompare.hardware.roofline, cached for later steps), then transformers
# fp16, int8 and nf4 (bitsandbytes) at batch 1 on the 7B shape, 256 in / 256 out, fp16 first as the
# agreement reference. $OUT gets: c1.log, env.txt, bandwidth.json, run-bnb.tar.gz, agreement-bnb.json.
source benchmarks/gpu/setup-c.sh
exec > >(tee "$OUT/c1.log") 2>&1
install_carry .gpucarryC || { say "install FAILED"; exit 4; }
env_block | tee "$OUT/env.txt"
python3 -c "import bitsandbytes as b, importlib.metadata as m; print('bitsandbytes', m.version('bitsandbytes'), b.__file__)" 2>&1 | tail -3
python3 -m llmcompare.hardware.roofline --json | tee "$OUT/bandwidth.json"
say "bandwidth done"

timeout -k 10 $(( $(left) - 30 )) python3 -m llmcompare run -q "${SHAPE[@]}" -r 1 -w 1 --no-fidelity \
  -b transformers:fp16 -b transformers:int8 -b transformers:nf4 -O /tmp/runs/bnb
rc=$?; say "bnb run rc=$rc"
[ $rc = 0 ] || python3 -m llmcompare report /tmp/runs/bnb
kill_gpu_leftovers
roofline_of bnb
python3 benchmarks/gpu/agreement.py /tmp/runs/bnb=transformers:fp16 /tmp/runs/bnb=transformers:int8 \
  /tmp/runs/bnb=transformers:nf4 --json "$OUT/agreement-bnb.json"
rm -f /tmp/runs/bnb/requests.csv
bundle bnb
say "c1 done"
