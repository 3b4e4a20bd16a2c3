#!/usr/bin/env bash
# llama.cpp on CUDA, step 1 of 2 (bundle .gpucarryG, make-carry-g.sh), a fresh host: install the bundled
# wheels (llama_cpp.server's and gguf's dependencies, llmcompare's snapshot), check that the server's
# imports resolve, then build llama-cpp-python 0.3.36 from the stripped source package for sm_90 with
# CUDA (CMake + ninja, 16 jobs) and
# install it into /tmp/site; last, an import check that prints llama_supports_gpu_offload() and
# `python -m llama_cpp.server --help`. When the snapshot has the GGUF recipe (GGUF=0 turns this off): beside
# the build, the fp16 checkpoint of synthetic:llama-2-7b that the GGUFs start from (built on the GPU); after
# the checks, in the time left, `python -m llmcompare.models.quantize gguf -m synthetic:llama-2-7b --type f16`,
# then `--type q4_0` (the recipe imports llama_cpp, so not before). All cached in /tmp/llmcompare-cache:
# g2's same commands are cache hits, and make what g1 had no time for.
# Expected: the build 257-442 s on an H200 host (benchmarks/results/2026-11-23-h200/timings.json), then the
# GGUFs until about 15 s before the step's time limit.
# Resumable: the source is unpacked once into /tmp/llcpp/src and scikit-build-core builds in the
# persistent /tmp/llcpp/build (build-dir), with the build stopped BUILD_MARGIN s (default 60) before the
# step's time limit. If it stops there, run this script again on the same host: ninja goes on where
# it was. Once installed, /tmp/gpustate/llamacpp-cuda marks it and a rerun only checks the import.
# Where the loader cannot find CUDA's libraries by itself, /tmp/gpustate/llamacpp.env gets the
# LD_LIBRARY_PATH that finds them (g2 sources it).
# NICE=N builds at that niceness (h1-start.sh: behind the ExLlama extension builds that gate the conversions).
# On a machine without nvcc or a GPU it stops with one line before the build (exit 3).
# $OUT gets: g1.log, env.txt, build-llamacpp.log (pip's and CMake's output), libs.txt, server-help.txt;
# the fp16 source's and the conversions' output stays in /tmp/runs/gguf-logs (g2 bundles it).
source benchmarks/gpu/setup-c.sh
exec > >(tee -a "$OUT/g1.log") 2>&1
CARRY=.gpucarryG
LLCPP=/tmp/llcpp                       # src/ (unpacked once), build/ (kept between steps), dist/ (the wheel)
BUILD_MARGIN=${BUILD_MARGIN:-60}       # seconds left after the build for install and checks
GGUF=${GGUF:-1}                        # 1: the fp16 source beside the build, the GGUFs after it (time permitting)
SDIST=$CARRY/llama_cpp_python-0.3.36.tar.gz
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
# llama-cpp-python's CMakeLists adds vendor/llama.cpp (so tests, examples, tools and server default OFF
# there; named anyway) and tools/mtmd unless LLAVA_BUILD=OFF: llmcompare needs no multimodal library.
# LLAMA_OPENSSL=OFF: the common library's HTTP client is never used (no downloads here).
# -Wl,--exclude-libs,ALL: the machine's compiler (/opt/gcc) links libstdc++ statically into libggml-cuda.so,
# which then exported thousands of std:: symbols; where numpy was loaded first (as in llmcompare's worker),
# libllama bound its std::ostream calls to that copy and segfaulted in llama_model::print_info (found with
# cuda-gdb). With the archives' symbols hidden, few remain and the same load runs.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF -DLLAVA_BUILD=OFF -DGGML_CCACHE=OFF -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--exclude-libs,ALL}"

if [ -e /tmp/gpustate/llamacpp-cuda ]; then
  say "llama-cpp-python with CUDA already installed on this machine: checks only"
else
  install_carry "$CARRY" || { say "install FAILED"; exit 4; }
  env_block > "$OUT/env.txt" 2>&1
  python3 - <<'PY' || { say "the bundled wheels do not import: fix make-carry-g.sh before building"; exit 4; }
import importlib, importlib.metadata as md
for mod, dist in [("diskcache", "diskcache"), ("fastapi", "fastapi"), ("starlette", "starlette"),
                  ("uvicorn", "uvicorn"), ("sse_starlette", "sse-starlette"),
                  ("starlette_context", "starlette-context"), ("pydantic", "pydantic"),
                  ("pydantic_settings", "pydantic-settings"), ("anyio", "anyio"),
                  ("typing_extensions", "typing-extensions"), ("gguf", "gguf"), ("jinja2", "jinja2"),
                  ("numpy", "numpy"), ("yaml", "pyyaml"), ("click", "click"), ("h11", "h11")]:
    m = importlib.import_module(mod)
    print(f"  {dist}=={md.version(dist)}  {m.__file__}")
PY
  command -v nvcc > /dev/null && nvidia-smi -L > /dev/null 2>&1 \
    || { say "STOP: no nvcc or no GPU on this machine; the CUDA build runs on the GPU machine only"; exit 3; }
  [ -d "$LLCPP/src" ] || { mkdir -p "$LLCPP" && rm -rf "$LLCPP/unpack" && mkdir "$LLCPP/unpack" \
    && tar -xzf "$SDIST" -C "$LLCPP/unpack" && mv "$LLCPP/unpack/llama_cpp_python-0.3.36" "$LLCPP/src"; } \
    || { say "unpacking $SDIST FAILED"; exit 4; }
  head -2 "$LLCPP/src/STRIPPED.txt"
  say "$(nvcc --version | tail -1); $(cmake --version | head -1); scikit-build-core $(python3 -c 'import importlib.metadata as m; print(m.version("scikit-build-core"))')"
  say "CMAKE_ARGS=$CMAKE_ARGS"
  budget=$(( $(left) - BUILD_MARGIN ))
  src16=
  if [ "$GGUF" = 1 ]; then
    # The 7B shape's fp16 checkpoint, which both GGUFs start from, beside the build (the GPU builds the
    # weights; saving them takes a core or two of the sixteen). Cached in $LLMCOMPARE_CACHE_DIR.
    mkdir -p /tmp/runs/gguf-logs
    ( s=$(date +%s)
      timeout -k 10 "$budget" python3 -c "from llmcompare.models import resolve_model
from llmcompare.models.quantize import fp16_source
print(fp16_source(resolve_model('synthetic:llama-2-7b')))" > /tmp/runs/gguf-logs/fp16-source.out 2>&1
      echo "fp16 source (g1, beside the build) rc=$? seconds=$(( $(date +%s) - s ))" >> /tmp/runs/gguf-logs/status ) &
    src16=$!   # (wait names its pid: a bare wait would also wait for the tee of exec > >(tee))
    say "building the fp16 source of synthetic:llama-2-7b beside the build, pid $src16"
  fi
  [ -d "$LLCPP/build" ] && say "resuming the build in $LLCPP/build"
  say "building llama-cpp-python (CMAKE_BUILD_PARALLEL_LEVEL=$CMAKE_BUILD_PARALLEL_LEVEL, at most $budget s)"
  s=$(date +%s)
  timeout -k 15 "$budget" ${NICE:+nice -n "$NICE"} python3 -m pip wheel -v --no-index --no-build-isolation --no-deps --no-cache-dir \
    -w "$LLCPP/dist" --config-settings=build-dir="$LLCPP/build" "$LLCPP/src" >> "$OUT/build-llamacpp.log" 2>&1
  rc=$?
  echo "build rc=$rc seconds=$(( $(date +%s) - s ))${src16:+ (the fp16 source built beside it)}" \
    | tee -a /tmp/gpustate/llamacpp-build-times
  if [ -n "$src16" ]; then
    case $rc in 0|124|137) say "waiting for the fp16 source (pid $src16)"; wait "$src16";; *) kill "$src16" 2>/dev/null;; esac
    tail -n1 /tmp/runs/gguf-logs/status
  fi
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    grep -o '\[[0-9]*/[0-9]*\]' "$OUT/build-llamacpp.log" | tail -1
    say "the build reached the step's time limit: run g1-llamacpp-build.sh again on this host to resume it"; exit 5
  elif [ $rc -ne 0 ]; then
    tail -40 "$OUT/build-llamacpp.log"; say "build FAILED"; exit 6
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$LLCPP"/dist/llama_cpp_python-0.3.36-*.whl || { say "installing the wheel FAILED"; exit 6; }
  ls -la "$LLCPP"/dist/
  touch /tmp/gpustate/llamacpp-cuda
fi

lib=/tmp/site/llama_cpp/lib
if ldd "$lib/libggml-cuda.so" 2>/dev/null | grep -q "not found"; then  # libcudart/libcublas: the toolkit's or torch's
  purelib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  dirs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib "$purelib"/nvidia/*/lib \
         "$purelib"/nvidia/cu13/lib 2>/dev/null | tr '\n' ':')
  echo "export LD_LIBRARY_PATH=${dirs}\${LD_LIBRARY_PATH:-}" > /tmp/gpustate/llamacpp.env
  say "CUDA libraries not found by the loader: /tmp/gpustate/llamacpp.env sets LD_LIBRARY_PATH=$dirs"
fi
[ -f /tmp/gpustate/llamacpp.env ] && source /tmp/gpustate/llamacpp.env
{ ls -la "$lib"; for f in "$lib"/*.so; do echo "== $f"; ldd "$f" | grep -E "cuda|cublas|not found"; done; } > "$OUT/libs.txt" 2>&1
grep -E "not found" "$OUT/libs.txt" && say "some libraries still unresolved (libs.txt)"
python3 -c "
import llama_cpp
print('llama_cpp', llama_cpp.__version__, llama_cpp.__file__)
print('llama_supports_gpu_offload', llama_cpp.llama_supports_gpu_offload())
print(llama_cpp.llama_print_system_info().decode())
" || { say "import check FAILED"; exit 7; }
python3 -m llama_cpp.server --help > "$OUT/server-help.txt" 2>&1 && head -3 "$OUT/server-help.txt" \
  || { tail -5 "$OUT/server-help.txt"; say "python -m llama_cpp.server --help FAILED"; exit 7; }
python3 -c "import sys, llama_cpp; sys.exit(not llama_cpp.llama_supports_gpu_offload())" \
  || { say "STOP: llama_supports_gpu_offload() is False: this build has no CUDA backend"; exit 7; }
df -h /tmp | tail -1
if [ "$GGUF" = 1 ] && python3 -m llmcompare.models.quantize gguf --help > /dev/null 2>&1; then
  # The GGUFs for g2 (the recipe needs llama_cpp: after the install), in the time this step has left;
  # an unfinished one starts again in g2.
  mkdir -p /tmp/runs/gguf-logs
  for t in f16 q4_0; do
    budget=$(( $(left) - 15 )); [ "$budget" -gt 30 ] || { say "no time left in g1 for the $t GGUF (g2 makes it)"; break; }
    s=$(date +%s)
    timeout -k 10 "$budget" python3 -m llmcompare.models.quantize gguf -m synthetic:llama-2-7b --type "$t" \
      --log-dir "/tmp/runs/gguf-logs/$t" > "/tmp/runs/gguf-logs/$t-g1.out" 2>&1
    echo "$t (g1) rc=$? seconds=$(( $(date +%s) - s )) $(tail -n1 "/tmp/runs/gguf-logs/$t-g1.out")" \
      | tee -a /tmp/runs/gguf-logs/status
  done
  df -h /tmp | tail -1
fi
say "g1 done"
