#!/bin/bash
# Recipe: build the two archives that bring vLLM 0.26.0 to an offline H200 host (Python 3.12, torch 2.11.0+cu130).
# make-carry.sh runs it. Run on a networked build machine. Needs: python3 with pip, a CPython 3.12 (for byte-compiling), xz.  Outputs /tmp/vw-arch/{A,B,C}.tar.xz
set -euo pipefail
PLAT="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_26_x86_64 \
 --platform manylinux_2_24_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64"
PY312=${PY312:-$(command -v python3.12 || ls /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | head -1)}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p /tmp/vw-wheels
# wheels.txt lines "name==version  MiB  file"; take name==version of non-comment lines
grep -v '^#' "$HERE/wheels.txt" | awk '{print $1}' > /tmp/vw-req.txt
python3 -m pip download --no-deps $PLAT -d /tmp/vw-wheels -r /tmp/vw-req.txt
rm -rf /tmp/vw-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir $PLAT --target /tmp/vw-site /tmp/vw-wheels/*.whl
cd /tmp/vw-site
rm -rf bin vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so vllm/vllm-rs vllm/third_party/deep_gemm/_C.cpython-31[0134]-x86_64-linux-gnu.so
"$PY312" -m compileall -q -j2 -s /tmp/vw-site -p /tmp/site . >/dev/null      # pyc valid for CPython 3.12.x
find . -type f | sed 's|^\./||' | sort > /tmp/vw-allfiles.txt
# A: vLLM's 79 MB kernel library alone. pycountry/ and mistral_common/ (3.0 and 3.5 MB as xz) are in B:
# with them, A (62.4 MB) plus the grown working tree went over the 64 MiB of one transfer.
grep -E '^vllm/_C_stable_libtorch.abi3.so$' /tmp/vw-allfiles.txt > /tmp/vw-listA.txt
echo vllm/_moe_C_stable_libtorch.abi3.so > /tmp/vw-listC.txt
grep -v -x -F -f /tmp/vw-listA.txt /tmp/vw-allfiles.txt | grep -v -x -F -f /tmp/vw-listC.txt > /tmp/vw-listB.txt
mkdir -p /tmp/vw-arch
tar -cf - -T /tmp/vw-listA.txt | xz -9 -T1 > /tmp/vw-arch/A.tar.xz &    # vLLM's _C only
tar -cf - -T /tmp/vw-listB.txt | xz -9 -T1 > /tmp/vw-arch/B.tar.xz &    # the rest
wait
ls -la /tmp/vw-arch
# Then ../make-carry.sh copies A into .gpucarryA/ and B into .gpucarryB/, and the GPU host (no network)
# gets them in two steps, one after the other on the same host (/tmp/site must survive between them):
#   1. with .gpucarryA copied in, run `bash benchmarks/gpu/call1.sh` (unpacks A into /tmp/site, installs llmcompare)
#   2. with .gpucarryB copied in, run `bash benchmarks/gpu/call2.sh` (unpacks B, then runs vLLM through llmcompare)
# Each archive must leave room for the working tree under the 64 MiB of one transfer. Before the
# rebalance A was 62.4 MB and B 44.7 MB; make-carry.sh prints the sizes of what it copies.
