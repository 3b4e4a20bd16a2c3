"""Write docs/results.md from the compact result files in benchmarks/results/.

    python benchmarks/results_md.py            # rewrite docs/results.md
    python benchmarks/results_md.py --check    # exit 1 if docs/results.md is not what this writes

Every measured run on a GPU is one JSON file, ``benchmarks/results/<date>-<gpu>[-x]/<run>.json``, with its
``date`` (UTC), ``hardware``, llmcompare ``commit``, the exact ``command``, the run's ``environment`` block and
its ``figures``. The page is ``benchmarks/results_md.template.md`` with three kinds of place-holder filled in:

- ``{{overview}}``: the table of every 7B variant at batch 1 (``OVERVIEW`` below names each row's run);
- ``{{overview FOLDER}}``: the same table from one folder of result files alone, one row per batch-1 backend of
  its runs: the folder ``benchmarks/study_results.py`` writes from a study's cells (``studies/gpu-7b-batch1.yaml``);
- ``{{runs}}``: one section per result file, newest first, with its date, GPU, commit, command and figures;
- ``{{RUN PATH [FORMAT]}}``: one figure of one file, formatted with Python's format spec (default: as is).
  ``RUN`` is the file's path under benchmarks/results without ``.json``. ``PATH`` is dotted; its parts can be
  ``b[LABEL]`` (the backend summary of that label), ``lv[LABEL@c=N]`` (a load level), ``cmp[LABEL]`` (the
  comparison of that backend with its baseline), ``ag[LABEL]`` (that backend's greedy-agreement row),
  ``NAME[I]`` (the I-th item of a list), or a key; ``|min``, ``|max``, ``|len`` apply to a list,
  ``|level`` turns a stage name ``load:c=N`` into ``c=N``. ``FORMAT``
  may also be ``MiB`` (bytes shown in MiB) or ``GB/s`` (bytes/s shown in GB/s).

So every number on the page comes from a result file, and a figure the files do not have is an error.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TEMPLATE = ROOT / "benchmarks" / "results_md.template.md"
OUTPUT = ROOT / "docs" / "results.md"
MIB = 2**20

# The 7B table: (what the row is, result file, backend label). Rows are sorted by TPOT p50.
OVERVIEW = [
    ("vllm:fp16 (in process)", "2026-11-22-h200-b/vllm-latency", "vllm:fp16"),
    ("vllm-serve:fp16 (HTTP)", "2026-11-22-h200-b/vllm-serve", "vllm-serve:fp16"),
    ("vllm-serve:fp16, tensor parallel over 2 × H200", "2026-11-22-h200x2/tp-latency-7b", "tp2"),
    ("llamacpp:q4_0 (llama.cpp, CUDA)", "2026-11-23-h200/llamacpp", "llamacpp:q4_0"),
    ("exllamav2:exl2 (4.0 bpw)", "2026-11-23-h200/exl-exl2", "exllamav2:exl2"),
    ("llamacpp:q8_0", "2026-11-23-h200/llamacpp", "llamacpp:q8_0"),
    ("exllamav2:gptq (4-bit, g128)", "2026-11-22-h200-d/quant", "exllamav2:gptq"),
    ("llamacpp-server:q4_0 (llama-cpp-python's server)", "2026-11-23-h200/llamacpp", "llamacpp-server:q4_0"),
    ("llamacpp:f16", "2026-11-23-h200/llamacpp", "llamacpp:f16"),
    ("exllamav3:exl3 (4.0 bpw)", "2026-11-23-h200/exl-exl3", "exllamav3:exl3"),
    ("transformers:fp16, static cache", "2026-11-22-h200-b/transformers", "static"),
    ("transformers:fp16, `compile=true`", "2026-11-22-h200-b/transformers", "compile"),
    ("ctranslate2:float16 (cuBLAS alias)", "2026-11-22-h200-b/ct2-7b", "ctranslate2:float16"),
    ("ctranslate2:int8_float16 (cuBLAS alias)", "2026-11-22-h200-b/ct2-7b", "ctranslate2:int8_float16"),
    ("exllamav2:fp16 (causal prefill)", "2026-11-22-h200-d/quant", "exllamav2:fp16"),
    ("exllamav3:fp16", "2026-11-22-h200-c/exllamav3-fp16", "exllamav3:fp16"),
    ("transformers:fp16 (eager)", "2026-11-22-h200-b/transformers", "transformers:fp16"),
    ("transformers:bf16 (eager)", "2026-11-22-h200-b/transformers", "transformers:bf16"),
    ("transformers:nf4 (bitsandbytes)", "2026-11-22-h200-c/bnb", "transformers:nf4"),
    ("transformers:gptq, Marlin kernel", "2026-11-22-h200-d/gptq2", "marlin"),
    ("transformers:gptq, Triton kernel", "2026-11-22-h200-d/gptq2", "triton"),
    ("transformers:int8 (bitsandbytes)", "2026-11-22-h200-c/bnb", "transformers:int8"),
]


class FigureError(Exception):
    pass


def load_runs(root: Path = RESULTS) -> dict[str, dict]:
    runs = {}
    for path in sorted(root.glob("*/*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        runs[path.relative_to(root).with_suffix("").as_posix()] = doc
    return runs


# ---------------------------------------------------------------------------------------------- lookups

def backend(doc: dict, label: str) -> dict:
    for b in doc["figures"].get("backends", []):
        if b["backend"] == label:
            return b
    raise FigureError(f"{doc['run']}: no backend {label!r}")


def level(doc: dict, key: str) -> dict:
    label, _, c = key.rpartition("@c=")
    for lv in doc["figures"].get("levels", []):
        if lv["backend"] == label and str(lv["concurrency"]) == c:
            return lv
    raise FigureError(f"{doc['run']}: no level {key!r}")


def comparison(doc: dict, label: str) -> dict:
    for c in doc["figures"].get("comparisons") or []:
        if c["backend"] == label:
            return c
    raise FigureError(f"{doc['run']}: no comparison for {label!r}")


def agreement(doc: dict, label: str) -> tuple[dict, dict]:
    """(agreement block, the row of ``label``) in this file's agreement results."""
    for block in doc["figures"].get("agreement", []):
        for row in block["backends"]:
            if row["backend"] == label and row["run"] == doc["run"] and "error" not in row:
                return block, row
    raise FigureError(f"{doc['run']}: no agreement row for {label!r}")


def resolve(runs: dict, run: str, path: str):
    if run not in runs:
        raise FigureError(f"no result file benchmarks/results/{run}.json")
    doc = runs[run]
    path, _, func = path.partition("|")
    value = doc
    for part in re.findall(r"[^.\[\]]+\[[^\]]*\]|[^.]+", path):
        m = re.fullmatch(r"([^\[]+)\[([^\]]*)\]", part)
        if m and m.group(1) == "b":
            value = backend(doc, m.group(2))
        elif m and m.group(1) == "lv":
            value = level(doc, m.group(2))
        elif m and m.group(1) == "cmp":
            value = comparison(doc, m.group(2))
        elif m and m.group(1) == "ag":
            value = agreement(doc, m.group(2))[1]
        elif m:
            value = value[m.group(1)][int(m.group(2))]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise FigureError(f"{run}: {path!r}: no {part!r}")
    if func == "min":
        value = min(value)
    elif func == "max":
        value = max(value)
    elif func == "len":
        value = len(value)
    elif func == "level":
        value = str(value).removeprefix("load:")
    elif func:
        raise FigureError(f"unknown function |{func}")
    if value is None:
        raise FigureError(f"{run}: {path!r} is null")
    return value


# ---------------------------------------------------------------------------------------------- formatting

def num(x, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def mib(n) -> str:
    return f"{n / MIB:,.0f} MiB"


def gpu_memory(b: dict) -> str:
    """torch's peak; else NVML's memory of the worker's process tree (ᴺ); else the whole GPU's used memory (ᴰ)."""
    if b.get("gpu_peak_bytes"):
        return mib(b["gpu_peak_bytes"])
    gm = b.get("gpu_memory") or {}
    if gm.get("nvml_process_used"):
        return mib(gm["nvml_process_used"]) + "ᴺ"
    if gm.get("nvml_used"):
        return mib(gm["nvml_used"]) + "ᴰ"
    return "–"


def floor_cell(b: dict) -> str:
    f = b.get("floor")
    if not f or f.get("percent_of_floor") is None:
        return "–"
    return f"{f['percent_of_floor']:.1f}% of {f['ms_per_token']:.3f}"


def ci_cell(b: dict, key: str, stat: str, spec: str) -> str:
    v = (b.get(key) or {}).get(stat)
    if v is None:
        return "–"
    ci = (b.get("ci95") or {}).get(f"{key.removesuffix('_ms')}_{stat}_ms")
    return f"{v:{spec}}" + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "")


def agreement_cell(doc: dict, label: str) -> str:
    try:
        block, row = agreement(doc, label)
    except FigureError:
        for c in doc["figures"].get("comparisons") or []:
            if c["backend"] == label and c.get("agreement"):
                a = c["agreement"]
                base = c.get("baseline") or c.get("reference")
                return f"{a['exact_prompts']}/{a['prompts']} · {a['mean_prefix_tokens']:.1f} (vs {base}, same run)"
        return "–"
    ref = block["reference"]
    where = "same run" if ref["run"] == doc["run"] else f"[{ref['run']}](#{anchor(ref['run'])})"
    return f"{row['identical']}/{row['prompts']} · {row['mean_prefix']:.1f} (vs {ref['backend']}, {where})"


def anchor(run: str) -> str:
    return "run-" + re.sub(r"[^a-z0-9]+", "-", run.lower()).strip("-")


def link(run: str) -> str:
    return f"[{run}](#{anchor(run)})"


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- sections

def folder_overview(runs: dict, folder: str) -> list[tuple[str, str, str]]:
    """(what, run, label) for every batch-1 backend of the runs in ``folder`` (a study's cells)."""
    rows = []
    for run, doc in sorted(runs.items()):
        if run.split("/")[0] != folder or doc["figures"].get("levels"):
            continue
        for b in doc["figures"].get("backends", []):
            if b.get("status") == "ok" and b.get("tpot_ms"):
                rows.append((f"`{b['backend']}`", run, b["backend"]))
    if not rows:
        raise FigureError(f"no batch-1 result in benchmarks/results/{folder}/")
    return rows


def overview(runs: dict, folder: str | None = None) -> str:
    rows = []
    for what, run, label in (folder_overview(runs, folder) if folder else OVERVIEW):
        doc = runs[run]
        b = backend(doc, label)
        if b["status"] != "ok" or not b.get("tpot_ms"):
            raise FigureError(f"{run}: {label} has no TPOT")
        rows.append((b["tpot_ms"]["p50"], [
            what,
            f"{b['tpot_ms']['p50']:.2f}",
            f"{b['ttft_ms']['p50']:.1f}",
            num((b.get("tok_s_per_request") or {}).get("mean"), ".1f"),
            floor_cell(b),
            gpu_memory(b),
            agreement_cell(doc, label),
            link(run),
        ]))
    rows.sort(key=lambda r: r[0])
    return table(["variant", "TPOT p50 ms", "TTFT p50 ms", "tok/s per request (mean)", "% of its floor (floor ms)",
                  "GPU memory", "greedy agreement: identical / mean prefix", "run"], [r for _, r in rows])


def environment_line(doc: dict) -> str:
    env = doc.get("environment") or {}
    hw = doc["hardware"]
    parts = [f"{hw['gpu_count']} × {hw['gpu']}" + (f" ({hw['gpu_memory_mib']:,} MiB)" if hw.get("gpu_memory_mib") else ""),
             f"driver {hw['driver']}", f"CUDA {hw['cuda']}"]
    if hw.get("cpu"):
        parts.append(f"{hw['cpu']} × {hw['cpu_count']}")
    if env.get("python"):
        parts.append(f"Python {env['python']}")
    pk = env.get("packages") or {}
    parts += [f"{k} {v}" for k, v in sorted(pk.items()) if k in (
        "torch", "transformers", "vllm", "ctranslate2", "bitsandbytes", "exllamav2", "exllamav3", "gptqmodel",
        "optimum", "llama_cpp_python")]
    engines = set()
    for b in doc["figures"].get("backends", []):
        for k, v in (b.get("versions") or {}).items():
            if k in ("vllm", "exllamav2", "exllamav3", "llama_cpp_python", "ctranslate2", "gptqmodel") and k not in pk:
                engines.add(f"{k} {v}")
    parts += sorted(engines)
    bw = env.get("bandwidth")
    if bw:
        parts.append(f"copy bandwidth {bw['bytes_per_s'] / 1e9:,.1f} GB/s ({bw.get('source', 'measured')})")
    return ", ".join(parts)


def backends_of_load_run(doc: dict) -> str:
    rows = [[f"`{b['backend']}`" + (f" ({b['engine']})" if b["engine"] != b["backend"] else ""), b["status"],
             num(b.get("load_s"), ".2f"), gpu_memory(b)] for b in doc["figures"]["backends"]]
    return table(["backend", "status", "load s", "GPU memory"], rows)


def latency_table(doc: dict) -> str:
    if doc["figures"].get("levels"):
        return backends_of_load_run(doc)
    rows = []
    for b in doc["figures"]["backends"]:
        status = b["status"] if b["status"] == "ok" else f"{b['status']}: {b.get('error') or ''}".strip()
        if b.get("n_errors"):
            first = next(iter(b.get("request_errors") or {}), "")
            status += f", {b['n_errors']} of {b['n_requests']} requests failed" + (f" ({first})" if first else "")
        if len(status) > 140:
            status = status[:137] + "…"
        rows.append([
            f"`{b['backend']}`" + (f" ({b['engine']})" if b["engine"] != b["backend"] else ""),
            status.replace("|", "\\|"),
            str(b.get("n_requests", "–")),
            ci_cell(b, "ttft_ms", "p50", ".1f"),
            ci_cell(b, "tpot_ms", "p50", ".2f"),
            num((b.get("tpot_ms") or {}).get("p90"), ".2f"),
            num((b.get("tok_s_per_request") or {}).get("mean"), ".1f"),
            floor_cell(b),
            num(b.get("load_s"), ".2f"),
            gpu_memory(b),
        ])
    return table(["backend", "status", "n", "TTFT p50 ms [95% CI]", "TPOT p50 ms [95% CI]", "TPOT p90 ms",
                  "tok/s per request", "% of floor (floor ms)", "load s", "GPU memory"], rows)


def comparisons_lines(doc: dict) -> list[str]:
    out = []
    for c in doc["figures"].get("comparisons") or []:
        base = c.get("baseline") or c.get("reference")
        if c.get("speedup_tpot"):
            s = c["speedup_tpot"]
            out.append(f"- `{c['backend']}` against `{base}`: TPOT speed-up, paired by prompt, "
                       f"{s['speedup']:.2f}× [{s['lo']:.2f}, {s['hi']:.2f}] ({s['verdict']})")
        elif c.get("tpot_ratio"):
            r = c["tpot_ratio"]
            noise = " (within noise)" if r.get("within_noise") else ""
            out.append(f"- `{c['backend']}` against `{base}`: TPOT ratio of medians {r['ratio']:.2f}× "
                       f"[{r['lo']:.2f}, {r['hi']:.2f}]{noise}")
    return out


def agreement_tables(doc: dict) -> list[str]:
    out = []
    for block in doc["figures"].get("agreement", []):
        ref = block["reference"]
        rows = []
        for r in block["backends"]:
            if r["run"] != doc["run"]:
                continue
            if r.get("error"):
                rows.append([f"`{r['backend']}`", "–", "–", "–", r["error"].split(": ", 1)[-1]])
                continue
            rows.append([f"`{r['backend']}`", f"{r['identical']}/{r['prompts']}", f"{r['mean_prefix']:.1f}",
                         str(r.get("tokens", "–")), ", ".join(str(v) for v in r.get("prefix_per_prompt", {}).values())])
        if not rows:
            continue
        where = "this run" if ref["run"] == doc["run"] else link(ref["run"])
        out.append(f"Greedy agreement with `{ref['backend']}` of {where} (`{block['command']}`):\n")
        out.append(table(["backend", "identical", "mean agreeing prefix", "of tokens", "prefix per prompt"], rows))
        for note in block.get("left_out", []):
            out.append(f"\nLeft out: {note}.")
        out.append("")
    return out


def load_tables(doc: dict) -> list[str]:
    out, rows = [], []
    for lv in doc["figures"]["levels"]:
        rows.append([f"`{lv['backend']}`", f"c={lv['concurrency']}", str(lv["requests"]), str(lv["errors"]),
                     f"{lv['output_tok_s']:,.1f}", f"{lv['ttft_ms']['p50']:,.1f}", f"{lv['ttft_ms']['p99']:,.1f}",
                     f"{lv['tpot_ms']['p50']:.2f}", f"{lv['tpot_ms']['p90']:.2f}", f"{lv['goodput_req_s']:.2f}",
                     "yes" if lv.get("meets_slo") else "no",
                     "–" if lv.get("cost_per_1m_tokens") is None else f"${lv['cost_per_1m_tokens']:.2f}"])
    out.append(table(["backend", "level", "requests", "errors", "output tok/s", "TTFT p50 ms", "TTFT p99 ms",
                      "TPOT p50 ms", "TPOT p90 ms", "goodput req/s", "meets the SLO", "$ / 1M output tokens"], rows))
    out.append("")
    an = doc["figures"].get("analysis") or {}
    for label, a in (an.get("backends") or {}).items():
        out.append(f"- `{label}`: knee at {a['knee'].removeprefix('load:')} ({a['knee_output_tok_s']:,.1f} tok/s, "
                   f"TPOT p50 {a['knee_tpot_p50_ms']:.2f} ms); highest level meeting the SLO: "
                   f"{(a.get('max_level_meeting_slo') or 'none').removeprefix('load:')}")
    rec = an.get("recommendations") or {}
    for key, what, fmt in (("best_latency", "best latency", lambda r: f"TPOT p50 {r['tpot_p50_ms']:.2f} ms"),
                           ("best_throughput", "best throughput", lambda r: f"{r['output_tok_s']:,.1f} tok/s"),
                           ("most_cost_effective", "lowest cost",
                            lambda r: f"${r['cost_per_1m_tokens']:.2f} per 1M output tokens")):
        if rec.get(key):
            r = rec[key]
            out.append(f"- {what}: `{r['backend']}` at {r['stage'].removeprefix('load:')}, {fmt(r)}")
    return out


def misc_figures(doc: dict) -> list[str]:
    f = doc["figures"]
    out = []
    if "bandwidth" in f:
        bw = f["bandwidth"]
        rate = bw.get("bandwidth_bytes_per_s") or bw.get("bytes_per_s")
        copies = f"{bw['repeats']} timed copies" if "repeats" in bw else "the 20 timed copies bandwidth.py makes"
        out.append(f"Device-to-device copy: {rate / 1e9:,.1f} GB/s (bytes read plus written), from the median of "
                   f"{copies} of {bw['bytes_moved'] / 2 / 2**30:.0f} GiB, {bw['median_s'] * 1e3:.4f} ms.")
    if "conformance" in f:
        rows = []
        for c in f["conformance"]:
            for ch in c["checks"]:
                rows.append([f"`{c['backend']}`", ch["check"], ch["result"], ch["detail"].replace("|", "\\|")])
        out.append(table(["backend", "check", "result", "detail"], rows))
    if "figures" in f and "tpot_ms" in f["figures"]:
        rows = []
        for key, what in (("ms_per_token", "ms/token (e2e / 256)"), ("tpot_ms", "TPOT ms")):
            x = f["figures"][key]
            lo, hi = x["overhead_pct_ci95"]
            rows.append([what, f"{x['bare_p50']:.4f}", f"{x['llmcompare_p50']:.4f}", f"{x['overhead_pct']:+.3f}%",
                         f"[{lo:+.3f}%, {hi:+.3f}%]"])
        out.append(f"{f['requests_each']} requests each way, A/B interleaved per prompt, one engine:\n")
        out.append(table(["figure", "bare `AsyncLLM.generate` loop, p50", "through llmcompare, p50", "overhead",
                          "95% CI"], rows))
    if "logits" in f:
        rows = [[str(r["no_sdpa"]), str(r["prompt_tokens"]), f"{r['top1_exllamav2']} / {r['top1_transformers']}",
                 f"{r['max_abs_diff']:.4f}", f"{r['cosine']:.6f}"] for r in f["logits"]]
        out.append(table(["`no_sdpa`", "prompt tokens", "top-1 ExLlamaV2 / transformers", "max abs logit difference",
                          "cosine"], rows))
    if "steps" in f:
        rows = [[s["what"], ", ".join(str(v) for v in s["seconds"]) if isinstance(s["seconds"], list)
                 else str(s["seconds"])] for s in f["steps"]]
        out.append(table(["step", "seconds"], rows))
    return out


def run_section(doc: dict) -> str:
    run = doc["run"]
    out = [f'<a id="{anchor(run)}"></a>', f"### {run}: {doc['title']}", ""]
    date = doc["date"].replace("T", " ").removesuffix("Z") + (" UTC" if "T" in doc["date"] else "")
    out.append(f"- **Date:** {date}. **Hardware:** {environment_line(doc)}.")
    overlay = doc.get("commit_overlay") or []
    files = ", ".join(f"`{o['path']}`" for o in overlay)
    out.append(f"- **llmcompare commit:** `{doc['commit']}`" + (f", with {files} from the working tree laid over it "
                                                              "(their sha256 are in the file)." if overlay else "."))
    out.append(f"- **File:** [benchmarks/results/{run}.json](../benchmarks/results/{run}.json)")
    out.append("")
    commands = doc["command"] if isinstance(doc["command"], list) else [doc["command"]]
    out.append("```\n" + "\n".join(commands) + "\n```")
    out.append("")
    f = doc["figures"]
    if f.get("backends"):
        out.append(latency_table(doc))
        lines = comparisons_lines(doc)
        if lines:
            out += [""] + lines
        out.append("")
    if f.get("levels"):
        out += load_tables(doc) + [""]
    if f.get("engine_log"):
        e = f["engine_log"]
        facts = []
        if "kv_cache_tokens" in e:
            facts.append(f"KV cache of {e['kv_cache_tokens']:,} tokens")
        if "max_num_batched_tokens" in e:
            facts.append(f"`max_num_batched_tokens` {e['max_num_batched_tokens']}")
        out += [f"The engine's log: {', '.join(facts)}.", ""]
    if f.get("server_log"):
        v = f["server_log"]["eval_ms_per_token"]
        out += [f"The server's own log: {min(v):.2f}–{max(v):.2f} ms per token of engine decode, over {len(v)} "
                "requests (warm-up included).", ""]
    if f.get("server_holdback"):
        rows = [[f"`{r['prompt']}`", f"{r['largest_gap_ms']:,}", str(r["gap_after_token"]), f"{r['e2e_ms']:,}",
                 f"{r['rule_holds_tokens']} from token {r['rule_holds_from_token']}" if r["rule_holds_tokens"]
                 else "none"] for r in f["server_holdback"]["rows"]]
        out += [f"`{f['server_holdback']['command']}`: the server's largest gap between streamed tokens, against the "
                "run of tokens its strict-UTF-8 rule holds back in the in-process `llamacpp:q4_0` ids:", "",
                table(["prompt", "largest gap ms", "after token", "e2e ms", "the rule holds"], rows), ""]
    out += agreement_tables(doc)
    misc = misc_figures(doc)
    if misc:
        out += ["\n\n".join(misc), ""]
    for note in doc.get("notes", []):
        out.append(f"- {note}")
    if doc.get("notes"):
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def runs_sections(runs: dict) -> str:
    folders: dict[str, list[dict]] = {}
    for run, doc in runs.items():
        folders.setdefault(run.split("/")[0], []).append(doc)
    out = []
    for folder in sorted(folders, key=lambda f: (max(d["date"] for d in folders[f]), f), reverse=True):
        docs = sorted(folders[folder], key=lambda d: (d["date"], d["run"]), reverse=True)
        hw = docs[0]["hardware"]
        out.append(f"## {folder}: {hw['gpu_count']} × {hw['gpu']}\n")
        out += [run_section(d) for d in docs]
    return "\n".join(out)


WIDTH = 105


def reflow(text: str) -> str:
    """Each prose paragraph and list item joined and wrapped at WIDTH; code, tables, headings and HTML kept."""
    out: list[str] = []
    block: list[str] = []
    prefix = ""

    def flush():
        nonlocal block
        if block:
            words = " ".join(line.strip() for line in block)
            out.append(textwrap.fill(words, WIDTH, initial_indent=prefix, subsequent_indent=" " * len(prefix),
                                     break_long_words=False, break_on_hyphens=False))
            block = []

    verbatim = False
    for line in text.split("\n"):
        stripped = line.strip()
        if verbatim or stripped.startswith(("```", "|", "#", "<")) or not stripped:
            flush()
            out.append(line)
            if stripped.startswith("```"):
                verbatim = not verbatim
            elif stripped.startswith("<!--") and "-->" not in stripped:
                verbatim = True
            elif verbatim and "-->" in stripped and not stripped.startswith("```"):
                verbatim = False
            continue
        m = re.match(r"(\s*)([-*] )", line)
        if m:
            flush()
            prefix = m.group(1) + m.group(2)
            block = [line[len(prefix):]]
        elif block and line.startswith(" " * len(prefix)) and prefix:
            block.append(line)
        elif block and not prefix:
            block.append(line)
        else:
            flush()
            prefix = ""
            block = [line]
    flush()
    return "\n".join(out)


def fill(template: str, runs: dict) -> str:
    pieces = re.split(r"^\{\{((?:overview(?: [^}\s]+)?)|runs)\}\}$", template, flags=re.M)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            out.append(reflow(fill_figures(piece, runs)))
        elif piece == "runs":
            out.append(runs_sections(runs))
        else:
            out.append(overview(runs, piece.partition(" ")[2] or None))
    return "".join(out)


def fill_figures(template: str, runs: dict) -> str:
    def one(m: re.Match) -> str:
        body = m.group(1).strip()
        parts = body.split()
        if len(parts) not in (2, 3):
            raise FigureError(f"bad place-holder {m.group(0)!r}")
        value = resolve(runs, parts[0], parts[1])
        if len(parts) == 2:
            return str(value)
        if parts[2] == "MiB":
            return mib(value)
        if parts[2] == "GB/s":
            return f"{value / 1e9:,.1f}"
        return format(value, parts[2])

    return re.sub(r"\{\{(.+?)\}\}", one, template, flags=re.S)


def render() -> str:
    return fill(TEMPLATE.read_text(encoding="utf-8"), load_runs())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/results.md is not what this script writes")
    args = ap.parse_args(argv)
    try:
        text = render()
    except FigureError as e:
        print(f"results_md: {e}", file=sys.stderr)
        return 2
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print("docs/results.md is stale: run python benchmarks/results_md.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
