#!/usr/bin/env bash
# The conformance kit against the transformers backend on CUDA (fp16, bf16), on the lent GPU.
set -uo pipefail
OUT=${OUT:-/tmp/llmcompare-gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 LLMCOMPARE_CACHE_DIR=/tmp/llmcompare-cache
cd /tmp
python3 - <<'PY' 2>&1 | tee "$OUT/conformance.txt"
from llmcompare.testing import check_backend
for variant in ("fp16", "bf16", "fp32"):
    print(check_backend("transformers", model="synthetic:smollm2-135m", device="cuda", variant=variant, max_new_tokens=16))
PY
