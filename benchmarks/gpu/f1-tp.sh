#!/usr/bin/env bash
# Tensor-parallel session, call 1 of 2 on nvidia-h200-x2 (carry .gpucarryA, from make-carry-f.sh): unpack
# vLLM part A into /tmp/site and record the environment. Prepared, not yet run on a GPU.
source benchmarks/gpu/setup.sh
exec > >(tee "$OUT/f1.log") 2>&1
# NVLink multicast stays off (KINDS.md): the image sets these; set them again for every child
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
env_block | tee "$OUT/env.txt"
nvidia-smi topo -m | tee "$OUT/topo.txt"
unpack .gpucarryA/A.tar.xz A_done
say "f1 done"
