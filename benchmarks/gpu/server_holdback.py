"""Where llama-cpp-python 0.3.36's server holds streamed tokens back, against where it stalled.

    python benchmarks/gpu/server_holdback.py RUN

RUN is the folder of an ``llmcompare run`` with ``llamacpp:q4_0`` and ``llamacpp-server:q4_0`` (its
``requests.jsonl`` is read), or a ``.tar.gz`` of that folder. On the H200 of 2026-11-23 its output is the
``server_holdback`` table of benchmarks/results/2026-11-23-h200/llamacpp.json.

The server yields text only once a prefix of the tokens held since its last yield decodes as strict
UTF-8 (``Llama._create_completion``, streaming without log-probabilities). This applies that rule to the
``llamacpp:q4_0`` (in-process) token ids of each prompt, with the synthetic 7B shape's byte-level BPE
tokenizer, and prints it beside the largest gap between the server's streamed tokens
(``llamacpp-server:q4_0``) in the same run.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

from llmcompare import synthetic


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, inverted: the character a token uses for each byte -> the byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:  # the bytes without a printable character of their own get 256, 257, ...
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def held_run(pieces: list[bytes]) -> tuple[int, int | None]:
    """The longest run of tokens the server's rule holds back: (length, first token, 1-based)."""
    held: list[bytes] = []
    start, best = None, (0, None)
    for step, piece in enumerate(pieces, 1):
        held.append(piece)
        while held:  # yield prefix after prefix while one decodes
            j = next((j for j in range(1, len(held) + 1) if decodes(b"".join(held[:j]))), None)
            if j is None:
                break
            held = held[j:]
        if held:
            start = start or step
            if step - start + 1 > best[0]:
                best = (step - start + 1, start)
        else:
            start = None
    return best


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    run = Path(argv[0])
    if run.is_dir():
        with open(run / "requests.jsonl", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
    else:
        with tarfile.open(run) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/requests.jsonl"))
            rows = [json.loads(line) for line in tar.extractfile(member)]
    tokenizer = synthetic.build_tokenizer("llama-2-7b")
    to_byte = byte_decoder()
    ids = {r["request_id"]: r["token_ids"] for r in rows if r.get("backend") == "llamacpp:q4_0" and r.get("request_id")}
    for r in rows:
        if r.get("backend") != "llamacpp-server:q4_0" or not r.get("request_id") or r["request_id"].startswith("warm"):
            continue
        times = r["token_times_s"]
        gaps = [b - a for a, b in zip(times, times[1:])]
        at = max(range(len(gaps)), key=gaps.__getitem__)
        pieces = [bytes(to_byte[c] for c in p) for p in tokenizer.convert_ids_to_tokens(ids[r["request_id"]])]
        n, first = held_run(pieces)
        rule = f"holds {n} tokens from token {first}" if n else "holds none"
        print(f"{r['request_id']:26s} largest gap {gaps[at] * 1e3:6.0f} ms after token {at + 1:3d}"
              f" (e2e {r['e2e_s'] * 1e3:6.0f} ms); the rule {rule}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
