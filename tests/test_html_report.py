"""report.html of a real load run (echo backends): self-contained, the same figures as the other
reports, rebuilt by ``llmcompare report``, and rendered by a real headless Chromium with the network off."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import needs_model

import llmcompare
from llmcompare.analysis.result import load_result
from llmcompare.report import html as html_report
from llmcompare.report import levels_html
from llmcompare.report.base import write_all
from llmcompare.report.columns import LEVEL_COLUMNS
from llmcompare.report.levels_files import recommendation_lines

pytestmark = [pytest.mark.engine, needs_model]

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))), None)


class Page(HTMLParser):
    """What the tests read from a page: its tables by id (header cells, rows of (text, class)), every
    tag's attributes, the title, the text of <pre>, and nesting errors (an end tag that closes something not open)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.doctype: str | None = None
        self.tables: dict[str, dict[str, list]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self.pre = ""
        self.problems: list[str] = []
        self._open: list[str] = []
        self._table: dict[str, list] | None = None
        self._row: list[tuple[str, str]] | None = None
        self._cell: list[str] | None = None
        self._cell_class = ""
        self.feed(text)
        self.close()
        if self._open:
            self.problems.append(f"never closed: {self._open}")

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag not in VOID:
            self._open.append(tag)
        if tag == "table":
            self._table = self.tables[a.get("id") or f"table{len(self.tables)}"] = {"head": [], "rows": []}
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell, self._cell_class = [], a.get("class") or ""

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self._open or self._open[-1] != tag:
            self.problems.append(f"</{tag}> while {self._open[-3:]} open")
            return
        self._open.pop()
        if tag in ("td", "th") and self._row is not None:
            self._row.append(("".join(self._cell or []).strip(), self._cell_class))
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            if "thead" in self._open:
                self._table["head"] = [t for t, _ in self._row]
            else:
                self._table["rows"].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._open and self._open[-1] == "title":
            self.title += data
        if "pre" in self._open:
            self.pre += data

    def attrs(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]

    def texts(self, tag: str) -> list[str]:
        """Text of every cell in table ``tag`` (a table id), row by row."""
        return [[t for t, _ in row] for row in self.tables[tag]["rows"]]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two echo backends (2 and 6 ms/token) at concurrency 1, 2, 4, 8 requests a level, a price."""
    out = tmp_path_factory.mktemp("html") / "run"
    r = llmcompare.load(["echo", "echo@slow"], concurrency=[1, 2, 4], requests=8, max_new_tokens=8,
                        options=["echo.per_token_ms=2", "slow.per_token_ms=6"], price_per_hour=["1.5"], output=out)
    paths = write_all(r)
    return r, paths


def test_page_is_self_contained_and_holds_the_tables(run):
    r, paths = run
    assert paths["html"] == r.run_dir.html and r.run_dir.html.exists()
    text = r.run_dir.html.read_text(encoding="utf-8")
    page = Page(text)
    assert page.doctype == "DOCTYPE html" and not page.problems, page.problems
    assert [t for t, _ in page.tags[:2]] == ["html", "head"] and page.attrs("html")[0]["lang"] == "en"

    # Self-contained: no script, no stylesheet link, every src/href a data: URI, no URL in the CSS.
    assert not page.attrs("script") and not page.attrs("link")
    refs = [v for _, a in page.tags for k, v in a.items() if k in ("src", "href")]
    assert refs and all(v.startswith("data:image/png;base64,") for v in refs), refs
    assert not re.search(r"https?://", " ".join(refs)) and "url(" not in text and "@import" not in text

    # The per-level table: LEVEL_COLUMNS' headers, one row per level, the same cells, bad cells shaded.
    levels = page.tables["levels"]
    assert levels["head"] == [c.header for c in LEVEL_COLUMNS]
    assert len(levels["rows"]) == len(r.levels) == 6
    for lv, row in zip(r.levels, levels["rows"]):
        assert [t for t, _ in row] == [c.cell(lv, "brackets") for c in LEVEL_COLUMNS]  # with 95% intervals
        for c, (_, cls) in zip(LEVEL_COLUMNS, row):
            assert ("bad" in cls.split()) == bool(c.bad and c.bad(lv)), (lv.stage, c.key)
    assert {row[0] for row in page.texts("levels")} == {"echo", "slow"}

    # Recommendations come from recommendation_lines, escaped (">=" of the rules too).
    assert len(page.attrs("li")) >= 3
    for line in recommendation_lines(r):
        assert f"<li>{escape(line)}</li>" in text
    assert "Best throughput: echo at load:c=4" in text  # 3× the slow backend's speed, 4 in flight
    assert "&gt;= 10%" in text and ">= 10%" not in text

    # Knees: one row per backend, the analysis' level; backend info; the environment as a table + JSON.
    knees = {row[0]: row for row in page.texts("knees")}
    assert set(knees) == {"echo", "slow"}
    for label, a in r.analysis["backends"].items():
        assert knees[label][1] == a["knee"].removeprefix("load:")
        assert knees[label][4] == "no SLO given"
    backends = {row[0]: row for row in page.texts("backends")}
    assert set(backends) == {"echo", "slow"}
    for label, row in backends.items():
        assert row[1] == "ok" and "in-process" in row and "$1.50" in row and f"echo {llmcompare.__version__}" in row
    assert "per_token_ms=6.0" in " ".join(backends["slow"])
    env = dict(page.texts("environment"))
    assert env["python"] == r.environment["python"] and env["model.name"] == r.environment["model"]["name"]
    assert page.attrs("details") and json.loads(page.pre) == json.loads(json.dumps(r.environment, default=str))

    # Plots: embedded PNGs, byte for byte the files under plots/; no error plot when nothing failed.
    embedded = [base64.b64decode(a["src"].split(",", 1)[1]) for a in page.attrs("img")]
    files = sorted(p.name for p in r.run_dir.plots.glob("*.png"))
    assert files == ["latency_throughput.png", "ttft_by_input.png", "ttft_by_load.png"]
    assert sorted(embedded) == sorted((r.run_dir.plots / f).read_bytes() for f in files)
    assert all(png.startswith(PNG_MAGIC) and len(png) > 5000 for png in embedded)
    assert all(a.get("alt") for a in page.attrs("img"))
    assert "No request failed at any level (48 measured requests)" in text


def test_failed_requests_are_plotted_and_flagged(tmp_path):
    """Output lengths of 2–16 tokens at 10 ms/token against a 0.1 s request timeout: the longest
    requests time out. Input lengths vary too, so TTFT against input length is drawn."""
    r = llmcompare.load(["echo"], concurrency=[1, 2], requests=6, max_new_tokens=8, output_tokens_dist="uniform:2-16",
                        input_tokens=16, input_tokens_dist="uniform:8-64", options=["per_token_ms=10"],
                        request_timeout_s=0.1, slo="ttft_ms=50", output=tmp_path / "run")
    write_all(r)
    assert any(lv.errors for lv in r.levels) and all(lv.errors < lv.requests for lv in r.levels)
    assert {k for lv in r.levels for k in lv.errors_by_kind} == {"timeout_total"}
    text = r.run_dir.html.read_text(encoding="utf-8")
    page = Page(text)
    assert not page.problems
    assert {p.name for p in r.run_dir.plots.glob("*.png")} == {
        "latency_throughput.png", "ttft_by_load.png", "ttft_by_input.png", "errors.png"}
    assert any(a.get("id") == "plot-errors" for a in page.attrs("figure"))
    errors_col = [c.key for c in LEVEL_COLUMNS].index("errors")
    for lv, row in zip(r.levels, page.tables["levels"]["rows"]):
        cell, cls = row[errors_col]
        assert ("bad" in cls.split()) == bool(lv.errors or lv.warmup_errors or lv.failed)
        expected = f"{lv.errors} (timeout_total {lv.errors})" if lv.errors else "0"
        expected += f" + {lv.warmup_errors} in warm-up" if lv.warmup_errors else ""  # counted, shown, not measured
        expected += " · level failed" if lv.failed else ""  # more than half its requests or its warm-up failed
        assert cell == expected
        assert (f"{lv.backend} {lv.stage} failed: {escape(lv.failed)}" in text) if lv.failed else True
    # An SLO was given: its limit and each backend's highest level meeting it are shown.
    assert "SLO limits per request: ttft_ms ≤ 50." in text
    knee_row = page.texts("knees")[0]
    assert knee_row[4] == (r.analysis["backends"]["echo"]["max_level_meeting_slo"] or "–").removeprefix("load:")


def test_page_without_matplotlib_keeps_every_table_and_escapes_strings(run, tmp_path, monkeypatch):
    """No matplotlib: the page says so and keeps every table. A hostile string from the run record
    stays text."""
    r, _ = run
    copy = tmp_path / "run"
    shutil.copytree(r.run_dir.path, copy)
    shutil.rmtree(copy / "plots")
    (copy / "report.html").unlink()

    def no_matplotlib(result):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(levels_html, "make_plots", no_matplotlib)
    result = load_result(copy)
    hostile = '<script>alert("x")</script> & <b>'
    result.environment["cpu"] = hostile
    path = html_report.write_html(result)
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert not page.problems and not page.attrs("script") and not page.attrs("b")
    assert dict(page.texts("environment"))["cpu"] == hostile and json.loads(page.pre)["cpu"] == hostile
    assert not page.attrs("img") and not (copy / "plots").exists()
    assert "Plots left out: matplotlib is not installed" in text and "pip install matplotlib" in text
    original = Page(r.run_dir.html.read_text(encoding="utf-8"))
    assert page.tables["levels"] == original.tables["levels"]


def test_report_cli_rebuilds_the_page_from_requests_jsonl_alone(run, tmp_path):
    r, _ = run
    fresh = tmp_path / "rebuilt"
    fresh.mkdir()
    shutil.copy(r.run_dir.requests, fresh / "requests.jsonl")
    out = subprocess.run([sys.executable, "-m", "llmcompare", "report", str(fresh)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert (fresh / "report.html").exists()
    assert sorted(p.name for p in (fresh / "plots").glob("*.png")) == sorted(
        p.name for p in r.run_dir.plots.glob("*.png"))
    before = Page(r.run_dir.html.read_text(encoding="utf-8"))
    after = Page((fresh / "report.html").read_text(encoding="utf-8"))
    assert set(after.tables) == set(before.tables) == {"knees", "levels", "backends", "environment"}
    for name in before.tables:
        assert after.tables[name] == before.tables[name], name


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium with the network off: a dead proxy, every host unresolvable, no background
    traffic. ``--enable-logging=stderr`` puts the page's console messages on stderr."""
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
            "--enable-logging=stderr", "--v=0", "--hide-scrollbars", *extra, url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; });
  var rows = document.querySelectorAll("#levels tbody tr").length;
  document.title = "images " + ok.length + "/" + imgs.length + " rows " + rows;
  console.log("llmcompare-probe " + document.title);
});
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install -y chromium)")
def test_chromium_renders_the_page_offline(run, tmp_path):
    """The page opened from disk in a real browser: every image decodes to a non-zero size, the
    table is there, and the console stays clean. The page has no script of its own; a copy gets a
    probe that writes what it counted into the title (read back with --dump-dom) and logs one line,
    which proves the console is being captured."""
    r, _ = run
    probe = tmp_path / "probe.html"
    probe.write_text(r.run_dir.html.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    out = _chromium(probe.as_uri(), tmp_path / "profile", "--dump-dom")
    assert out.returncode == 0, out.stderr[-3000:]
    dom = Page(out.stdout)
    n_img = len(Page(r.run_dir.html.read_text(encoding="utf-8")).attrs("img"))
    assert dom.title == f"images {n_img}/{n_img} rows {len(r.levels)}", dom.title
    assert len(dom.tables["levels"]["rows"]) == len(r.levels)
    console = [ln for ln in out.stderr.splitlines() if "CONSOLE" in ln]
    assert any("llmcompare-probe" in ln for ln in console), out.stderr[-3000:]
    assert not [ln for ln in console if "llmcompare-probe" not in ln or "Uncaught" in ln or "ERROR:CONSOLE" in ln]

    shot = tmp_path / "report.png"
    out = _chromium(r.run_dir.html.as_uri(), tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1400,3000")
    assert out.returncode == 0 and shot.read_bytes().startswith(PNG_MAGIC), out.stderr[-3000:]
    assert not [ln for ln in out.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    from PIL import Image  # matplotlib's own dependency

    with Image.open(shot) as im:
        assert im.size == (1400, 3000)
        colors = im.convert("RGB").resize((70, 150)).getcolors(70 * 150)
        assert colors is not None and len(colors) > 20  # drawn, not a blank page


@pytest.fixture(scope="module")
def latency_run(tmp_path_factory):
    """A batch-1 run of two echo backends, judged for fidelity by the first (no scores: exact match only)."""
    out = tmp_path_factory.mktemp("html-latency") / "run"
    r = llmcompare.compare(["echo", "echo@slow"], options=["echo.per_token_ms=1", "slow.per_token_ms=3"],
                           max_new_tokens=6, repeats=2, warmup=0, reference="echo", fidelity_tokens=8, output=out)
    return r, write_all(r)


def test_batch_one_page_puts_intervals_speed_ups_and_fidelity_side_by_side(latency_run, tmp_path):
    from llmcompare.report.columns import latency_columns
    from llmcompare.report.fidelity import FIDELITY_COLUMNS, verdict_lines

    r, paths = latency_run
    page = Page(paths["html"].read_text(encoding="utf-8"))
    assert page.doctype == "DOCTYPE html" and not page.problems, page.problems
    assert set(page.tables) == {"summary", "comparisons", "fidelity", "backends", "environment"}
    cols = latency_columns(r.summaries, where="html")
    assert page.texts("summary") == [[c.cell(s, "brackets") for c in cols] for s in r.summaries]
    assert "[" in page.texts("summary")[0][[c.key for c in cols].index("tpot_p50_ms")]  # an interval is shown
    assert page.texts("fidelity") == [[c.cell(f) for c in FIDELITY_COLUMNS] for f in r.fidelity]
    [slow] = page.texts("comparisons")
    assert slow[0] == "slow" and "slower" in slow[2]  # the paired speed-up and its verdict
    items = [t for t in verdict_lines(r)]
    assert any(line.startswith("slow: ") and "100% exact match" in line for line in items), items
    if CHROMIUM is not None:  # and a real browser opens it offline, with a clean console
        out = _chromium(paths["html"].as_uri(), tmp_path / "profile", "--dump-dom")
        assert out.returncode == 0, out.stderr[-3000:]
        assert len(Page(out.stdout).tables["fidelity"]["rows"]) == 2
        assert not [ln for ln in out.stderr.splitlines() if "Uncaught" in ln or "ERROR:CONSOLE" in ln]
