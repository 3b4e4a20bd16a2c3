"""What the harness adds to the numbers it reports. Not a timed test: run it by hand.

    python benchmarks/overhead.py [--tokens 64] [--rounds 1] [--json benchmarks/results/overhead-cpu.json]

1. Per-token overhead on a zero-delay echo backend: the session's request path (``session.request``:
   timestamps, the Generation -> RequestRecord conversion and the JSONL append) against calling the
   backend's generate() bare, in the same process.
2. For each CPU engine (transformers fp32, ctranslate2 int8, llamacpp): llmcompare's tok/s (the
   adapter through the session's request path) against the engine's own bare loop, in the same process
   and run, interleaved A/B per prompt so that drift hits both equally. tok/s = N / e2e per request;
   overhead = 1 - median(llmcompare tok/s) / median(bare tok/s), with a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time

from llmcompare.analysis.metrics import bootstrap_ratio
from llmcompare.backend import clock
from llmcompare.config.spec import BackendRequest
from llmcompare.hardware import environment
from llmcompare.models import resolve_model
from llmcompare.models.prompting import Prompt, read_prompts, tokenize
from llmcompare.plugins import get_registry
from llmcompare.records import RecordWriter
from llmcompare.runner.session import BackendSession


def open_session(name: str, variant: str | None, model) -> BackendSession:
    spec = get_registry().get(name)
    request = BackendRequest(name, name, variant, spec.validate_options({}))
    return BackendSession(request, model, raise_errors=True)


def echo_overhead(n_tokens: int, n_requests: int = 2000) -> dict:
    model = resolve_model("synthetic:smollm2-135m")  # no file needed: echo never reads it
    prompt_ids = list(range(100, 132))
    prompt = Prompt("p", "x", tuple(prompt_ids))
    with tempfile.TemporaryDirectory() as d, RecordWriter(os.path.join(d, "r.jsonl")) as w, \
            open_session("echo", None, model) as session:
        b = session.backend
        bare, harness = [], []
        for i in range(n_requests):
            t = clock()
            b.generate(prompt_ids, n_tokens)
            bare.append(clock() - t)
            t = clock()
            w.write(session.request(prompt, n_tokens, request_id=f"p/r{i}", repeat=i))
            harness.append(clock() - t)
    bare_us = statistics.median(bare) / n_tokens * 1e6
    harness_us = statistics.median(harness) / n_tokens * 1e6
    return {"tokens_per_request": n_tokens, "requests": n_requests, "bare_us_per_token": bare_us,
            "harness_us_per_token": harness_us, "overhead_us_per_token": harness_us - bare_us}


def bare_transformers(backend, ids, n):
    import torch
    from transformers import GenerationConfig

    x = torch.tensor([ids])
    cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=n, min_new_tokens=n,
                           pad_token_id=backend.model.config.eos_token_id)
    t = clock()
    with torch.inference_mode():
        out = backend.model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=cfg)
    dt = clock() - t
    assert out.shape[1] - x.shape[1] == n
    return dt


def bare_ctranslate2(backend, ids, n):
    tokens = backend.tokenizer.convert_ids_to_tokens(ids)
    t = clock()
    count = sum(1 for _ in backend.generator.generate_tokens(tokens, max_length=n, min_length=n, sampling_topk=1))
    dt = clock() - t
    assert count == n
    return dt


def bare_llamacpp(backend, ids, n):
    llm = backend.llm
    t = clock()
    llm.reset()
    count = 0
    for _ in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        count += 1
        if count == n:
            break
    dt = clock() - t
    assert count == n
    return dt


ENGINES = [("transformers", "fp32", bare_transformers, "transformers"),
           ("ctranslate2", "int8", bare_ctranslate2, "ctranslate2"),
           ("llamacpp", None, bare_llamacpp, "llama_cpp")]


def engine_overhead(n_tokens: int, rounds: int) -> list[dict]:
    model = resolve_model(None)
    prompts = tokenize(read_prompts("default"), model.tokenizer())
    out = []
    for name, variant, bare_fn, module in ENGINES:
        if importlib.util.find_spec(module) is None:
            print(f"skip {name}: not installed", file=sys.stderr)
            continue
        session = open_session(name, variant, model).__enter__()
        backend = session.backend
        backend.generate(list(prompts[0].token_ids), 4)  # warm-up
        bare_fn(backend, list(prompts[0].token_ids), 4)
        bare, harness = [], []
        with tempfile.TemporaryDirectory() as d, RecordWriter(os.path.join(d, "r.jsonl")) as w:
            for r in range(rounds):
                for i, p in enumerate(prompts):
                    ids = list(p.token_ids)
                    order = (0, 1) if (i + r) % 2 == 0 else (1, 0)  # alternate who goes first
                    for which in order:
                        if which == 0:
                            bare.append(n_tokens / bare_fn(backend, ids, n_tokens))
                        else:
                            t = clock()
                            rec = session.request(p, n_tokens, request_id=f"{p.id}/r{r}", repeat=r)
                            w.write(rec)
                            assert rec.output_tokens == n_tokens, rec.error
                            harness.append(n_tokens / (clock() - t))
        session.__exit__(None, None, None)
        b, h = statistics.median(bare), statistics.median(harness)
        ci = bootstrap_ratio(bare, harness)  # llmcompare / bare, 95% CI
        out.append({"backend": f"{name}:{variant}" if variant else name, "requests_each": len(bare),
                    "bare_tok_s_p50": b, "llmcompare_tok_s_p50": h, "overhead_pct": 100 * (1 - h / b),
                    "overhead_pct_ci95": [100 * (1 - ci["hi"]), 100 * (1 - ci["lo"])],
                    "within_noise": ci["within_noise"], "bare_tok_s": bare, "llmcompare_tok_s": harness})
        print(f"{out[-1]['backend']}: bare {b:.2f} tok/s, llmcompare {h:.2f} tok/s, overhead {out[-1]['overhead_pct']:+.2f}%",
              file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--echo-only", action="store_true", help="section 1 only (no engines)")
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    echo = echo_overhead(args.tokens)
    print(f"echo: harness adds {echo['overhead_us_per_token']:.2f} µs/token "
          f"(bare {echo['bare_us_per_token']:.2f}, through the session's request path {echo['harness_us_per_token']:.2f})", file=sys.stderr)
    engines = [] if args.echo_only else engine_overhead(args.tokens, args.rounds)
    result = {"command": " ".join(["python", "benchmarks/overhead.py", *sys.argv[1:]]), "started": started,
              "echo": echo, "engines": engines,
              "environment": environment.capture(["ctranslate2", "llama_cpp_python", "transformers", "torch"])}
    print("\n| backend | requests each | bare tok/s (p50) | llmcompare tok/s (p50) | overhead | 95% CI |\n|---|---|---|---|---|---|")
    for e in engines:
        lo, hi = e["overhead_pct_ci95"]
        print(f"| {e['backend']} | {e['requests_each']} | {e['bare_tok_s_p50']:.2f} | {e['llmcompare_tok_s_p50']:.2f}"
              f" | {e['overhead_pct']:+.2f}% | [{lo:+.2f}%, {hi:+.2f}%]{' within noise' if e['within_noise'] else ''} |")
    print(f"\nzero-delay echo: {echo['overhead_us_per_token']:.2f} µs/token added by the harness")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
