# Sourced by every step script on the GPU host (repository root as cwd). The host is offline: each step runs
# in a fresh copy of the working tree, with its bundles copied in; /tmp and the image's venv survive from one
# step to the next only while the host keeps its scratch space, which is how the two vLLM archives add up in
# /tmp/site.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT" /tmp/site /tmp/gpustate /tmp/runs
REPO=$(pwd)
T0=$(date +%s)
CALL_LIMIT=${CALL_LIMIT:-585}   # seconds this step may use (for a scheduler that stops a job at 600 s)

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( CALL_LIMIT - $(date +%s) + T0 )); }   # seconds left in this step
say() { echo "[$(elapsed)s] $*"; }

unpack() {  # unpack ARCHIVE into /tmp/site once per machine; TAG marks it done
  local archive=$1 tag=$2
  if [ -e "/tmp/gpustate/$tag" ]; then say "archive $tag already unpacked"; return 0; fi
  say "unpacking $archive"
  xz -T0 -dc "$archive" | tar -xf - -C /tmp/site && touch "/tmp/gpustate/$tag"
  say "unpacked $tag rc=$?"
}

install_llmcompare() {  # editable install of this copy, or of a bundled snapshot (make-carry-b.sh)
  if ! python3 -c "import platformdirs" 2>/dev/null; then  # its wheel: */whl (make-carry*.sh) or .whl (make-wheels.sh)
    python3 -m pip install -q --no-index --no-deps --no-cache-dir $(ls .gpucarryA/whl/platformdirs-*.whl .gpucarryB/whl/platformdirs-*.whl .gpucarryC/whl/platformdirs-*.whl .gpucarryD/whl/platformdirs-*.whl .whl/platformdirs-*.whl 2>/dev/null | head -1) || return 1
  fi
  local src=. snap
  snap=$(ls .gpucarryA/lcsnap.tgz .gpucarryB/lcsnap.tgz .gpucarryC/lcsnap.tgz .gpucarryD/lcsnap.tgz .whl/lcsnap.tgz 2>/dev/null | head -1)
  if [ -n "$snap" ]; then  # HEAD's package plus named files: never the working tree's work in progress
    src=/tmp/lcsrc-$(sha256sum "$snap" | cut -c1-12)
    [ -d "$src" ] || { mkdir -p "$src.tmp" && tar -xzf "$snap" -C "$src.tmp" && mv "$src.tmp" "$src"; } || return 1
    say "llmcompare from $snap: $(tr '\n' ' ' < "$src/LLMCOMPARE_SNAPSHOT")"
  fi
  if [ "$src" != . ] && PYTHONPATH= python3 -c "import llmcompare, sys; sys.exit(not llmcompare.__file__.startswith('$src/'))" 2>/dev/null; then
    say "llmcompare already installed from $src"
  elif ! (cd "$src" && PYTHONPATH= python3 -m pip install -q --no-deps --no-build-isolation --no-index -e .); then
    # Fallback: the package-dir mapping laid out by hand (llmcompare.backends = backends/, .prompts = prompts/).
    say "editable install failed; putting a copy laid out as the package on PYTHONPATH"
    rm -rf /tmp/lcpkg && mkdir -p /tmp/lcpkg && cp -r "$src/llmcompare" /tmp/lcpkg/ \
      && cp -r "$src/backends" /tmp/lcpkg/llmcompare/backends && cp -r "$src/prompts" /tmp/lcpkg/llmcompare/prompts || return 1
    export PYTHONPATH=/tmp/lcpkg:$PYTHONPATH
  fi
  python3 -c "import llmcompare, llmcompare.backends.vllm, llmcompare.scenarios.loadgen, platformdirs; print('llmcompare', llmcompare.__file__)"
}

env_block() {  # the environment the numbers were taken in
  date -u +%FT%TZ; uname -r; nproc; free -g | head -2
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.limit --format=csv
  nvcc --version 2>/dev/null | tail -2
  python3 - <<'PY'
import sys, importlib.metadata as md
print("python", sys.version.split()[0], sys.executable)
for n in ("torch", "transformers", "vllm", "llmcompare", "platformdirs", "numpy", "triton", "nvidia-ml-py", "aiohttp"):
    try:
        print(f"  {n}=={md.version(n)}")
    except md.PackageNotFoundError:
        print(f"  {n}: not installed")
try:
    import torch
    print("  torch.version.cuda", torch.version.cuda, "| device", torch.cuda.get_device_name(0))
except Exception as e:
    print("  torch cuda:", e)
PY
}

bundle() {  # tar.gz a run directory into $OUT (the tool brings back 8 files at most)
  local name=$1
  [ -d "/tmp/runs/$name" ] && tar -czf "$OUT/run-$name.tar.gz" -C /tmp/runs "$name" && say "bundled $name: $(du -h "$OUT/run-$name.tar.gz" | cut -f1)"
}

roofline_of() {  # llmcompare's own floor and % of floor for /tmp/runs/NAME: kept in the run dir, and printed
  local d=/tmp/runs/$1
  [ -d "$d" ] || return 0
  python3 -m llmcompare.hardware.roofline "$d" --json > "$d/roofline.json"
  python3 -m llmcompare.hardware.roofline "$d"
}

kill_gpu_leftovers() {  # engine processes this step started and left behind, by pid (never a conversion's)
  local p g
  for p in $(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null); do
    g=$(ps -o pgid= -p "$p" 2>/dev/null | tr -d ' ')
    if [ -n "$g" ] && [ -s /tmp/gpustate/conversion-pgids ] && grep -qx "$g" /tmp/gpustate/conversion-pgids; then continue; fi
    say "killing leftover GPU process $p"; kill -9 "$p" 2>/dev/null
  done
}

# Conversions that h-convert.sh started, each in a process group of its own (setsid), listed here so a
# timed run can have the GPU to itself: pause_conversions stops every group (SIGSTOP; the converter keeps
# its GPU memory but launches nothing) and waits until the GPU reads idle; resume_conversions goes on.
CONVERSIONS=/tmp/gpustate/conversion-pgids
pause_conversions() {
  [ -s "$CONVERSIONS" ] || return 0
  local g u i
  for g in $(cat "$CONVERSIONS"); do kill -STOP -- "-$g" 2>/dev/null && say "paused conversion group $g"; done
  for i in $(seq 30); do   # in-flight kernels finish
    u=$(nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>/dev/null | head -1)
    [ "$u" = 0 ] && break; sleep 1
  done
  say "GPU with the conversions paused: $(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null)"
}
resume_conversions() {
  [ -s "$CONVERSIONS" ] || return 0
  local g
  for g in $(cat "$CONVERSIONS"); do kill -CONT -- "-$g" 2>/dev/null && say "resumed conversion group $g"; done
  return 0
}

export PYTHONSAFEPATH=1 PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 LLMCOMPARE_CACHE_DIR=/tmp/llmcompare-cache \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false

# vLLM options every vLLM run here uses: 0.85 of the GPU and a 2048-token context, and no FlashInfer
# sampler (FlashInfer is not shipped).
VLLM_OPTS=(-o vllm.gpu_memory_utilization=0.85 -o vllm.max_model_len=2048 -o vllm.flashinfer_sampler=false)
SHAPE=(--model synthetic:llama-2-7b --device cuda --input-tokens 256 -n 256)
