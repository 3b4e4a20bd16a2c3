"""The answer: from the cells' run directories to "deploy this", with intervals.

Inputs are only the stable files of each cell's run directory: ``levels.csv`` (load cells),
``results.json`` and ``requests.csv`` (batch-1 cells). A *point* is one measurement of one deployment
(a cell's backend, options, model and hardware, without its load level and repeat) at one load level;
points of the same deployment and level (repeats, follow-up re-measurements) are pooled.

**Eligible for an answer** (when the study has an SLO), a deployment's level must

(a) meet the SLO on the pooled requests of every measurement of it (≥ 90% within every limit, the
    load report's rule),
(b) sit where the isotonic (monotone non-increasing) fit of the deployment's SLO margins over load is
    ≥ 0, so one lucky probe above a failing level is not believed, and
(c) if it was re-measured by a follow-up cell, meet the SLO in that re-measurement too.

The SLO margin of a measurement is ``min over limits of 1 − p90 / limit`` (TTFT and e2e from the
scheduled send; ITL by its p99), so it is 0 at the limit and falls with load. The fit is
pool-adjacent-violators, weighted by requests.

**The three answers**, over every eligible level of every deployment: most cost-effective (lowest $ per
1M output tokens), best latency (lowest median ms/token), best throughput (highest output tok/s). Each
deployment competes with its best level. Figures carry 95% intervals: with repeats, a t interval over
the repeats' values; with one measurement, the level's own bootstrap interval where the load report has
one (TPOT, TTFT). Two deployments whose intervals overlap are a tie and both are named; a figure without
an interval (one measurement of a throughput) ties when it lies inside the other's interval, or, with no
interval on either side, only when equal. A level that misses the SLO is never named.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SLO_ATTAINMENT = 0.90
#: two-sided 95% Student t quantiles by degrees of freedom (1..30), then the normal's
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    return T975[df - 1] if 1 <= df <= len(T975) else 1.96


# ---------------------------------------------------------------------------------------------
# Isotonic regression (pool adjacent violators)
# ---------------------------------------------------------------------------------------------
def isotonic_decreasing(x: list[float], y: list[float], w: list[float] | None = None) -> dict[float, float]:
    """The weighted least-squares non-increasing fit of ``y`` over ``x``; returns ``x -> fitted``.

    Points with the same ``x`` are pooled first (weighted mean). Pool adjacent violators, in one pass with
    a stack of blocks.
    """
    if not x:
        return {}
    w = w or [1.0] * len(x)
    pooled: dict[float, list[float]] = {}
    for xi, yi, wi in zip(x, y, w):
        s = pooled.setdefault(float(xi), [0.0, 0.0])
        s[0] += wi * yi
        s[1] += wi
    xs = sorted(pooled)
    # fit increasing to -y, i.e. decreasing to y
    blocks: list[list[float]] = []  # [sum of w*v, sum of w, count]
    for xv in xs:
        sw, ww = pooled[xv]
        blocks.append([-sw, ww, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, ww2, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += ww2
            blocks[-1][2] += c
    fitted = np.repeat([-b[0] / b[1] for b in blocks], [int(b[2]) for b in blocks])
    return {xv: float(f) for xv, f in zip(xs, fitted)}


# ---------------------------------------------------------------------------------------------
# Reading the cells
# ---------------------------------------------------------------------------------------------
@dataclass
class Point:
    """One measurement: one cell's one level."""

    cell_id: str
    kind: str
    deployment_id: str
    deployment: str
    hardware: str
    repeat: int
    level_kind: str
    level: float
    stage: str
    requests: int = 0
    errors: int = 0
    tok_s: float | None = None
    tpot_p50: float | None = None
    tpot_lo: float | None = None
    tpot_hi: float | None = None
    ttft_p50: float | None = None
    ttft_lo: float | None = None
    ttft_hi: float | None = None
    e2e_p50: float | None = None
    p90: dict[str, float | None] = field(default_factory=dict)
    attainment: float | None = None
    meets: bool | None = None
    margin: float | None = None
    price: float | None = None
    gpus: int = 1


def _f(v: Any) -> float | None:
    if v in (None, "", "None", "nan"):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def margin_of(slo: dict[str, float], p90: dict[str, float | None]) -> float | None:
    if not slo:
        return None
    out = []
    for k, limit in slo.items():
        v = p90.get(k)
        if v is None:
            return -1.0
        out.append(1.0 - v / limit)
    return min(out)


def read_points(study_dir: Path, entry: dict[str, Any], slo: dict[str, float], price: float | None,
                gpus: int) -> list[Point]:
    """The points of one finished cell (an empty list when its files are missing)."""
    cell_dir = study_dir / "cells" / entry["id"]
    base = dict(cell_id=entry["id"], kind=entry.get("kind", "cell"), deployment_id=entry["deployment_id"],
                deployment=entry["deployment"], hardware=entry["hardware"], repeat=entry.get("repeat", 0),
                price=price, gpus=max(1, gpus))
    levels_csv = cell_dir / "levels.csv"
    out: list[Point] = []
    if levels_csv.exists():
        with open(levels_csv, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                kind = "rate" if _f(row.get("rate")) is not None else "concurrency"
                level = _f(row.get("rate")) if kind == "rate" else _f(row.get("concurrency"))
                p90 = {"ttft_ms": _f(row.get("ttft_p90_ms")), "tpot_ms": _f(row.get("tpot_p90_ms")),
                       "e2e_ms": _f(row.get("e2e_p90_ms")), "itl_ms": _f(row.get("itl_p99_ms"))}
                att = _f(row.get("slo_attainment"))
                meets = row.get("meets_slo")
                p = Point(**base, level_kind=kind, level=level or 0.0, stage=row.get("stage", ""),
                          requests=int(_f(row.get("requests")) or 0), errors=int(_f(row.get("errors")) or 0),
                          tok_s=_f(row.get("output_tok_s")), tpot_p50=_f(row.get("tpot_p50_ms")),
                          tpot_lo=_f(row.get("tpot_p50_ms_lo")), tpot_hi=_f(row.get("tpot_p50_ms_hi")),
                          ttft_p50=_f(row.get("ttft_p50_ms")), ttft_lo=_f(row.get("ttft_p50_ms_lo")),
                          ttft_hi=_f(row.get("ttft_p50_ms_hi")), e2e_p50=_f(row.get("e2e_p50_ms")), p90=p90,
                          attainment=att, meets=(meets == "True") if meets not in (None, "") else None)
                if slo and p.attainment is None:  # levels.csv without the study's SLO: judge by p90
                    p.meets = all((p90.get(k) or math.inf) <= v for k, v in slo.items())
                    p.attainment = SLO_ATTAINMENT if p.meets else 0.0
                p.margin = margin_of(slo, p90)
                out.append(p)
        return out
    results = cell_dir / "results.json"
    if not results.exists():
        return out
    data = json.loads(results.read_text(encoding="utf-8"))
    requests = _requests_csv(cell_dir / "requests.csv")
    for s in data.get("summaries") or []:
        if s.get("status") != "ok":
            continue
        ci = s.get("ci") or {}
        tpot = ci.get("tpot_p50_ms") or {}
        ttft = ci.get("ttft_p50_ms") or {}
        tok = ci.get("output_tok_s") or {}
        p90 = {"ttft_ms": (s.get("ttft_ms") or {}).get("p90"), "tpot_ms": (s.get("tpot_ms") or {}).get("p90"),
               "e2e_ms": (s.get("e2e_ms") or {}).get("p90"), "itl_ms": (s.get("itl_ms") or {}).get("p99")}
        p = Point(**base, level_kind="concurrency", level=1.0, stage=s.get("stage", "latency"),
                  requests=int(s.get("n_requests") or 0), errors=int(s.get("n_errors") or 0),
                  tok_s=_f(tok.get("value")) or _f(s.get("throughput_tok_s")),
                  tpot_p50=_f((s.get("tpot_ms") or {}).get("p50")), tpot_lo=_f(tpot.get("lo")),
                  tpot_hi=_f(tpot.get("hi")), ttft_p50=_f((s.get("ttft_ms") or {}).get("p50")),
                  ttft_lo=_f(ttft.get("lo")), ttft_hi=_f(ttft.get("hi")),
                  e2e_p50=_f((s.get("e2e_ms") or {}).get("p50")), p90=p90)
        if slo:
            rows = [r for r in requests if r.get("backend") == s.get("backend") and r.get("stage") == s.get("stage")
                    and r.get("warmup") != "True"]
            if rows:
                good = sum(1 for r in rows if not r.get("error_kind") and r.get("length_ok") == "True"
                           and all((_f(r.get(k)) if _f(r.get(k)) is not None else math.inf) <= v
                                   for k, v in slo.items() if k != "itl_ms"))
                p.attainment = good / len(rows)
                p.meets = p.attainment >= SLO_ATTAINMENT
            p.margin = margin_of(slo, p90)
        out.append(p)
    return out


def collect_points(cells: list[dict[str, Any]], directory: Path, slo: dict[str, float]) -> list[Point]:
    """The points of every finished cell of a study directory (``cells``: the manifest's entries)."""
    pts = []
    for c in cells:
        if c["status"] != "done":
            continue
        pts.extend(read_points(directory, c, slo, c.get("price_per_hour"),
                               c.get("gpus") or c.get("plan", {}).get("gpus", 0) or 1))
    return pts


def _requests_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------------
# Pooling, eligibility, the answers
# ---------------------------------------------------------------------------------------------
@dataclass
class Estimate:
    value: float | None
    lo: float | None = None
    hi: float | None = None
    n: int = 0

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    def overlaps(self, other: Estimate) -> bool:
        """Intervals that overlap; a single value (no interval) inside the other's interval; or, with no
        interval on either side, equal values."""
        if self.value is None or other.value is None:
            return False
        if self.has_interval and other.has_interval:
            return self.lo <= other.hi and other.lo <= self.hi  # type: ignore[operator]
        if self.has_interval:
            return self.lo <= other.value <= self.hi  # type: ignore[operator]
        if other.has_interval:
            return other.lo <= self.value <= other.hi  # type: ignore[operator]
        return self.value == other.value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(values: list[float | None], single_lo: float | None = None, single_hi: float | None = None) -> Estimate:
    vals = [v for v in values if v is not None]
    if not vals:
        return Estimate(None)
    if len(vals) == 1:
        return Estimate(vals[0], single_lo, single_hi, 1)
    arr = np.array(vals, dtype=float)
    mean = float(arr.mean())
    half = t975(len(vals) - 1) * float(arr.std(ddof=1)) / math.sqrt(len(vals))
    return Estimate(mean, max(0.0, mean - half), mean + half, len(vals))  # every figure here is ≥ 0


@dataclass
class Group:
    """A deployment at one level: its pooled measurements."""

    deployment_id: str
    deployment: str
    hardware: str
    level_kind: str
    level: float
    points: list[Point]
    price: float | None
    gpus: int
    tpot: Estimate = field(default_factory=lambda: Estimate(None))
    ttft: Estimate = field(default_factory=lambda: Estimate(None))
    tok_s: Estimate = field(default_factory=lambda: Estimate(None))
    cost: Estimate = field(default_factory=lambda: Estimate(None))
    attainment: float | None = None
    meets: bool | None = None
    fitted_margin: float | None = None
    confirmed: bool | None = None      # None: not re-measured; True/False: the follow-up met / missed
    eligible: bool = False
    why_not: str = ""

    @property
    def level_label(self) -> str:
        v = int(self.level) if float(self.level).is_integer() else self.level
        return f"c={v}" if self.level_kind == "concurrency" else f"rate={v}"

    def minutes_per_1m(self) -> float | None:
        return 1e6 / self.tok_s.value / 60 if self.tok_s.value else None

    def figures(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "hardware": self.hardware, "level": self.level_label,
                "ms_per_token": self.tpot.to_dict(), "ttft_ms": self.ttft.to_dict(), "tok_s": self.tok_s.to_dict(),
                "price_per_hour": self.price, "minutes_per_1m_tokens": self.minutes_per_1m(),
                "cost_per_1m_tokens": self.cost.to_dict(), "slo_attainment": self.attainment,
                "measurements": len(self.points), "confirmed": self.confirmed,
                "cells": sorted({p.cell_id for p in self.points})}


def build_groups(points: list[Point], slo: dict[str, float]) -> list[Group]:
    by: dict[tuple[str, str, float], list[Point]] = defaultdict(list)
    for p in points:
        by[(p.deployment_id, p.level_kind, p.level)].append(p)
    groups = []
    for (dep, kind, level), pts in by.items():
        g = Group(dep, pts[0].deployment, pts[0].hardware, kind, level, pts, pts[0].price, pts[0].gpus)
        one = pts[0] if len(pts) == 1 else None
        g.tpot = estimate([p.tpot_p50 for p in pts], one and one.tpot_lo, one and one.tpot_hi)
        g.ttft = estimate([p.ttft_p50 for p in pts], one and one.ttft_lo, one and one.ttft_hi)
        g.tok_s = estimate([p.tok_s for p in pts])
        if g.price and g.tok_s.value:
            def cost(t: float | None, price: float = g.price) -> float | None:
                return price / (t * 3600) * 1e6 if t and t > 0 else None

            g.cost = Estimate(cost(g.tok_s.value), cost(g.tok_s.hi), cost(g.tok_s.lo) if g.tok_s.lo and g.tok_s.lo > 0
                              else (math.inf if g.tok_s.has_interval else None), g.tok_s.n)
        if slo:
            reqs = sum(p.requests for p in pts if p.attainment is not None)
            if reqs:
                g.attainment = sum(p.attainment * p.requests for p in pts if p.attainment is not None) / reqs
                g.meets = g.attainment >= SLO_ATTAINMENT
            else:
                g.meets = False
            confirms = [p for p in pts if p.kind == "confirm"]
            if confirms:
                g.confirmed = all(p.meets for p in confirms)
        groups.append(g)
    # the isotonic fit of each deployment's margins over load
    if slo:
        deps: dict[str, list[Group]] = defaultdict(list)
        for g in groups:
            deps[g.deployment_id].append(g)
        for gs in deps.values():
            pts = [(p.level, p.margin if p.margin is not None else -1.0, max(1, p.requests)) for g in gs for p in g.points]
            fit = isotonic_decreasing([a for a, _, _ in pts], [b for _, b, _ in pts], [c for _, _, c in pts])
            for g in gs:
                g.fitted_margin = fit.get(float(g.level))
    for g in groups:
        g.eligible, g.why_not = _eligible(g, slo)
    groups.sort(key=lambda g: (g.deployment, g.level_kind, g.level))
    return groups


def _eligible(g: Group, slo: dict[str, float]) -> tuple[bool, str]:
    if g.tok_s.value is None or g.tpot.value is None:
        return False, "no successful requests"
    if not slo:
        return True, ""
    if not g.meets:
        return False, f"misses the SLO ({(g.attainment or 0) * 100:.0f}% of requests within the limits)"
    if g.fitted_margin is not None and g.fitted_margin < 0:
        return False, (f"meets the SLO here, but the monotone fit of its margins over load says it does not"
                       f" (fitted margin {g.fitted_margin:+.2f})")
    if g.confirmed is False:
        return False, "missed the SLO when re-measured"
    return True, ""


def deployment_max_load(groups: list[Group]) -> dict[str, Group]:
    """Per deployment, its highest eligible level."""
    out: dict[str, Group] = {}
    for g in groups:
        if g.eligible and (g.deployment_id not in out or g.level > out[g.deployment_id].level):
            out[g.deployment_id] = g
    return out


CRITERIA = {
    "most_cost_effective": ("Most cost-effective", "cost", False, "lowest $ per 1M output tokens"),
    "best_latency": ("Best latency", "tpot", False, "lowest median ms/token"),
    "best_throughput": ("Best throughput", "tok_s", True, "highest output tok/s"),
}


def answers(groups: list[Group], slo: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (title, attr, higher, rule) in CRITERIA.items():
        best_per_dep: dict[str, Group] = {}
        for g in groups:
            if not g.eligible:
                continue
            v = getattr(g, attr).value
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                continue
            cur = best_per_dep.get(g.deployment_id)
            if cur is None or (v > getattr(cur, attr).value if higher else v < getattr(cur, attr).value):
                best_per_dep[g.deployment_id] = g
        ranked = sorted(best_per_dep.values(), key=lambda g: getattr(g, attr).value, reverse=higher)
        entry: dict[str, Any] = {"title": title, "rule": rule + (", among levels that meet the SLO" if slo else ""),
                                 "metric": attr, "winner": None, "ties": [], "note": ""}
        if not ranked:
            entry["note"] = ("no deployment meets the SLO at any measured level" if slo else "nothing measured") \
                if attr != "cost" or any(g.eligible for g in groups) is False else "no hardware entry has a price"
            if attr == "cost" and any(g.eligible for g in groups):
                entry["note"] = "no hardware entry of an eligible deployment has a price_per_hour"
            out[key] = entry
            continue
        win = ranked[0]
        ties = [g for g in ranked[1:] if getattr(g, attr).overlaps(getattr(win, attr))]
        entry["winner"] = win.figures()
        entry["ties"] = [g.figures() for g in ties]
        if not getattr(win, attr).has_interval:
            entry["note"] = "one measurement: no interval on this figure (repeats: 2 or more give one)"
        out[key] = entry
    return out


def pareto(groups: list[Group], per: str) -> list[Group]:
    """The frontier of (latency per user ↓, throughput per GPU or per dollar ↑) over every measured level."""
    def y(g: Group) -> float | None:
        if g.tok_s.value is None:
            return None
        if per == "dollar":
            return g.tok_s.value * 3600 / g.price if g.price else None
        return g.tok_s.value / max(1, g.gpus)

    pts = [g for g in groups if g.tpot.value is not None and y(g) is not None]
    pts.sort(key=lambda g: (g.tpot.value, -y(g)))  # type: ignore[operator]
    front, best = [], -math.inf
    for g in pts:
        if y(g) > best:  # type: ignore[operator]
            front.append(g)
            best = y(g)  # type: ignore[assignment]
    return front


def confirm_target(groups: list[Group], deployment_id: str) -> Group | None:
    """The level to re-measure next: the deployment's highest eligible level, unless it was re-measured."""
    mine = [g for g in groups if g.deployment_id == deployment_id and g.eligible]
    if not mine:
        return None
    top = max(mine, key=lambda g: g.level)
    return None if top.confirmed is not None else top
