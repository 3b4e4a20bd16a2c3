"""docs/results.md is what benchmarks/results_md.py writes, every result file says what produced it, and the
docs and benchmarks speak of the product, not of how the work on it was organised."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# Words about the process that produced the figures (numbered work periods, borrowed machines and their
# time budget, issue numbers), never about the product. Each pattern matched lines of the text this
# test replaced; none matches llmcompare's own words ("the backend session", "the uv cache holds 3.2 GB").
PROCESS_TALK = [
    r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|next|earlier|later|previous|last)"
    r"\s+(gpu\s+)?(session|hold)s?\b",
    r"\b(session|hold)s?\s+\d+(?![\d.,])",
    r"\bcalls?\s+\d+\b",
    r"\bdevice[- ]time\b",
    r"\bdevice[- ]seconds?\b",
    r"\bdevice tool\b",
    r"\blent\b",
    r"\bborrow(s|ed|ing)?\b",
    r"\blease\b",
    r"\bissue\s+#?\d+",
    r"\bwork period",
    r"\bgive_back\b",
    r"\bthe lead\b",
    r"\bper call\b",
    r"\b(one|each|a|this|the|that) call's\b",
    r"\bKINDS\.md\b",
]
PROCESS_RX = re.compile("|".join(f"(?:{p})" for p in PROCESS_TALK), re.I)
SCANNED = ("docs", "benchmarks")
TEXT_SUFFIXES = {".md", ".py", ".sh", ".txt", ".json", ".toml", ".cfg", ".in", ""}


def result_files():
    return sorted(RESULTS.glob("*/*.json"))


def test_results_md_is_what_the_script_writes():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "results_md.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr or out.stdout


def test_every_result_file_says_what_produced_it():
    files = result_files()
    assert len(files) >= 30, files
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        where = path.relative_to(ROOT)
        for key in ("date", "hardware", "commit", "command", "figures"):
            assert doc.get(key), f"{where}: no {key}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d(T\d\d:\d\d:\d\dZ)?", doc["date"]), f"{where}: date {doc['date']!r}"
        assert doc["hardware"].get("gpu") and doc["hardware"].get("gpu_count"), f"{where}: no GPU"
        assert doc["hardware"].get("driver") and doc["hardware"].get("cuda"), f"{where}: no driver or CUDA"
        assert re.fullmatch(r"[0-9a-f]{7,40}( / [0-9a-f]{7,40})*", doc["commit"]), f"{where}: commit {doc['commit']!r}"
        commands = doc["command"] if isinstance(doc["command"], list) else [doc["command"]]
        assert all(isinstance(c, str) and c.strip() for c in commands), f"{where}: command"
        assert any(v for v in doc["figures"].values()), f"{where}: empty figures"
        if "backends" in doc["figures"]:
            assert doc.get("environment"), f"{where}: a run without its environment block"


def test_results_md_links_only_to_result_files_that_exist():
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\((\.\./benchmarks/results/[^)#]+)\)", text)
    assert targets
    for t in targets:
        assert (ROOT / "docs" / t).resolve().exists(), t


def scanned_files():
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                yield path


def test_docs_and_benchmarks_speak_of_the_product_only():
    hits = []
    for path in scanned_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            m = PROCESS_RX.search(line)
            if m:
                hits.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)!r}: {line.strip()[:120]}")
    assert not hits, "\n".join(hits)


def test_the_process_words_are_caught():
    for line in ("The sixth session's results", "the second hold carried its measurement", "call 3 of 3",
                 "654 s of device time spent", "on a lent GPU machine", "issue 6, item 9", "hold 4",
                 "the lease counted 50%"):
        assert PROCESS_RX.search(line), line
    for line in ("the backend session's event loop", "the uv cache holds 3.2 GB afterwards",
                 "a session of its own (setsid)", "one call of generate", "the next call returns"):
        assert not PROCESS_RX.search(line), line
