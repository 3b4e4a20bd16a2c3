#!/usr/bin/env bash
# The conformance kit against the transformers backend on CUDA (fp16, bf16, fp32), on the GPU host:
#   copy the bundle .whl (platformdirs, from make-wheels.sh) in, then run this from the repository root.
source benchmarks/gpu/setup.sh
install_llmcompare || exit 1
python3 - <<'PY' 2>&1 | tee "$OUT/conformance.txt"
from llmcompare.testing import check_backend
for variant in ("fp16", "bf16", "fp32"):
    print(check_backend("transformers", model="synthetic:smollm2-135m", device="cuda", variant=variant, max_new_tokens=16))
PY
