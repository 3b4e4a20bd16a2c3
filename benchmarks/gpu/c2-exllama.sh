#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200-c, the ExLlama steps (bundle .gpucarryD, from make-carry-c.sh).
# ENGINE=exllamav2 (default): build exllamav2's CUDA extension just in time (timed, sm_90 only), run
# exllamav2:fp16 at batch 1 on the 7B shape (256 in / 256 out) from the fp16 checkpoint
# (llmcompare.models.quantize.fp16_source, cached: reused while /tmp still holds it from c1-bnb.sh), then,
# with DO_QUANT=1 (default), convert to EXL2 (python -m llmcompare.models.quantize exl2, timed) and run
# exllamav2:exl2. ENGINE=exllamav3: the same with exllamav3:fp16 and EXL3.
# Knobs: REUSE=1 keeps /tmp/site from an earlier step on the same host (no rebuild of the extension);
# CALL_LIMIT (setup.sh) is the seconds this step may use. $OUT gets: c2-ENGINE.log, env.txt, run-ENGINE-*.tar.gz.
source benchmarks/gpu/setup-c.sh
ENGINE=${ENGINE:-exllamav2}
QUANT=$([ "$ENGINE" = exllamav2 ] && echo exl2 || echo exl3)
exec > >(tee "$OUT/c2-$ENGINE.log") 2>&1
# REUSE=1 on a host whose /tmp still has an earlier step of this script: keep /tmp/site as it is (reinstalling
# the engine's wheel renews its sources' mtimes, and ninja then rebuilds the whole extension)
if [ "${REUSE:-0}" = 1 ] && [ -d "/tmp/site/$ENGINE" ]; then mkdir -p .whl && cp .gpucarryD/lcsnap.tgz .gpucarryD/whl/platformdirs-*.whl .whl/ && install_llmcompare || exit 4
else install_carry .gpucarryD || { say "install FAILED"; exit 4; }; fi
rm -rf "/tmp/runs/$ENGINE-fp16" "/tmp/runs/$ENGINE-$QUANT"   # a new run, never a resumed one
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16   # the JIT build: Hopper only, all cores
env_block | tee "$OUT/env.txt"
say "ninja: $(command -v ninja) $(ninja --version 2>&1)"

say "building $ENGINE's extension (first import)"
timeout -k 10 300 python3 -c "import $ENGINE, importlib.metadata as m; print('$ENGINE', m.version('$ENGINE'), $ENGINE.__file__)"
say "import rc=$?"

timeout -k 10 $(( $(left) > 120 ? $(left) - 60 : 60 )) python3 -m llmcompare run -q "${SHAPE[@]}" -r 1 -w 1 --no-fidelity \
  -b "$ENGINE:fp16" -O "/tmp/runs/$ENGINE-fp16"
rc=$?; say "$ENGINE fp16 run rc=$rc"
[ $rc = 0 ] || python3 -m llmcompare report "/tmp/runs/$ENGINE-fp16"
kill_gpu_leftovers
roofline_of "$ENGINE-fp16"
rm -f "/tmp/runs/$ENGINE-fp16/requests.csv"
bundle "$ENGINE-fp16"

if [ "${DO_QUANT:-1}" = 1 ]; then
  say "converting to $QUANT ($(left) s left)"
  timeout -k 10 $(( $(left) - 120 )) python3 -m llmcompare.models.quantize "$QUANT" -m synthetic:llama-2-7b \
    --log-dir "/tmp/runs/$ENGINE-$QUANT-log"
  rc=$?; say "$QUANT conversion rc=$rc"; bundle "$ENGINE-$QUANT-log"
  if [ $rc = 0 ]; then
    timeout -k 10 $(( $(left) - 15 )) python3 -m llmcompare run -q "${SHAPE[@]}" -r 1 -w 1 --no-fidelity \
      -b "$ENGINE:$QUANT" -O "/tmp/runs/$ENGINE-$QUANT"
    rc=$?; say "$ENGINE $QUANT run rc=$rc"
    [ $rc = 0 ] || python3 -m llmcompare report "/tmp/runs/$ENGINE-$QUANT"
    kill_gpu_leftovers
    roofline_of "$ENGINE-$QUANT"
    rm -f "/tmp/runs/$ENGINE-$QUANT/requests.csv"
    bundle "$ENGINE-$QUANT"
  fi
fi
say "c2 $ENGINE done"
