"""llmcompare against servers it does not control: each misbehaviour of ``tests/hostile_server.py``
driven through the real backend, with the failure kind, the records, the peak memory of the process
that reads, and the secrets that must not show.

Most cases run the backend in a subprocess (this file, run as ``python tests/test_hostile_servers.py
drive SPEC``) through :class:`~llmcompare.runner.session.BackendSession`, the path the load driver
takes, and read back its records and its peak RSS (``VmHWM``): the process that reads the server's
answer is the one measured. A few run the CLI (``python -m llmcompare load ...``) for its exit status,
its run directory and its output; their peak is the largest of the CLI and its worker
(``RUSAGE_CHILDREN`` of a wrapper process).

Peak RSS bound: :data:`MAX_RSS_MB` (400 MB) for the process that reads; for a whole CLI run (whose
parent also holds the tokenizer, transformers and the plots), :data:`CLI_HEADROOM_MB` above the same
run against a well-behaved server, measured in the same test session. Before the bounds of ``llmcompare.limits``, these servers
took the reading process to 2.2 GB (a gzip bomb), 2.6 GB and a MemoryError (a huge ``usage``), and
680 MB in 15 s (a stream that ignores ``max_tokens``).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_server import HostileServer

HERE = Path(__file__).resolve()
PYTHON = sys.executable
MAX_RSS_MB = 400
"""The peak RSS allowed to the process reading a hostile server (the driver, or the CLI's worker)."""
CLI_HEADROOM_MB = 64
"""What a hostile server may add to a CLI run's peak RSS over the same run against a healthy server."""
N = 8


class ByteTokenizer:
    """One id per UTF-8 byte (the HTTP adapters only need ``tokenizer()`` of the model)."""

    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": list(text.encode("utf-8", "replace"))}

    def decode(self, ids, **kwargs) -> str:
        return bytes(i % 256 for i in ids).decode("utf-8", "replace")


class ByteModel:
    def tokenizer(self, trust_remote_code: bool = False) -> ByteTokenizer:
        return ByteTokenizer()


# ---- the driver subprocess ------------------------------------------------------------------------

def _drive(spec: dict) -> dict:
    """In the subprocess: load the backend through a session, run the requests, report everything."""
    from llmcompare import limits
    from llmcompare.config.spec import BackendRequest
    from llmcompare.models.prompting import Prompt
    from llmcompare.plugins import get_registry
    from llmcompare.runner.session import BackendSession, peak_rss

    for name, value in spec.get("limits", {}).items():
        setattr(limits, name, value)
    registry = get_registry()
    backend = registry.get(spec["backend"])
    options = backend.validate_options(spec["options"])
    records = []
    t = time.perf_counter()
    with BackendSession(BackendRequest(spec["backend"], spec["backend"], None, options), ByteModel(),
                        spec=backend) as session:
        if session.ok:
            for i in range(spec.get("requests", 2)):
                prompt = Prompt(f"p{i}", "Hello", tuple(b"Hello"))
                rec = session.run(session.arequest(prompt, spec.get("n", N), stage="load:c=1", request_id=f"p{i}",
                                                   timeout_s=spec.get("timeout_s")))
                records.append(rec.to_dict())
    return {"records": records, "backend": session.record.to_dict(), "rss_mb": peak_rss() / 2**20,
            "seconds": time.perf_counter() - t}


def drive(url: str, backend: str = "openai", timeout: float = 120, **spec) -> dict:
    """Run :func:`_drive` in a fresh interpreter against ``url`` (``/v1`` is added for openai)."""
    options = {"url": url + ("/v1" if backend == "openai" else ""), **spec.pop("options", {})}
    payload = json.dumps({"backend": backend, "options": options, **spec})
    proc = subprocess.run([PYTHON, str(HERE), "drive", payload], capture_output=True, text=True, timeout=timeout,
                          cwd=HERE.parent.parent, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["stderr"] = proc.stderr
    assert out["rss_mb"] < MAX_RSS_MB, f"peak RSS {out['rss_mb']:.0f} MB"
    return out


def kinds(out: dict) -> list[str | None]:
    return [r["error_kind"] for r in out["records"]]


def records(out: dict):
    from llmcompare.records import RequestRecord

    return [RequestRecord.from_dict(r) for r in out["records"]]


# ---- numbers a server sends ----------------------------------------------------------------------

@pytest.mark.parametrize("usage_raw, kind", [
    ("100000000", "overrun"),        # a count beyond what the request may read: once a MemoryError at 2.6 GB
    ("1" + "0" * 400, "malformed"),  # once an OverflowError
    ("-1000000", "malformed"),       # once output tok/s of -928,559,663 with exit 0
    ('"8"', "malformed"),
    ("true", "malformed"),
    ("8.5", "malformed"),
    ("NaN", "malformed"),
    ("1e400", "malformed"),           # json reads it as inf
    ("[8]", "malformed"),
])
def test_usage_that_is_not_a_count_fails_the_request_by_kind(usage_raw, kind):
    with HostileServer("usage", healthy_first=1, usage_raw=usage_raw) as url:
        out = drive(url)
    assert kinds(out) == [kind, kind], out["records"]
    assert all(r["output_tokens"] <= N for r in out["records"])  # what arrived before the usage, kept as partial


def test_more_text_events_than_usage_beyond_the_slack_is_an_overrun():
    # 40 text events for -n 8 with usage 8: once counted as length-ok
    with HostileServer("usage", healthy_first=1, events=40, usage_raw="8") as url:
        out = drive(url)
    assert kinds(out) == ["overrun", "overrun"]


def test_usage_below_the_text_events_is_a_count_disagreement_credited_at_most_the_forced_length():
    from llmcompare.analysis import metrics

    with HostileServer("usage", healthy_first=1, events=10, usage_raw="8") as url:
        out = drive(url)
    recs = records(out)
    assert kinds(out) == [None, None]
    for r in recs:
        assert r.count_check["verdict"] == "disagree" and r.count_check["events"] == 10
        assert r.count_check["usage"] == 8 and not r.length_ok
        assert metrics.verified_tokens(r) == 8
    assert metrics.count_disagreements(recs) == 2


def test_ids_and_usage_disagreeing_are_flagged_and_only_the_smaller_count_is_credited():
    from llmcompare.analysis import metrics

    with HostileServer("ids_usage", healthy_first=1, ids=8, usage_raw="1") as url:
        out = drive(url)
    recs = records(out)
    assert kinds(out) == [None, None]
    for r in recs:
        assert r.output_tokens == 8 and r.engine_output_tokens == 1 and r.count_source == "ids"
        assert r.count_check == {"ids": 8, "usage": 1, "verdict": "disagree", "why": "ids 8 != usage 1"}
        assert not r.length_ok and metrics.verified_tokens(r) == 1
    assert metrics.count_disagreements(recs) == 2


def test_agreeing_counts_say_so():
    with HostileServer("ids_usage", healthy_first=1, ids=8, usage_raw="8") as url:
        out = drive(url)
    for r in records(out):
        assert r.length_ok and r.count_check == {"ids": 8, "usage": 8, "verdict": "agree"}


@pytest.mark.parametrize("ids, kind", [(24, "overrun"), (10, None)])
def test_tokens_beyond_the_forced_length(ids, kind):
    from llmcompare.analysis import metrics

    with HostileServer("extra", healthy_first=1, ids=ids) as url:
        out = drive(url)
    assert kinds(out) == [kind, kind]
    if kind is None:  # within the slack: kept, flagged, and credited the forced length only
        for r in records(out):
            assert r.output_tokens == 10 and not r.length_ok and metrics.verified_tokens(r) == N


def test_throughput_counts_verified_tokens_only():
    from llmcompare.analysis import metrics
    from llmcompare.records import BackendRecord

    with HostileServer("extra", healthy_first=1, ids=10) as url:
        out = drive(url, requests=3)
    recs = records(out)
    backend = BackendRecord.from_dict({**out["backend"], "measured_wall_s": 1.0})
    summary = metrics.summarize("openai", recs, [backend])
    assert summary.output_tokens == 3 * N  # not 3 * 10
    assert summary.throughput_tok_s == pytest.approx(3 * N)
    assert summary.n_length_mismatch == 3


def _record(n_out: int, check: dict | None = None, error: str | None = None, pid: str = "p0"):
    from llmcompare.records import RequestRecord

    times = [0.1 * (i + 1) for i in range(n_out)]
    return RequestRecord(backend="b", prompt_id=pid, repeat=0, warmup=False, input_tokens=4,
                         expected_output_tokens=N, output_tokens=n_out, ttft_s=times[0] if times else None,
                         e2e_s=times[-1] if times else None, token_times_s=times, error=error,
                         error_kind="server_error" if error else None, stage="load:c=1", session="s",
                         count_check=check, sent_at=100.0, scheduled_at=100.0)


def test_the_verified_tokens_rule():
    from llmcompare.analysis import metrics
    from llmcompare.records import count_check

    assert metrics.verified_tokens(_record(N)) == N
    assert metrics.verified_tokens(_record(N - 3)) == N - 3  # stopped early (TGI): what came is credited
    assert metrics.verified_tokens(_record(N + 5)) == N  # never more than asked
    assert metrics.verified_tokens(_record(N, error="x")) == 0
    disputed = count_check(ids=8, usage=1)
    assert disputed == {"ids": 8, "usage": 1, "verdict": "disagree", "why": "ids 8 != usage 1"}
    assert metrics.verified_tokens(_record(N, disputed)) == 1
    assert metrics.verified_tokens(_record(10, count_check(usage=8, events=10))) == 8
    agreed = count_check(usage=10, events=4)  # four events of several tokens each: consistent
    assert agreed["verdict"] == "agree" and metrics.verified_tokens(_record(N, agreed)) == N
    old = _record(N).to_dict()
    del old["count_check"]  # a record written before the field existed reads as unchecked
    from llmcompare.records import RequestRecord

    assert RequestRecord.from_dict(old).count_check is None and RequestRecord.from_dict(old).length_ok
    records = [_record(N, disputed), _record(N, agreed), _record(N, disputed, error="x")]
    assert metrics.count_disagreements(records) == 1


def test_a_load_level_credits_verified_tokens_only():
    from llmcompare.analysis import levels
    from llmcompare.config.spec import BackendRequest, RunSpec
    from llmcompare.records import StageRecord, count_check
    from llmcompare.scenarios.loadgen import LoadConfig

    spec = RunSpec(backends=(BackendRequest("b", "openai", None, {}),),
                   scenarios=(LoadConfig(max_new_tokens=N, concurrency=(1,), requests=3),))
    stage = StageRecord(backend="b", stage="load:c=1", session="s", started_at=100.0, wall_s=2.0,
                        params={"concurrency": 1})
    recs = [_record(N, pid="p0"), _record(24, pid="p1"), _record(N, count_check(ids=8, usage=2), pid="p2")]
    level = levels.level_of(spec, stage, recs)
    assert level.output_tokens == N + N + 2 and level.output_tok_s == pytest.approx((N + N + 2) / 2.0)
    assert level.length_mismatch == 2  # the overlong one and the disputed one


# ---- streams that do not end, and bodies that do not fit ------------------------------------------

def test_a_stream_that_ignores_max_tokens_is_cut_at_the_cap():
    with HostileServer("endless", healthy_first=1) as url:
        out = drive(url, requests=3)
    assert kinds(out) == ["overrun"] * 3
    assert out["seconds"] < 30


def test_a_flood_of_keepalives_is_cut_at_the_byte_budget():
    with HostileServer("flood", healthy_first=1) as url:
        out = drive(url)
    assert kinds(out) == ["overrun", "overrun"]
    assert all("bytes" in r["error"] for r in out["records"])


@pytest.mark.parametrize("mode, kind", [("huge_line", "malformed"), ("sse_bomb", "malformed")])
def test_an_event_that_never_ends_is_malformed(mode, kind):
    with HostileServer(mode, healthy_first=1) as url:
        out = drive(url)
    assert kinds(out) == [kind, kind]
    assert all("longer than" in r["error"] for r in out["records"])


@pytest.mark.parametrize("mode", ["gzip_bomb", "deflate_bomb"])
def test_a_compressed_error_bomb_is_read_to_its_bound(mode):
    with HostileServer(mode, healthy_first=1) as url:
        out = drive(url)
    assert kinds(out) == ["server_error", "server_error"]
    assert all(len(r["error"]) < 2200 for r in out["records"])


def test_a_model_list_beyond_its_bound_is_refused():
    with HostileServer("huge_models") as url:
        out = drive(url)
    assert out["backend"]["status"] == "failed"
    assert "cannot list the models" in out["backend"]["error"] and "more than" in out["backend"]["error"]


def test_a_request_that_trickles_without_tokens_ends_at_the_total_timeout():
    with HostileServer("trickle", healthy_first=1, interval_s=0.2) as url:
        out = drive(url, options={"total_timeout_s": 1.5})
    assert kinds(out) == ["timeout_total", "timeout_total"]


# ---- the probe in load() -------------------------------------------------------------------------

def test_an_endless_stream_during_the_probe_fails_the_backend_at_once():
    with HostileServer("endless") as url:
        out = drive(url)
    assert out["backend"]["status"] == "failed" and out["records"] == []
    assert "failed the probe request: overrun" in out["backend"]["error"]
    assert out["seconds"] < 30


def test_the_probe_obeys_the_configured_timeouts():
    with HostileServer("trickle", interval_s=0.2) as url:
        out = drive(url, options={"first_token_timeout_s": 1.0})
    assert "timeout_first_token" in out["backend"]["error"] and out["seconds"] < 20


def test_the_probe_is_bounded_when_the_timeouts_are_none():
    # with first-token and total timeouts 0 (none), the probe still ends: its own bounds, shrunk here
    with HostileServer("trickle", interval_s=0.2) as url:
        out = drive(url, options={"first_token_timeout_s": 0, "total_timeout_s": 0},
                    limits={"PROBE_FIRST_TOKEN_S": 1.0, "PROBE_TAIL_S": 1.0})
    assert "failed the probe request: timeout_first_token" in out["backend"]["error"]
    assert out["seconds"] < 20


def test_a_probe_with_bad_usage_fails_the_backend_with_one_line():
    with HostileServer("usage", usage_raw="-5") as url:
        out = drive(url)
    assert out["backend"]["status"] == "failed"
    assert "failed the probe request: malformed" in out["backend"]["error"]


# ---- text from servers ---------------------------------------------------------------------------

def _utf8(value) -> None:
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate


@pytest.mark.parametrize("backend", ["openai", "tgi"])
def test_lone_surrogates_from_a_server_are_replaced_before_they_are_kept(backend):
    with HostileServer("surrogate") as url:
        out = drive(url, backend=backend)
    assert out["backend"]["status"] == "ok", out["backend"]["error"]
    _utf8(out)
    versions = out["backend"]["versions"]
    assert "\ufffd" in (versions["server"] if backend == "openai" else versions["tgi"])
    assert [r["finish_reason"] for r in out["records"]] == ["length\ufffd"] * 2
    assert kinds(out) == [None, None]


def test_a_surrogate_in_an_error_body_is_replaced():
    with HostileServer("surrogate", healthy_first=1, error_too=True) as url:
        out = drive(url)
    assert kinds(out) == ["server_error", "server_error"]
    _utf8(out)
    assert "\\ud800 \ufffd" in out["records"][0]["error"]


# ---- TGI -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, spec, kind", [
    ("endless", {}, "overrun"),
    ("extra", {"ids": 24}, "overrun"),
    ("ids_usage", {"usage_raw": "1" + "0" * 400}, "malformed"),
    ("ids_usage", {"usage_raw": "true"}, "malformed"),
    ("gzip_bomb", {}, "server_error"),
])
def test_tgi_reads_hostile_streams_within_bounds(mode, spec, kind):
    with HostileServer(mode, healthy_first=1, **spec) as url:
        out = drive(url, backend="tgi")
    assert kinds(out) == [kind, kind]


def test_tgi_ids_and_generated_tokens_disagreeing_are_flagged():
    with HostileServer("ids_usage", healthy_first=1, ids=8, usage_raw="3") as url:
        out = drive(url, backend="tgi")
    for r in records(out):
        assert r.error is None and r.count_disputed and not r.length_ok
        assert r.count_check["ids"] == 8 and r.count_check["generated_tokens"] == 3


# ---- redirects -----------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [307, 308])
def test_a_redirect_is_not_followed_and_the_probe_says_what_to_do(status):
    with HostileServer("ok") as target, HostileServer("redirect", status=status, target=target) as url:
        out = drive(url)
    error = out["backend"]["error"]
    assert out["backend"]["status"] == "failed"
    assert f"HTTP {status} redirect to {target}/v1/models" in error
    assert "point -o url at the target" in error and "follow_redirects=true" in error


def test_a_redirect_mid_run_is_a_redirect_failure_naming_its_target():
    with HostileServer("ok") as target, HostileServer("redirect", healthy_first=1, target=target) as url:
        out = drive(url)
    assert kinds(out) == ["redirect", "redirect"]
    assert f"redirect to {target}/v1/completions" in out["records"][0]["error"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_follow_redirects_follows_without_credentials(host):
    server = HostileServer("ok")
    with server as target, HostileServer("redirect", status=308,
                                         target=target.replace("127.0.0.1", host)) as url:
        out = drive(url, options={"follow_redirects": True})
    assert out["backend"]["status"] == "ok" and kinds(out) == [None, None]
    assert len(server.requests) == 3  # the probe and two requests, all answered by the target


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_follow_redirects_never_takes_credentials_to_another_host(host, monkeypatch):
    password = "pw-never-forwarded-3141"
    server = HostileServer("ok")
    with server as target, HostileServer("redirect", status=307,
                                         target=target.replace("127.0.0.1", host)) as url:
        authed = url.replace("http://", f"http://alice:{password}@")
        out = drive(authed, options={"follow_redirects": True})
    assert out["backend"]["status"] == "failed"
    assert "another host: not followed while credentials are sent" in out["backend"]["error"]
    assert server.requests == []  # nothing, so no credential, reached the other host
    assert password not in json.dumps(out) and password not in out["stderr"]


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown():
    password = "pw-basic-2718281828"
    server = HostileServer("ok")
    with server as url:
        out = drive(url.replace("http://", f"http://bob:{password}@"))
    assert out["backend"]["status"] == "ok" and kinds(out) == [None, None]
    expected = "Basic " + base64.b64encode(f"bob:{password}".encode()).decode()
    assert all(r["headers"].get("Authorization") == expected for r in server.requests)
    assert all("@" not in r["headers"].get("Host", "") for r in server.requests)
    assert password not in json.dumps(out) and password not in out["stderr"]
    assert out["backend"]["options"]["url"].startswith("http://***@127.0.0.1:")


# ---- secrets a server echoes ---------------------------------------------------------------------

PASSWORD = "pw-url-secret-1618033"
EXTRA_KEY = "sk-extra-body-secret-662607"
API_KEY = "sk-env-secret-602214"


def _secrets_shown(text: str) -> list[str]:
    basic = base64.b64encode(f"carol:{PASSWORD}".encode()).decode()
    return [s for s in (PASSWORD, EXTRA_KEY, API_KEY, basic) if s in text]


def test_an_echoing_server_quotes_no_secret_into_the_records(monkeypatch):
    with HostileServer("echo", healthy_first=1, status=400) as url:
        authed = url.replace("http://", f"http://carol:{PASSWORD}@")
        out = drive(authed, options={"extra_body": json.dumps({"api_key": EXTRA_KEY, "user": "x"})})
    assert kinds(out) == ["client_error", "client_error"]
    assert "refused. Authorization: " in out["records"][0]["error"]  # the echo is kept, its secrets are not
    assert _secrets_shown(json.dumps(out)) == [] and _secrets_shown(out["stderr"]) == []


@pytest.mark.parametrize("credential", ["url", "api_key_env"])
def test_an_echoing_server_during_the_probe_quotes_no_secret_into_the_error(credential, monkeypatch):
    monkeypatch.setenv("HOSTILE_TEST_KEY", API_KEY)
    with HostileServer("echo", status=500) as url:
        if credential == "url":
            url, options = url.replace("http://", f"http://carol:{PASSWORD}@"), {}
        else:
            options = {"api_key_env": "HOSTILE_TEST_KEY"}
        out = drive(url, options={"extra_body": json.dumps({"api_key": EXTRA_KEY}), **options})
    assert out["backend"]["status"] == "failed" and "refused. Authorization" in out["backend"]["error"]
    assert _secrets_shown(json.dumps(out)) == [] and _secrets_shown(out["stderr"]) == []


def test_credentials_in_the_url_and_an_api_key_together_are_refused(monkeypatch):
    monkeypatch.setenv("HOSTILE_TEST_KEY", API_KEY)
    with HostileServer("ok") as url:
        out = drive(url.replace("http://", f"http://carol:{PASSWORD}@"), options={"api_key_env": "HOSTILE_TEST_KEY"})
    assert "both would be the Authorization header" in out["backend"]["error"]
    assert _secrets_shown(json.dumps(out)) == []


# ---- the CLI -------------------------------------------------------------------------------------

def cli(args: list[str], run_dir: Path, timeout: float = 300) -> tuple[int, str, float]:
    """``python -m llmcompare load ...`` under a wrapper that reports the peak RSS (MB) of the
    largest of its descendants (the CLI and its worker): exit status, output, peak."""
    wrapper = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:])\n"
               "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
               "sys.exit(r.returncode)\n")
    cmd = [PYTHON, "-c", wrapper, PYTHON, "-m", "llmcompare", "load", "-b", "openai", "-c", "1", "--requests", "2",
           "-n", str(N), "-O", str(run_dir), "-q", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=run_dir.parent)
    output = proc.stdout + proc.stderr
    peak = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB"))
    return proc.returncode, output, peak / 1024


@pytest.fixture(scope="module")
def healthy_cli_peak(tmp_path_factory) -> float:
    """The peak RSS of the same CLI run against a server that behaves: the reference of the CLI bounds."""
    _needs_model()
    with HostileServer("ok") as url:
        status, output, peak = cli(["-o", f"url={url}/v1"], tmp_path_factory.mktemp("healthy") / "run")
    assert status == 0, output
    return peak


def _needs_model():
    from conftest import has_default_model

    if not has_default_model():
        pytest.skip("default model (llmcompare[default-model]) not installed: the CLI tokenizes with it")


def test_cli_against_a_stream_that_ignores_max_tokens(tmp_path, healthy_cli_peak):
    with HostileServer("endless", healthy_first=2) as url:  # the probe and the warm-up are healthy
        status, output, peak = cli(["-o", f"url={url}/v1"], tmp_path / "run")
    assert status == 1, output  # every measured request failed
    assert peak < healthy_cli_peak + CLI_HEADROOM_MB, f"peak RSS {peak:.0f} MB, healthy {healthy_cli_peak:.0f} MB"
    from llmcompare.records import read_records

    recs = [r for r in read_records(tmp_path / "run" / "requests.jsonl").requests if not r.warmup]
    assert [r.error_kind for r in recs] == ["overrun", "overrun"]
    assert (tmp_path / "run" / "requests.jsonl").stat().st_size < 200_000  # once 105 MB


def test_cli_against_a_gzip_bomb_error(tmp_path, healthy_cli_peak):
    with HostileServer("gzip_bomb", healthy_first=2) as url:
        status, output, peak = cli(["-o", f"url={url}/v1"], tmp_path / "run")
    assert status == 1, output
    assert peak < healthy_cli_peak + CLI_HEADROOM_MB, f"peak RSS {peak:.0f} MB, healthy {healthy_cli_peak:.0f} MB"
    assert "server_error" in (tmp_path / "run" / "requests.jsonl").read_text()


CORE_FILES = {
    "run.json": "the run header: the spec's options, credentials redacted (BackendRequest.to_dict)",
    "requests.jsonl:run": "the same header, the first record of requests.jsonl",
    "results.json": "RunResult.to_dict carries spec.to_dict()",
}
"""The files the core writes from the spec (not the request path). Options holding credentials are
written redacted and listed as ``withheld``; the worker gets their values through an environment
variable its parent sets for it alone (``llmcompare.runner.job.SECRETS_ENV``)."""


def _scan(run_dir: Path) -> dict[str, list[str]]:
    """Every file of the run (``requests.jsonl`` by record type) that shows a secret, and which."""
    leaks: dict[str, list[str]] = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        name = str(path.relative_to(run_dir))
        text = path.read_text("utf-8", "replace")
        parts = {name: text}
        if name == "requests.jsonl":
            parts = {}
            for line in text.splitlines():
                kind = json.loads(line).get("type", "?") if line.strip() else "?"
                parts[f"{name}:{kind}"] = parts.get(f"{name}:{kind}", "") + line
        for part, content in parts.items():
            if shown := _secrets_shown(content):
                leaks[part] = shown
    return leaks


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory):
    """One CLI run against an echoing server with a password in the URL and a key in extra_body."""
    _needs_model()
    run_dir = tmp_path_factory.mktemp("secrets") / "run"
    with HostileServer("echo", healthy_first=2, status=400) as url:
        authed = url.replace("http://", f"http://carol:{PASSWORD}@")
        status, output, _ = cli(["-o", f"url={authed}/v1", "-o", "extra_body=" + json.dumps({"api_key": EXTRA_KEY})],
                                run_dir)
    return status, output, _scan(run_dir), run_dir


def test_cli_secret_run_fails_its_requests_by_kind(secret_run):
    status, output, _, run_dir = secret_run
    assert status == 1, output
    assert "client_error" in (run_dir / "requests.jsonl").read_text()


def test_cli_output_shows_no_secret(secret_run):
    _, output, _, _ = secret_run
    assert _secrets_shown(output) == []


def test_cli_files_written_by_the_request_path_show_no_secret(secret_run):
    _, _, leaks, _ = secret_run
    ours = {path: shown for path, shown in leaks.items() if path not in CORE_FILES}
    assert ours == {}
    assert (run_dir := secret_run[3] / "requests.jsonl").exists() and "client_error" in run_dir.read_text()


@pytest.mark.parametrize("name", sorted(CORE_FILES))
def test_cli_files_written_by_the_core_show_no_secret(secret_run, name):
    _, _, leaks, run_dir = secret_run
    assert name not in leaks, leaks
    assert name.split(":")[0] in {p.name for p in run_dir.iterdir()}  # written, and clean


def test_cli_resume_takes_the_credentials_again_and_writes_none(tmp_path):
    """The worker of a resumed run gets the credentials given again with ``--resume -o``, never from disk."""
    _needs_model()
    run_dir = tmp_path / "run"
    body = json.dumps({"api_key": EXTRA_KEY})
    server = HostileServer("ok")
    with server as url:
        authed = url.replace("http://", f"http://carol:{PASSWORD}@") + "/v1"
        status, output, _ = cli(["-o", f"url={authed}", "-o", f"extra_body={body}"], run_dir)
        assert status == 0, output
        lines = (run_dir / "requests.jsonl").read_text().splitlines()
        (run_dir / "requests.jsonl").write_text(lines[0] + "\n")  # back to the header: the backend runs again
        before = len(server.requests)

        def resume(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([PYTHON, "-m", "llmcompare", "--resume", str(run_dir), "-q", *args],
                                  capture_output=True, text=True, timeout=300, cwd=tmp_path)

        missing = resume()
        extra = resume("-o", f"url={authed}", "-o", f"extra_body={body}", "-o", "model=other")
        assert len(server.requests) == before  # neither started a worker
        again = resume("-o", f"url={authed}", "-o", f"extra_body={body}")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "held credentials, which are never written" in missing.stderr
    assert f"--resume {run_dir} -o openai.extra_body=... -o openai.url=..." in missing.stderr
    assert extra.returncode == 2 and "drop -o model" in extra.stderr, extra.stderr
    assert again.returncode == 0, again.stderr
    expected = "Basic " + base64.b64encode(f"carol:{PASSWORD}".encode()).decode()
    resumed = server.requests[before:]
    assert resumed and all(r["headers"].get("Authorization") == expected for r in resumed)
    assert all(r["body"].get("api_key") == EXTRA_KEY for r in resumed)
    assert _scan(run_dir) == {}
    assert [_secrets_shown(p.stdout + p.stderr) for p in (missing, extra, again)] == [[], [], []]


if __name__ == "__main__":
    if sys.argv[1:2] == ["drive"]:
        print(json.dumps(_drive(json.loads(sys.argv[2]))))
