"""What llmcompare adds to vLLM's batch-1 figures: the adapter and session against a bare AsyncLLM loop.

    python benchmarks/gpu/vllm_overhead.py [--rounds 3] [--tokens 256] [--input-tokens 256] [--json FILE] [-o vllm.KEY=VALUE ...]
        [--model synthetic:llama-2-7b] [--device cuda] [--variant fp16]

One process, one engine: the ``vllm:fp16`` backend is loaded through :class:`BackendSession` (exactly as
the latency driver does), by default on ``synthetic:llama-2-7b`` on CUDA. Each prompt then runs twice, A/B interleaved
(who goes first alternates), on that one engine:

* llmcompare: ``session.request(...)`` (the sync wrapper over the adapter's ``astream``, chunk
  building, ``collect`` and the record), as ``llmcompare run`` times it;
* bare: a coroutine on the session's event loop (AsyncLLM's output handler is bound to it) that calls
  ``engine.generate`` with the adapter's own sampling parameters and stamps each output with
  :func:`llmcompare.backend.clock`, nothing else.

Both are reduced the same way: ms/token = e2e / N (from the hand-over), TPOT = (last − first) /
(N − 1). overhead = median(llmcompare) / median(bare) − 1, with a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

from llmcompare.hardware import environment
from llmcompare.backend import clock
from llmcompare.analysis.metrics import bootstrap_ratio, tpot
from llmcompare.models import resolve_model
from llmcompare.plugins import get_registry
from llmcompare.models.prompting import Prompt
from llmcompare.runner.session import BackendSession
from llmcompare.config.spec import BackendRequest, parse_options


def sampling_params(n: int):
    """The adapter's request parameters (backends/vllm.py, ``astream``), repeated for the bare loop."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(temperature=0.0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0,
                          frequency_penalty=0.0, max_tokens=n, min_tokens=n, ignore_eos=True, detokenize=False,
                          output_kind=RequestOutputKind.DELTA)


async def bare_request(engine, ids: list[int], n: int, request_id: str) -> tuple[float, list[float], int]:
    """(hand-over time, one clock() per output, tokens) straight from ``AsyncLLM.generate``."""
    from vllm.inputs import TokensPrompt

    t0 = clock()
    stamps: list[float] = []
    count = 0
    async for out in engine.generate(TokensPrompt(prompt_token_ids=ids), sampling_params(n), request_id):
        now = clock()
        k = len(out.outputs[0].token_ids)
        if k:
            stamps.extend([now] * k)
            count += k
    return t0, stamps, count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--input-tokens", type=int, default=256)
    ap.add_argument("--variant", default="fp16")
    ap.add_argument("--model", default="synthetic:llama-2-7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    ap.add_argument("-o", "--option", action="append", default=[], help="vllm.KEY=VALUE, as for llmcompare")
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    n = args.tokens

    model = resolve_model(args.model)
    spec = get_registry().get("vllm")
    options = {k: v for scope, k, v in parse_options(args.option) if scope in (None, "vllm")}
    request = BackendRequest(f"vllm:{args.variant}", "vllm", args.variant, spec.validate_options(options))
    rng = random.Random(0)
    vocab = model.tokenizer().vocab_size
    prompts = [Prompt(f"p{i}", "", tuple(rng.randrange(3, vocab) for _ in range(args.input_tokens)))
               for i in range(args.prompts)]

    rows = {"llmcompare": {"ms_per_token": [], "tpot_ms": []}, "bare": {"ms_per_token": [], "tpot_ms": []}}
    with BackendSession(request, model, device=args.device, raise_errors=True) as session:
        engine = session.backend.engine
        ids_counter = iter(range(10**9))

        def run_harness(p: Prompt) -> None:
            rec = session.request(p, n, request_id=f"{p.id}/h")
            assert rec.error is None and rec.output_tokens == n, (rec.error, rec.output_tokens)
            rows["llmcompare"]["ms_per_token"].append(rec.e2e_s / n * 1e3)
            rows["llmcompare"]["tpot_ms"].append(tpot(rec.token_times_s) * 1e3)

        def run_bare(p: Prompt) -> None:
            t0, stamps, count = session.run(bare_request(engine, list(p.token_ids), n, f"bare-{next(ids_counter)}"))
            assert count == n, count
            rows["bare"]["ms_per_token"].append((stamps[-1] - t0) / n * 1e3)
            rows["bare"]["tpot_ms"].append((stamps[-1] - stamps[0]) / (n - 1) * 1e3)

        # warm-up: one of each, not kept
        session.request(prompts[0], n, request_id="warm/h")
        session.run(bare_request(engine, list(prompts[0].token_ids), n, "warm-bare"))
        for r in range(args.rounds):
            for i, p in enumerate(prompts):
                first, second = (run_harness, run_bare) if (i + r) % 2 == 0 else (run_bare, run_harness)
                first(p)
                second(p)
        versions = dict(session.backend.engine_version())
        del engine  # the session shuts the engine down; no reference may outlive it

    result = {"command": " ".join(["python", "benchmarks/gpu/vllm_overhead.py", *sys.argv[1:]]), "started": started,
              "model": args.model, "device": args.device, "variant": args.variant, "options": dict(request.options),
              "input_tokens": args.input_tokens, "output_tokens": n, "requests_each": len(rows["bare"]["tpot_ms"]),
              "versions": versions, "figures": {}, "raw": rows,
              "environment": environment.capture(["vllm", "torch", "transformers"])}
    print("\n| figure | bare AsyncLLM p50 | through llmcompare p50 | overhead | 95% CI |\n|---|---|---|---|---|")
    for key in ("ms_per_token", "tpot_ms"):
        bare, harness = rows["bare"][key], rows["llmcompare"][key]
        ci = bootstrap_ratio(bare, harness)
        fig = {"bare_p50": statistics.median(bare), "llmcompare_p50": statistics.median(harness),
               "overhead_pct": 100 * (statistics.median(harness) / statistics.median(bare) - 1),
               "overhead_pct_ci95": [100 * (ci["lo"] - 1), 100 * (ci["hi"] - 1)] if ci else None,
               "within_noise": ci["within_noise"] if ci else None}
        result["figures"][key] = fig
        lo, hi = fig["overhead_pct_ci95"] or (float("nan"), float("nan"))
        print(f"| {key} | {fig['bare_p50']:.4f} | {fig['llmcompare_p50']:.4f} | {fig['overhead_pct']:+.3f}% |"
              f" [{lo:+.3f}%, {hi:+.3f}%]{' within noise' if fig['within_noise'] else ''} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
