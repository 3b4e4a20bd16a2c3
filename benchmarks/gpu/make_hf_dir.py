"""Write ``synthetic:<shape>`` as an HF model directory in float16, built on the GPU in seconds.

    python benchmarks/gpu/make_hf_dir.py llama-2-7b /tmp/l7b-hf

The weights are :func:`llmcompare.models.synthetic.build_model`'s seeded random ones, drawn on ``cuda``; the
tokenizer is the shape's synthetic byte-level one. Backends that need files (CTranslate2's converter,
``transformers`` with ``--model DIR``) then all read the same weights, so their greedy ids can be
compared. llmcompare's own ``synthetic:`` → HF conversion builds in float32 on the CPU (27 GB for
this shape), which the GPU session has no time for.
"""

import json
import sys
import time

import torch

from llmcompare.models import synthetic

shape, out = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
model = synthetic.build_model(shape, dtype=torch.float16, device="cuda")
torch.cuda.synchronize()
t1 = time.perf_counter()
model.save_pretrained(out)
synthetic.build_tokenizer(shape).save_pretrained(out)
t2 = time.perf_counter()
print(json.dumps({"shape": shape, "dir": out, "parameters": sum(p.numel() for p in model.parameters()),
                  "build_s": round(t1 - t0, 2), "save_s": round(t2 - t1, 2)}))
