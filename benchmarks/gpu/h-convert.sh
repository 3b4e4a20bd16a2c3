#!/usr/bin/env bash
# Background conversions for benchmarks/results/2026-11-23-h200 (started by h1-start.sh with setsid, from a
# copy in /tmp/gpustate, so that it runs on past the step that started it, while the host is up):
#   1. exllamav3's and exllamav2's CUDA extensions built just in time (sm_90, MAX_JOBS=8 each, side by
#      side), and beside them the 7B shape's fp16 checkpoint (llmcompare.models.quantize.fp16_source, on the GPU);
#   2. `python -m llmcompare.models.quantize exl3 -m synthetic:llama-2-7b` and `... exl2 ...` side by side, each
#      in a process group of its own, listed in /tmp/gpustate/conversion-pgids: pause_conversions
#      (setup.sh) stops them while a timed run has the GPU, resume_conversions lets them go on.
# Everything goes to /tmp/runs/qlogs: pipeline.log (what started and ended when), build-*.log, the
# converters' logs (exl3/, exl2/), and status (one line per conversion: rc and seconds).
# METHODS (default "exl3 exl2") names the conversions; EXL2_MEASUREMENT, a measurement.json of an earlier
# EXL2 conversion of the same weights, skips EXL2's measurement pass (--measurement).
# Needs the environment h1-start.sh exports (setup.sh's PYTHONPATH, LLMCOMPARE_CACHE_DIR, ...).
set -u
Q=/tmp/runs/qlogs
mkdir -p "$Q"
: > /tmp/gpustate/conversion-pgids
log() { echo "[$(date -u +%T)] $*" >> "$Q/pipeline.log"; }
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=8
METHODS=${METHODS:-exl3 exl2}
engine() { [ "$1" = exl3 ] && echo exllamav3 || echo exllamav2; }
log "pipeline started, pid $$: $METHODS${EXL2_MEASUREMENT:+, EXL2 measurement $EXL2_MEASUREMENT}"
builds=()
for e in $(for m in $METHODS; do engine "$m"; done); do
  ( s=$(date +%s); timeout -k 10 900 python3 -c "import $e, importlib.metadata as m; print('$e', m.version('$e'))" \
      > "$Q/build-$e.log" 2>&1; echo "rc=$? seconds=$(( $(date +%s) - s ))" >> "$Q/build-$e.log" ) &
  builds+=($!)
done
s=$(date +%s)
python3 -c "from llmcompare.models import resolve_model
from llmcompare.models.quantize import fp16_source
print(fp16_source(resolve_model('synthetic:llama-2-7b')))" > "$Q/fp16-source.out" 2>&1
log "fp16 source rc=$? seconds=$(( $(date +%s) - s )): $(tail -n1 "$Q/fp16-source.out")"
wait "${builds[@]}"
log "extension builds: $(tail -qn1 "$Q"/build-*.log | tr '\n' ' ')"
convs=()
for m in $METHODS; do
  e=$(engine "$m")
  if ! tail -n1 "$Q/build-$e.log" | grep -q '^rc=0 '; then log "$m not started: the $e build failed"; continue; fi
  extra=()
  [ "$m" = exl2 ] && [ -n "${EXL2_MEASUREMENT:-}" ] && extra=(--measurement "$EXL2_MEASUREMENT")
  # setsid: the converter and its child get a process group of their own, whose id ($$ of that bash) is listed
  setsid bash -c 'echo $$ >> /tmp/gpustate/conversion-pgids; s=$(date +%s); m=$1 q=$2; shift 2
    python3 -m llmcompare.models.quantize "$m" -m synthetic:llama-2-7b --log-dir "$q/$m" "$@" > "$q/$m.out" 2>&1
    echo "$m rc=$? seconds=$(( $(date +%s) - s )) $(tail -n1 "$q/$m.out")" >> "$q/status"' _ "$m" "$Q" "${extra[@]}" &
  convs+=($!)
  log "$m started"
done
wait "${convs[@]}"
log "conversions ended: $(tr '\n' ' ' < "$Q/status" 2>/dev/null)"
