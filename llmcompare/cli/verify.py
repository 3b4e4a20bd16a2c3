"""``llmcompare verify-backend NAME``: for a user with the hardware, prove that a backend works.

Two steps, each printed as it runs:

1. The conformance kit (:mod:`llmcompare.testing`) on the backend, in the interpreter its runs use
   (its own environment when it has one): protocol, versions, exactly N greedy tokens, ids inside the
   vocabulary, timestamps, determinism, token counting, memory given back on unload.
2. A short comparison through the real CLI path (a worker process, the records, the reports): the
   backend beside a reference (``--reference``, default ``transformers`` where it can load the model)
   on the default prompts, 16 tokens each, so the user sees exact lengths, latency and agreement; the
   reference is also the fidelity judge (up to 32 tokens with natural stopping, docs/fidelity.md).

Exit status 0 only when both pass.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from llmcompare import api
from llmcompare.cli.common import console
from llmcompare.config.spec import RunSpec, parse_backends
from llmcompare.errors import UserError
from llmcompare.models import resolve_model
from llmcompare.plugins import get_registry
from llmcompare.report.base import print_result, write_all
from llmcompare.runner.interpreter import parse_overrides, worker_python

HELP = "run the conformance kit and a short comparison on one backend"
DESCRIPTION = __doc__.split("\n\n")[0]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME[:VARIANT]", help="the backend to verify, e.g. vllm:fp16")
    p.add_argument("--model", "-m", default=None, help="model to verify with (default: SmolLM2-135M-Instruct)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE", help="backend option (repeatable)")
    p.add_argument("--reference", default="transformers", help="backend to compare against ('none' to skip)")
    p.add_argument("--python", action="append", default=[], metavar="NAME=PATH", help="interpreter for a backend")


def run(args: argparse.Namespace) -> int:
    name, _, variant = args.name.partition(":")
    registry = get_registry()
    requests = parse_backends(registry, [args.name], args.option, args.device)
    overrides = parse_overrides(args.python)
    python = worker_python(RunSpec(requests, python=overrides), name) or sys.executable
    print(f"1/2 conformance kit: {args.name} on {args.device}, under {python}", flush=True)
    code = ("import sys, json\nfrom llmcompare.testing import check_backend\n"
            "kw = json.loads(sys.argv[1])\nr = check_backend(**kw)\nprint(r)\nraise SystemExit(0 if r.ok else 1)\n")
    model = args.model
    if model is None and python != sys.executable:
        model = resolve_model(None).hf_dir()  # another environment may not read the GGUF itself
    kw = {"name": name, "variant": variant or None, "model": model, "device": args.device,
          "options": dict(requests[0].options), "max_new_tokens": 8}
    kit = subprocess.run([python, "-c", code, json.dumps(kw)], check=False)
    if args.reference == "none":
        return kit.returncode
    backends = [args.name] + ([args.reference] if args.reference.partition(":")[0] != name else [])
    print(f"\n2/2 short comparison: {' vs '.join(backends)}, default prompts, 16 tokens, one repeat", flush=True)
    try:
        labels = [r.label for r in parse_backends(registry, backends, args.option, args.device)]
        result = api.compare(backends, model=args.model, options=args.option, device=args.device,
                             max_new_tokens=16, repeats=1, warmup=1, baseline=labels[-1],
                             reference=labels[-1], fidelity_tokens=32,
                             python=overrides)
    except UserError as exc:
        print(f"comparison skipped: {exc}")
        return kit.returncode
    print_result(console(), result, write_all(result))
    ok = kit.returncode == 0 and not result.failed and all(s.n_length_ok == s.n_requests for s in result.summaries)
    print(f"\n{args.name}: {'VERIFIED' if ok else 'NOT VERIFIED'} (conformance {'pass' if kit.returncode == 0 else 'FAIL'};"
          f" comparison {'exact lengths, no failures' if ok else 'see the table above'})")
    return 0 if ok else 1
