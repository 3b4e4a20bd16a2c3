#!/usr/bin/env bash
# llama.cpp on CUDA, step 2 of 2 (bundle .gpucarryG), on the same host after g1-llamacpp-build.sh
# (its /tmp intact): the 7B shape's GGUFs through llmcompare's recipe, `python -m llmcompare.models.quantize
# gguf -m synthetic:llama-2-7b --type f16`, then `--type q4_0`, timed (cache hits for what g1 made), then
# `--type q8_0` where the disk has room (Q8_MIN_FREE_GB), then
# one run at batch 1 (256 in / 256 out, 10 prompts after 1 warm-up): llamacpp:f16, llamacpp:q4_0,
# llamacpp-server:q4_0, llamacpp:q8_0, and transformers:fp16 with a static KV cache (label `static`, the agreement
# reference). A variant whose GGUF is missing is left out and said so. Then the report, the floor per row
# (roofline_of) and greedy agreement with `static`. Conversions running in the background
# (h-convert.sh) are paused for the run (pause_conversions in setup.sh) and resumed after it.
# Expected: 200-300 s when g1 made both GGUFs, about 150 s more for one it had no time for. The
# conversions get what is left before the last RUN_RESERVE s (default 270). If one did not finish, run
# this again on the same host: finished GGUFs are cache hits. On a machine where g1 has not installed
# llama-cpp-python with CUDA it stops with one line (exit 3); with no GGUF made, before the run (exit 5).
# $OUT gets: g2.log, run-llamacpp.tar.gz, agreement-llamacpp.json, gguf-logs.tar.gz.
source benchmarks/gpu/setup-c.sh
exec > >(tee "$OUT/g2.log") 2>&1
mkdir -p .whl && cp .gpucarryG/lcsnap.tgz .gpucarryG/whl/platformdirs-*.whl .whl/ && install_llmcompare || exit 4
[ -e /tmp/gpustate/llamacpp-cuda ] \
  || { say "STOP: no llama-cpp-python with CUDA on this machine: run g1-llamacpp-build.sh first (on this host)"; exit 3; }
[ -f /tmp/gpustate/llamacpp.env ] && source /tmp/gpustate/llamacpp.env
python3 -c "import sys, llama_cpp; print('llama_cpp', llama_cpp.__version__, llama_cpp.__file__)
sys.exit(not llama_cpp.llama_supports_gpu_offload())" \
  || { say "STOP: the installed llama-cpp-python has no GPU offload (or does not import): see g1"; exit 3; }
RUN_RESERVE=${RUN_RESERVE:-270}   # seconds kept for the run, the report and agreement
mkdir -p /tmp/runs/gguf-logs
Q8_MIN_FREE_GB=${Q8_MIN_FREE_GB:-25}   # q8_0 (7.2 GB) only where the disk keeps this much free for the rest
for t in f16 q4_0 q8_0; do
  budget=$(( $(left) - RUN_RESERVE ))
  [ "$budget" -gt 10 ] || { say "no time left to make the $t GGUF"; continue; }
  free_gb=$(df -BG --output=avail /tmp | tail -1 | tr -dc 0-9)
  if [ "$t" = q8_0 ] && [ "$free_gb" -lt "$Q8_MIN_FREE_GB" ]; then say "q8_0 left out: $free_gb GB free"; continue; fi
  s=$(date +%s)
  timeout -k 10 "$budget" python3 -m llmcompare.models.quantize gguf -m synthetic:llama-2-7b --type "$t" \
    --log-dir "/tmp/runs/gguf-logs/$t" > "/tmp/runs/gguf-logs/$t-g2.out" 2>&1
  echo "$t (g2) rc=$? seconds=$(( $(date +%s) - s )) $(tail -n1 "/tmp/runs/gguf-logs/$t-g2.out")" >> /tmp/runs/gguf-logs/status
done
cat /tmp/runs/gguf-logs/status; df -h /tmp | tail -1
tar -czf "$OUT/gguf-logs.tar.gz" -C /tmp/runs gguf-logs
kill_gpu_leftovers
BACKENDS=()
made() { grep -q "^$1 (g2) rc=0 " /tmp/runs/gguf-logs/status; }
made f16 && BACKENDS+=(-b llamacpp:f16) || say "no f16 GGUF: llamacpp:f16 left out"
made q4_0 && BACKENDS+=(-b llamacpp:q4_0 -b llamacpp-server:q4_0) || say "no q4_0 GGUF: llamacpp:q4_0 and llamacpp-server:q4_0 left out"
made q8_0 && BACKENDS+=(-b llamacpp:q8_0) || say "no q8_0 GGUF: llamacpp:q8_0 left out"
[ ${#BACKENDS[@]} -gt 0 ] || { say "STOP: no GGUF was made, nothing of llama.cpp to run (gguf-logs.tar.gz)"; exit 5; }
BACKENDS+=(-b transformers:fp16@static -o static.cache_implementation=static)
rm -rf /tmp/runs/llamacpp
trap resume_conversions EXIT   # conversions h-convert.sh runs in the background wait while this runs
pause_conversions
sync   # the GGUFs just written reach the disk before the timed run, not during it
say "running ${BACKENDS[*]} ($(left) s left)"
timeout -k 10 $(( $(left) - 30 )) python3 -m llmcompare run -q "${SHAPE[@]}" -r 1 -w 1 --no-fidelity --timeout 300 \
  "${BACKENDS[@]}" -O /tmp/runs/llamacpp
say "llamacpp run rc=$?"
python3 -m llmcompare report /tmp/runs/llamacpp | tail -20
kill_gpu_leftovers
resume_conversions
roofline_of llamacpp
ARGS=()   # every llama.cpp row of the run; agreement.py says which had no successful request
for l in "${BACKENDS[@]}"; do case $l in llamacpp*) ARGS+=("/tmp/runs/llamacpp=$l");; esac; done
python3 benchmarks/gpu/agreement.py /tmp/runs/llamacpp=static "${ARGS[@]}" \
  --json "$OUT/agreement-llamacpp.json"
rm -f /tmp/runs/llamacpp/requests.csv
bundle llamacpp
say "g2 done"
