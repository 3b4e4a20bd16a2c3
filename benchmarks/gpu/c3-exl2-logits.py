"""Why exllamav2:fp16's greedy ids differ from transformers:fp16 from the first token (2026-11-22-h200-c):
the last-position logits of one 256-token prompt through transformers (fp16, the fp16_source checkpoint)
and through ExLlamaV2 (same files, no cache, and with a cache), and what ExLlamaV2's config read.

    python3 benchmarks/gpu/c3-exl2-logits.py [LENGTH ...]   (default 256; on the GPU host, after the install)

Each length is run twice: with ExLlamaV2's config as it loads (``no_sdpa`` False: without flash-attn
and xformers its prefill takes the SDPA branch) and with ``no_sdpa`` True (the matmul branch, which
llmcompare's adapter now selects; benchmarks/results/2026-11-22-h200-d/exl2-logits.json).

A 1-token prompt leaves attention nothing to mix (softmax over one position is 1 whatever its mask or
scale), so agreement there and not at 256 points at attention.
"""
import json
import sys
import torch
from llmcompare.models import resolve_model
from llmcompare.models.quantize import fp16_source

src = str(fp16_source(resolve_model("synthetic:llama-2-7b")))
cfg = json.load(open(f"{src}/config.json"))
print("config.json keys:", {k: cfg[k] for k in cfg if "rope" in k or "eps" in k or "dtype" in k or "head" in k})
LENGTHS = [int(a) for a in sys.argv[1:]] or [256]
g = torch.Generator().manual_seed(0)
full = torch.randint(100, 31000, (1, max(LENGTHS)), generator=g)

from transformers import AutoModelForCausalLM
hf = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float16, device_map="cuda").eval()
with torch.no_grad():
    refs = {n: hf(full[:, :n].cuda()).logits[0, -1].float().cpu() for n in LENGTHS}
del hf; torch.cuda.empty_cache()

from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config
for no_sdpa in (False, True):
    c = ExLlamaV2Config(src)
    c.no_sdpa = no_sdpa
    print(f"exllamav2 read (no_sdpa={no_sdpa}):", {k: getattr(c, k, "?") for k in (
        "rotary_embedding_base", "norm_eps", "head_dim", "scale_pos_emb", "scale_alpha_value", "max_seq_len",
        "no_flash_attn", "no_xformers", "no_sdpa")})
    m = ExLlamaV2(c)
    cache = ExLlamaV2Cache(m, max_seq_len=4096, lazy=True)
    m.load_autosplit(cache, progress=False)
    for n in LENGTHS:
        ids, ref = full[:, :n], refs[n]
        with torch.no_grad():
            x = m.forward(ids)[0, -1].float().cpu()
        print(f"no_sdpa={no_sdpa} length {n}: exl2 top1 {int(x.argmax())} (hf {int(ref.argmax())}),"
              f" max|diff| {float((x - ref).abs().max()):.4f},"
              f" cos {float(torch.nn.functional.cosine_similarity(x, ref, dim=0)):.6f}")
    m.unload()
    del m, cache
    torch.cuda.empty_cache()
