"""CPU seconds used by each group of processes while a command runs: what a run's own machinery (Ray's
daemons, llmcompare's client, the engine's server) takes from the cores the engine measures on.

    python benchmarks/cpu_by_process.py OUT.json -- llmcompare study run studies/tgi-vs-naive.yaml --executor ray

Every 0.25 s it reads each process's user + system CPU time (psutil) and sums them by group, named
from its command line or else its nearest ancestor's (a multiprocessing child joins its parent's). A
process born during the run counts from its start; one that ends between two samples loses at most
its last 0.25 s. ``command_tree_cpu_s`` is the kernel's total for the command and every descendant
that was waited for (what sampling can miss shows there), ``machine_busy_cpu_s`` the whole machine's
busy CPU time over the same interval, whatever ran it, and ``top_processes`` the 12 processes that
used the most.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import psutil

GROUPS = (
    ("ray", ("raylet", "gcs_server", "ray/dashboard", "log_monitor", "ray::", "ray/_private", "default_worker",
             "runtime_env", "monitor.py")),
    ("llama.cpp server", ("llama_cpp.server",)),
    ("transformers serve", ("transformers serve", "transformers_cli")),
    ("llmcompare", ("llmcompare",)),
)


def group_of(cmdline: str) -> str:
    return next((name for name, keys in GROUPS if any(k in cmdline for k in keys)), "other")


def group_of_process(p: psutil.Process, cmdline: str) -> str:
    """A process's group, else its nearest ancestor's (a multiprocessing child joins its parent's)."""
    group = group_of(cmdline)
    for parent in p.parents()[:8] if group == "other" else ():
        try:
            group = group_of(" ".join(parent.cmdline()))
        except psutil.Error:
            break
        if group != "other":
            break
    return group


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1:
        print("usage: " + next(line.strip() for line in __doc__.splitlines() if "cpu_by_process.py" in line))
        return 2
    out, cmd, me = argv[0], argv[2:], psutil.Process().pid
    seen: dict[int, list] = {}  # pid -> [group, CPU seconds at first sight, latest CPU seconds, command line]

    def sample() -> None:
        for p in psutil.process_iter():
            if p.pid == me:
                continue
            try:
                if p.pid not in seen:
                    cmdline = " ".join(p.cmdline())
                    if not cmdline:
                        continue
                    seen[p.pid] = [group_of_process(p, cmdline), None, 0.0, cmdline[:160]]
                t = p.cpu_times()
                seen[p.pid][2] = t.user + t.system
            except psutil.Error:
                continue

    sample()
    for entry in seen.values():  # processes already running count from now
        entry[1] = entry[2]
    busy0, t0 = psutil.cpu_times(), time.monotonic()
    proc = subprocess.Popen(cmd)
    while proc.poll() is None:
        sample()
        time.sleep(0.25)
    sample()
    wall, busy1 = time.monotonic() - t0, psutil.cpu_times()
    by_group: dict[str, float] = {}
    used = [(last - (first or 0.0), group, cmdline) for group, first, last, cmdline in seen.values()]
    for cpu, group, _ in used:
        by_group[group] = by_group.get(group, 0.0) + cpu
    busy = sum(getattr(busy1, f) - getattr(busy0, f) for f in ("user", "system", "nice"))
    tree = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and every descendant that was waited for
    result = {"command": cmd, "rc": proc.returncode, "wall_s": round(wall, 2), "machine_busy_cpu_s": round(busy, 2),
              "command_tree_cpu_s": round(tree.ru_utime + tree.ru_stime, 2),
              "cpu_s_by_group": {k: round(v, 2) for k, v in sorted(by_group.items())},
              "top_processes": [{"cpu_s": round(c, 2), "group": g, "cmdline": cl} for c, g, cl in sorted(used, reverse=True)[:12]]}
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("wall_s", "machine_busy_cpu_s", "command_tree_cpu_s", "cpu_s_by_group")}))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
