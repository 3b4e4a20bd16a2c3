#!/usr/bin/env bash
# benchmarks/results/2026-11-22-h200x2 (tensor parallel on a host with 2 × H200), step 1 of 2 (bundle
# .gpucarryA, from make-carry-f.sh): unpack vLLM part A into /tmp/site and record the environment.
source benchmarks/gpu/setup.sh
exec > >(tee "$OUT/f1.log") 2>&1
# NVLink multicast (NVLS) stays off: the image sets these; set them again for every child
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
env_block | tee "$OUT/env.txt"
nvidia-smi topo -m | tee "$OUT/topo.txt"
unpack .gpucarryA/A.tar.xz A_done
say "f1 done"
