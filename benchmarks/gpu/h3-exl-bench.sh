#!/usr/bin/env bash
# benchmarks/results/2026-11-23-h200, step 3 and after (bundle .gpucarryE), on the same host: wait for the background
# conversions of h-convert.sh (printing their progress), and as soon as one or both have finished and
# not been run yet, run them at batch 1 with the other conversion paused: one `llmcompare run` (256 in /
# 256 out, 10 prompts after 1 warm-up) of exllamav3:exl3 and/or exllamav2:exl2 (the checkpoints are
# cache hits), then the floor per row and greedy agreement with transformers:fp16 (static cache) from
# h2's llama.cpp run (/tmp/runs/llamacpp, label `static`), or, where that run is missing, with a
# transformers:fp16@static row added to this run. Run it again until it says "nothing left".
# WAIT_RESERVE (default 200): seconds of the step kept for the run once something has finished.
# $OUT gets: h3.log, run-exl-<methods>.tar.gz, agreement-exl-<methods>.json, qlogs.tar.gz.
source benchmarks/gpu/setup-c.sh
exec > >(tee -a "$OUT/h3.log") 2>&1
export TORCH_CUDA_ARCH_LIST=9.0   # as h-convert.sh built the extensions: another list rebuilds them at load
mkdir -p .whl && cp .gpucarryE/lcsnap.tgz .gpucarryE/whl/platformdirs-*.whl .whl/ && install_llmcompare || exit 4
resume_conversions
Q=/tmp/runs/qlogs
WAIT_RESERVE=${WAIT_RESERVE:-200}
ready() {  # finished conversions not run yet
  local m; for m in exl3 exl2; do
    grep -q "^$m rc=0 " "$Q/status" 2>/dev/null && [ ! -e "/tmp/gpustate/ran-$m" ] && echo "$m"
  done
}
running() { local m; for m in exl3 exl2; do [ -e "$Q/$m.out" ] && ! grep -q "^$m rc=" "$Q/status" 2>/dev/null && echo "$m"; done; }
progress() {  # the converters' last progress lines
  local m f; for m in $(running); do
    f=$(ls -t "$Q/$m"/*.log 2>/dev/null | head -1)
    [ -n "$f" ] && say "$m: $(grep -E 'Quantized: model.layers.[0-9]+ +bpw|Completed step|Estimated remaining|Quantizing|Compiling|Optimizing' "$f" | tail -n2 | tr -s ' ' | tr '\n' ' ')"
  done
}
say "pipeline: $(tail -n4 "$Q/pipeline.log" 2>/dev/null | tr '\n' ' ')"
while [ -z "$(ready)" ] && [ -n "$(running)" ] && [ "$(left)" -gt "$WAIT_RESERVE" ]; do
  progress; sleep 30
done
cat "$Q/status" 2>/dev/null
todo=$(ready | tr '\n' ' ')
if [ -z "$todo" ]; then
  progress
  [ -n "$(running)" ] && say "no conversion finished yet: run this again" || say "nothing left to run"
  tar -czf "$OUT/qlogs.tar.gz" -C /tmp/runs qlogs; exit 0
fi
BACKENDS=(); name=exl
for m in $todo; do
  name=$name-$m
  b=$([ "$m" = exl3 ] && echo exllamav3 || echo exllamav2):$m
  # the checkpoint the conversion printed (its status line's last field), loaded as it is: the same file
  # whatever recipe made it (an EXL2 from a reused measurement is not the default recipe's cache entry)
  BACKENDS+=(-b "$b" -o "$b.model_dir=$(grep "^$m rc=0 " "$Q/status" | tail -n1 | awk '{print $NF}')")
done
REF=/tmp/runs/llamacpp=static
if [ ! -f /tmp/runs/llamacpp/requests.jsonl ]; then
  BACKENDS+=(-b transformers:fp16@static -o static.cache_implementation=static); REF=/tmp/runs/$name=static
fi
trap resume_conversions EXIT
pause_conversions
kill_gpu_leftovers
sync   # the conversions' written files reach the disk before the timed run, not during it
rm -rf "/tmp/runs/$name"
say "running ${BACKENDS[*]} ($(left) s left)"
timeout -k 10 $(( $(left) - 30 )) python3 -m llmcompare run -q "${SHAPE[@]}" -r 1 -w 1 --no-fidelity --timeout 300 \
  "${BACKENDS[@]}" -O "/tmp/runs/$name"
say "$name run rc=$?"
for m in $todo; do touch "/tmp/gpustate/ran-$m"; done
python3 -m llmcompare report "/tmp/runs/$name" | tail -20
kill_gpu_leftovers
resume_conversions
roofline_of "$name"
ARGS=()
for l in "${BACKENDS[@]}"; do case $l in exllama*.model_dir=*) ;; exllama*) ARGS+=("/tmp/runs/$name=$l");; esac; done
python3 benchmarks/gpu/agreement.py "$REF" "${ARGS[@]}" --json "$OUT/agreement-$name.json"
rm -f "/tmp/runs/$name/requests.csv"
bundle "$name"
tar -czf "$OUT/qlogs.tar.gz" -C /tmp/runs qlogs
say "h3 done; still converting: $(running | tr '\n' ' ')"
