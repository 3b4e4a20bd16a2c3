#!/usr/bin/env bash
# benchmarks/results/2026-11-23-h200, step 1 on a fresh H200 host (bundles .gpucarryE and .gpucarryG;
# make-carry-d.sh and make-carry-g.sh): install the ExLlama bundle, start h-convert.sh in the background (the
# ExLlama extension builds, the 7B shape's fp16 checkpoint, then the EXL3 and EXL2 conversions side by side,
# which run on past this step), then build llama-cpp-python with CUDA in the foreground
# (g1-llamacpp-build.sh at niceness 10, so the extension builds that gate the conversions come first),
# and with the time left the f16 and q4_0 GGUFs.
# Next: h2-llamacpp.sh (the build's rest, if it stopped with exit 5, then the llama.cpp run with the
# conversions paused), then h3-exl-bench.sh (each conversion's run as it finishes).
# METHODS and EXL2_MEASUREMENT pass to h-convert.sh (for example METHODS=exl2 with the measurement of an
# earlier EXL2 conversion, benchmarks/results/2026-11-23-h200/exl2-measurement.json.gz, which this script
# unpacks: EXL2 then skips its measurement pass).
# $OUT gets: h1.log, env.txt, and what g1 writes (g1.log, build-llamacpp.log, libs.txt, server-help.txt).
source benchmarks/gpu/setup-c.sh
exec > >(tee -a "$OUT/h1.log") 2>&1
install_carry .gpucarryE || { say "install of .gpucarryE FAILED"; exit 4; }
env_block > "$OUT/env.txt" 2>&1
mkdir -p /tmp/runs/qlogs
cp benchmarks/gpu/h-convert.sh /tmp/gpustate/h-convert.sh
if [ -n "${EXL2_MEASUREMENT:-}" ]; then   # a copy that outlives this step's working tree
  case $EXL2_MEASUREMENT in *.gz) gunzip -c "$EXL2_MEASUREMENT" > /tmp/gpustate/exl2-measurement.json;;
                            *) cp "$EXL2_MEASUREMENT" /tmp/gpustate/exl2-measurement.json;; esac
  export EXL2_MEASUREMENT=/tmp/gpustate/exl2-measurement.json
fi
export METHODS=${METHODS:-exl3 exl2}
setsid nohup bash /tmp/gpustate/h-convert.sh > /tmp/runs/qlogs/pipeline.out 2>&1 < /dev/null &
say "h-convert.sh started in the background (pid $!): /tmp/runs/qlogs/pipeline.log"
NICE=10 bash benchmarks/gpu/g1-llamacpp-build.sh
rc=$?
say "g1 rc=$rc; conversions: $(tail -n3 /tmp/runs/qlogs/pipeline.log | tr '\n' ' ')"
exit $rc
