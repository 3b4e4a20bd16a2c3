"""Careless input and hostile text in the core: what a user, a file or a server hands llmcompare
that once ended in a traceback, a MemoryError, a hang, a leaked secret or a result that was not one.

The first part (the fast tier) checks each bound and each conversion on its own, and the CLI's
up-front refusals (one line, exit status 2, no run directory). The second part (the engine tier)
runs whole CLI load runs against ``tests/hostile_server.py`` (127.0.0.1 only) and reads every file
they wrote.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import needs_model
from hostile_server import HostileServer

from llmcompare import limits
from llmcompare.errors import ConfigError, OptionError, OutputError, PromptFileError, UserError

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path, timeout: float = 300, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "llmcompare", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, preexec_fn=preexec, env={**os.environ, "PYTHONPATH": str(ROOT)})


def assert_one_line_error(proc: subprocess.CompletedProcess, status: int, *words: str) -> str:
    """Exit ``status`` with exactly one line on stderr, ``llmcompare: error: ...`` holding ``words``."""
    err = proc.stderr.strip()
    assert proc.returncode == status, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1, proc.stderr
    assert err.startswith("llmcompare: error: "), err
    for w in words:
        assert w in err, (w, err)
    return err


# ---- 6. arguments: NaN, infinities, negative or zero, invalid JSON -------------------------------

@pytest.mark.parametrize("args, flag", [
    (["load", "-b", "echo", "-c", "1", "--requests", "2", "--request-timeout", "-1"], "--request-timeout"),
    (["load", "-b", "echo", "-c", "1", "--requests", "2", "--request-timeout", "nan"], "--request-timeout"),
    (["load", "-b", "echo", "-c", "1", "--requests", "2", "--request-timeout", "0"], "--request-timeout"),
    (["load", "-b", "echo", "-c", "1", "--requests", "2", "--timeout", "nan"], "--timeout"),
    (["run", "-b", "echo", "--timeout", "-5"], "--timeout"),
    (["load", "-b", "echo", "-c", "1", "--duration", "inf"], "--duration"),
    (["load", "-b", "echo", "-c", "1", "--duration", "0"], "--duration"),
    (["load", "-b", "openai", "-o", "url=http://127.0.0.1:9/v1", "-o", "first_token_timeout_s=nan", "-c", "1",
      "--requests", "1"], "first_token_timeout_s"),
    (["load", "-b", "openai", "-o", "url=http://127.0.0.1:9/v1", "-o", "total_timeout_s=inf", "-c", "1",
      "--requests", "1"], "total_timeout_s"),
    (["load", "-b", "openai", "-o", "url=http://127.0.0.1:9/v1", "-o", 'extra_body={"api_key": "sk-x",', "-c", "1",
      "--requests", "1"], "extra_body"),
    (["load", "-b", "openai", "-o", "url=http://127.0.0.1:9/v1", "-o", "extra_body=[1, 2]", "-c", "1",
      "--requests", "1"], "extra_body"),
    (["load", "-b", "echo", "--rate", "1e9", "--duration", "1"], "--rate × --duration"),
    (["load", "-b", "echo", "-c", "1", "--requests", "100000000"], "--requests"),
])
def test_bad_arguments_are_refused_up_front_naming_the_flag(args, flag, tmp_path):
    proc = cli(*args, "-O", str(tmp_path / "run"), "-q", cwd=tmp_path)
    err = assert_one_line_error(proc, 2, flag)
    assert "sk-x" not in err  # an invalid extra_body is not quoted: it may hold a key
    assert not (tmp_path / "run").exists()


def test_option_values_must_be_finite_and_json_objects_are_checked_when_given():
    from llmcompare.backend import OptionSpec

    spec = OptionSpec(float, 1.0)
    for raw in ("nan", "inf", "-inf", float("nan")):
        with pytest.raises(OptionError, match="finite"):
            spec.convert("b", "t", raw)
    assert spec.convert("b", "t", "0") == 0.0
    body = OptionSpec(str, None, format="json-object")
    assert body.convert("b", "extra_body", '{"a": 1}') == '{"a": 1}'
    for raw, why in (('{"api_key": "sk-secret"', "not valid JSON (line 1, column"), ("[1]", "must be a JSON object")):
        with pytest.raises(OptionError, match=r"extra_body") as info:
            body.convert("b", "extra_body", raw)
        assert why in str(info.value) and "sk-secret" not in str(info.value)


def test_the_requests_of_one_level_are_bounded():
    from llmcompare.scenarios.loadgen import LoadConfig

    most = limits.MAX_LEVEL_REQUESTS
    LoadConfig(rates=(most / 10,), duration_s=10)  # exactly the bound: fine
    for kwargs, field in (({"rates": (1e9,), "duration_s": 1}, "{rates} × {duration_s}"),
                          ({"rates": (1.0,), "requests": most + 1}, "{requests}"),
                          ({"concurrency": (1,), "requests": 1, "warmup_requests": most + 1}, "{warmup_requests}"),
                          ({"concurrency": (most + 1,), "requests": 1}, "{concurrency}")):
        with pytest.raises(ConfigError) as info:
            LoadConfig(**kwargs)
        assert info.value.template.startswith(field) and "llmcompare/limits.py" in info.value.template


# ---- 5. OS errors: files, directories, disks -------------------------------------------------------

def test_prompt_files_that_are_not_regular_files_or_too_large_are_refused(tmp_path, monkeypatch):
    from llmcompare.models import prompting

    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    big = tmp_path / "big.txt"
    big.write_text("a prompt\n" * 100)
    for path, why in (("/dev/zero", "is a device"), (str(fifo), "is a FIFO"), (str(tmp_path), "is a directory")):
        with pytest.raises(PromptFileError, match=why):
            prompting.read_prompts(path)
    monkeypatch.setattr(prompting, "MAX_PROMPT_FILE_BYTES", 100)
    with pytest.raises(PromptFileError, match="more than the"):
        prompting.read_prompts(str(big))


@pytest.mark.parametrize("prompts, why", [("/dev/zero", "is a device"), ("FIFO", "is a FIFO")])
def test_cli_refuses_a_device_or_a_fifo_as_prompts_without_hanging(prompts, why, tmp_path):
    if prompts == "FIFO":
        prompts = str(tmp_path / "prompts.txt")
        os.mkfifo(prompts)
    proc = cli("load", "-b", "echo", "-c", "1", "--requests", "1", "-p", prompts, "-O", str(tmp_path / "run"), "-q",
               cwd=tmp_path, timeout=120)  # once a MemoryError (/dev/zero) and a hang (a FIFO)
    assert_one_line_error(proc, 2, why)
    assert not (tmp_path / "run" / "requests.jsonl").exists()


@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_cli_refuses_an_output_that_cannot_be_a_run_directory(where, tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("precious\n")
    output = {"file": target, "under-file": target / "run", "proc": Path("/proc/llmcompare-run")}[where]
    proc = cli("load", "-b", "echo", "-c", "1", "--requests", "1", "-O", str(output), "-q", cwd=tmp_path)
    assert_one_line_error(proc, 2, str(output))
    assert target.read_text() == "precious\n"


def test_a_record_write_the_disk_refuses_is_one_line_naming_the_file(tmp_path, monkeypatch):
    from llmcompare.records import RecordWriter

    path = tmp_path / "run" / "requests.jsonl"
    with RecordWriter(path) as w:
        w.write({"type": "run", "n": 1})
        real = w._fh.write

        def full(text: str) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(w._fh, "write", full)
        with pytest.raises(OutputError) as info:
            w.write({"type": "request"})
        monkeypatch.setattr(w._fh, "write", real)
    message = str(info.value)
    assert info.value.exit_code == 1 and isinstance(info.value, UserError)
    assert str(path) in message and "No space left on device" in message and "free some space" in message
    assert f"--resume {path.parent}" in message and "\n" not in message
    assert path.read_text() == '{"type":"run","n":1}\n'  # what was written before stays


def test_report_writers_turn_a_full_disk_into_one_line(tmp_path, monkeypatch):
    from llmcompare.analysis.result import RunResult
    from llmcompare.config.spec import BackendRequest, RunSpec
    from llmcompare.records.rundir import RunDir
    from llmcompare.report import base
    from llmcompare.scenarios.loadgen import LoadConfig

    spec = RunSpec((BackendRequest("b", "echo", None, {}),), (LoadConfig(concurrency=(1,), requests=1),))
    result = RunResult(RunDir(tmp_path), spec, {}, [], [])

    class Full:
        def write(self, result, out, sections):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "results.json"))

    registry = base.get_registry()
    monkeypatch.setattr(registry, "report", lambda name: Full())
    monkeypatch.setattr(base, "result_sections", lambda result: [])
    with pytest.raises(OutputError) as info:
        base.write_all(result, ["json"])
    assert info.value.exit_code == 1
    assert f"cannot write {tmp_path / 'results.json'}: No space left on device; free some space" in str(info.value)
    assert f"llmcompare report {tmp_path}" in str(info.value)


def test_an_unreadable_line_of_requests_jsonl_is_skipped_and_counted(tmp_path):
    from llmcompare.records import read_records

    path = tmp_path / "requests.jsonl"
    good = {"type": "stage", "backend": "b", "stage": "load:c=1", "session": "s", "started_at": 1.0, "wall_s": 1.0}
    path.write_bytes(b"\n".join([json.dumps(good).encode(), b"\xff\xfe not utf-8", b"[1, 2, 3]", b"{cut short",
                                 b'{"type": "request"}', b'"a string"', json.dumps(good).encode()]) + b"\n")
    records = read_records(path)
    assert len(records.stages) == 2
    whys = sorted(why for _, why in records.skipped)
    assert whys == ["JSON but not an object", "JSON but not an object", "not JSON", "not UTF-8",
                    "not a valid request record"]
    line = records.skipped_summary()
    assert line.startswith("5 line(s) of requests.jsonl left out as unreadable") and "line 2" in line


# ---- 2. text from servers ------------------------------------------------------------------------

def test_sanitize_makes_text_safe_for_each_destination():
    from llmcompare import sanitize

    assert sanitize.utf8("a\ud800b") == "a\ufffdb" and sanitize.utf8("\ud83d\ude00") == "\U0001f600"
    assert sanitize.clean({"k\udc80": ["\ud800", 1, {"x": "ok"}]}) == {"k\ufffd": ["\ufffd", 1, {"x": "ok"}]}
    hostile = "red\x1b[31m\x9b2J\x07 <script>alert(1)</script>\nnext"
    assert sanitize.escape_controls(hostile) == "red\\x1b[31m\\x9b2J\\x07 <script>alert(1)</script>\nnext"
    assert sanitize.strip_controls(hostile) == "red[31m2J <script>alert(1)</script>\nnext"
    assert sanitize.md_text(hostile) == "red\\x1b[31m\\x9b2J\\x07 &lt;script&gt;alert(1)&lt;/script&gt; next"
    path_text = "\ud800 ok"
    with pytest.raises(UnicodeEncodeError):
        path_text.encode("utf-8")
    assert path_text.encode("utf-8", sanitize.REPLACE) == "\ufffd ok".encode()


def test_records_are_written_as_valid_utf8_and_read_back_clean(tmp_path):
    from llmcompare.records import RecordWriter, read_records

    path = tmp_path / "requests.jsonl"
    with RecordWriter(path) as w:
        w.write({"type": "backend", "backend": "b", "name": "b", "variant": None, "status": "failed",
                 "error": "broken \ud800 here", "versions": {"server\udfff": "1.0-\udc80"}})
        w.write_line('{"type":"stage","backend":"b","stage":"load:c=1","session":"\\ud800","started_at":1,"wall_s":1}')
    text = path.read_bytes().decode("utf-8")
    assert "\\ud800" not in text.lower() and "\\udc80" not in text.lower() and "\\udfff" not in text.lower()
    path.write_text(path.read_text() + '{"type":"stage","backend":"b","stage":"x","session":"\\ud800","started_at":1,'
                                       '"wall_s":1}\n')
    records = read_records(path)
    assert records.backends[0].error == "broken \ufffd here" and records.backends[0].versions == {"server\ufffd": "1.0-\ufffd"}
    assert [s.session for s in records.stages] == ["\ufffd", "\ufffd"]


# ---- 1. secrets: the spec writes none ------------------------------------------------------------

def test_a_backend_request_writes_its_credentials_redacted_and_takes_them_back():
    from llmcompare.config.spec import BackendRequest

    options = {"url": "http://carol:pw-1618@127.0.0.1:5/v1", "extra_body": json.dumps({"api_key": "sk-2718", "user": "u"}),
               "api_key_env": "MY_KEY", "model": "m"}
    r = BackendRequest("openai", "openai", None, options)
    d = r.to_dict()
    assert "pw-1618" not in json.dumps(d) and "sk-2718" not in json.dumps(d)
    assert d["options"]["url"] == "http://***@127.0.0.1:5/v1" and d["options"]["api_key_env"] == "MY_KEY"
    assert d["withheld"] == ["extra_body", "url"]
    back = BackendRequest.from_dict(d)
    assert back.withheld == ("extra_body", "url") and back.to_dict() == d
    full = back.with_secrets(r.secret_options())
    assert full == r and full.withheld == ()
    plain = BackendRequest("echo", "echo", None, {"ttft_ms": 1.0})
    assert plain.to_dict() == {"label": "echo", "name": "echo", "variant": None, "options": {"ttft_ms": 1.0}}


def test_the_worker_takes_its_secrets_from_the_environment_and_removes_them(monkeypatch):
    from llmcompare.config.spec import BackendRequest
    from llmcompare.runner.job import SECRETS_ENV, secrets_env, take_secrets

    r = BackendRequest("o", "openai", None, {"url": "http://u:pw-3141@h/v1", "model": "m"})
    env = secrets_env("o", r)
    assert json.loads(env[SECRETS_ENV]) == {"o": {"url": "http://u:pw-3141@h/v1"}}
    assert secrets_env("e", BackendRequest("e", "echo", None, {"ttft_ms": 1.0})) == {}
    monkeypatch.setenv(SECRETS_ENV, env[SECRETS_ENV])
    assert take_secrets("o") == {"url": "http://u:pw-3141@h/v1"}
    assert SECRETS_ENV not in os.environ and take_secrets("o") == {}


def test_resume_takes_again_exactly_the_options_that_held_credentials():
    from llmcompare.config.spec import BackendRequest, RunSpec, resume_secrets
    from llmcompare.plugins import get_registry
    from llmcompare.scenarios.loadgen import LoadConfig

    url, body = "http://carol:pw-1618@127.0.0.1:5/v1", json.dumps({"api_key": "sk-2718"})
    written = BackendRequest.from_dict(BackendRequest("openai", "openai", None, {"url": url, "extra_body": body}).to_dict())
    spec = RunSpec((written,), (LoadConfig(concurrency=(1,), requests=1),))
    registry = get_registry()
    assert resume_secrets(registry, spec, [f"url={url}", f"openai.extra_body={body}"], "D") == {
        "openai": {"url": url, "extra_body": body}}
    for given, words in (([], ["extra_body, url of openai", "--resume D -o openai.extra_body=... -o openai.url=..."]),
                         ([f"url={url}"], ["extra_body of openai", "-o openai.extra_body=..."]),
                         ([f"url={url}", f"extra_body={body}", "model=m"], ["takes -o only", "drop -o model"]),
                         ([url.replace(":5/", ":6/"), f"extra_body={body}"], ["must look like KEY=VALUE"]),
                         ([f"url={url.replace(':5/', ':6/')}", f"extra_body={body}"], ["not the url this run used"])):
        with pytest.raises(OptionError) as info:
            resume_secrets(registry, spec, given, "D")
        assert all(w in str(info.value) for w in words), str(info.value)
        assert "pw-1618" not in str(info.value) and "sk-2718" not in str(info.value)
    plain = RunSpec((BackendRequest("echo", "echo", None, {}),), spec.scenarios)
    with pytest.raises(OptionError, match="this run has none"):
        resume_secrets(registry, plain, ["ttft_ms=1"], "D")


# ---- 3. levels that mostly failed; open files ----------------------------------------------------

def _rec(pid: str, error: str | None = None, warmup: bool = False, check=None):
    from llmcompare.records import RequestRecord

    times = [0.1, 0.2]
    return RequestRecord(backend="b", prompt_id=pid, repeat=0, warmup=warmup, input_tokens=4, expected_output_tokens=2,
                         output_tokens=0 if error else 2, ttft_s=None if error else 0.1, e2e_s=None if error else 0.2,
                         token_times_s=[] if error else times, error=error, error_kind="connect" if error else None,
                         stage="load:c=2", session="s", request_id=f"s:{pid}", sent_at=100.0, scheduled_at=100.0,
                         count_check=check)


def test_a_level_whose_requests_or_warm_up_mostly_failed_is_marked_failed_and_no_answer():
    from llmcompare.analysis import levels
    from llmcompare.config.spec import BackendRequest, RunSpec
    from llmcompare.records import StageRecord
    from llmcompare.scenarios.loadgen import LoadConfig

    spec = RunSpec(backends=(BackendRequest("b", "openai", None, {}),),
                   scenarios=(LoadConfig(concurrency=(2,), requests=4),))
    stage = StageRecord(backend="b", stage="load:c=2", session="s", started_at=100.0, wall_s=1.0,
                        params={"concurrency": 2})
    ok = [_rec(f"m{i}") for i in range(4)]
    healthy = levels.level_of(spec, stage, ok + [_rec("w0", warmup=True), _rec("w1", "boom", warmup=True)])
    assert healthy.failed is None and healthy.warmup_requests == 2 and healthy.warmup_errors == 1  # half: not more
    cold = levels.level_of(spec, stage, ok + [_rec(f"w{i}", "[Errno 24] Too many open files", warmup=True)
                                              for i in range(2)])
    assert cold.failed.startswith("2 of its 2 warm-up requests failed (connect 2), more than the 50%")
    assert "Too many open files" in cold.failed and cold.errors == 0  # once: 0 errors and exit 0
    mostly = levels.level_of(spec, stage, [_rec("m0")] + [_rec(f"m{i}", "refused") for i in range(1, 4)])
    assert mostly.failed.startswith("3 of its 4 measured requests failed (connect 3)")
    answers = levels.analyse(spec, [cold])
    assert answers["backends"] == {} and answers["recommendations"]["best_throughput"] is None


def test_the_open_file_limit_is_raised_to_the_hard_limit_or_the_level_refused():
    code = ("import resource, json; from llmcompare import limits\n"
            "a = limits.ensure_open_files(limits.open_files_needed(1000))\n"
            "b = limits.ensure_open_files(limits.open_files_needed(100000))\n"
            "print(json.dumps([a, b, resource.getrlimit(resource.RLIMIT_NOFILE)]))")

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 4096))

    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, preexec_fn=low, cwd=ROOT, timeout=60)
    (fits, soft, hard), (fits_big, _, _), now = json.loads(proc.stdout)
    assert fits and soft >= 1256 and hard == 4096  # raised from 300
    assert not fits_big and now[0] == 4096  # 100,256 does not fit the hard limit


def test_cli_refuses_a_concurrency_beyond_the_open_file_limit(tmp_path):
    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))

    with HostileServer("ok") as url:
        proc = cli("load", "-b", "openai", "-o", f"url={url}/v1", "-c", "100000", "--requests", "1", "-n", "4",
                   "-O", str(tmp_path / "run"), "-q", cwd=tmp_path, preexec=low)
    assert_one_line_error(proc, 2, "--concurrency", "100,000 requests in flight", "open files", "hard limit 4,096")
    assert not (tmp_path / "run").exists()


# ---- 5. interrupted before the run directory exists ----------------------------------------------

def test_an_interrupt_before_the_run_directory_exists_suggests_no_resume(tmp_path, monkeypatch, capsys):
    from llmcompare import api
    from llmcompare.cli.main import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "resolve_model", interrupted)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        status = main(["load", "-b", "echo", "-c", "1", "--requests", "1", "-O", str(tmp_path / "run"), "-q"])
    finally:
        signal.signal(signal.SIGTERM, handler)  # main() makes SIGTERM interrupt, as the CLI does
    err = capsys.readouterr().err
    assert status == 130 and "nothing to resume" in err and "--resume" not in err
    assert not (tmp_path / "run").exists()


# ---- 7, 8. requests.csv: count checks, sessions, superseded rows ---------------------------------

def test_requests_csv_tells_superseded_rows_and_count_checks_apart():
    from llmcompare.records import StageRecord, count_check
    from llmcompare.report.csv_report import count_check_cell, superseded

    old = [_rec("a"), _rec("b")]
    for r in old:
        r.session, r.request_id = "first", f"first:{r.prompt_id}"
    new = [_rec("a"), _rec("b", check=count_check(ids=2, usage=1))]
    stage = StageRecord(backend="b", stage="load:c=2", session="s", started_at=1.0, wall_s=1.0)
    gone = superseded(old + new, [stage])
    assert gone == {id(r) for r in old}
    assert count_check_cell(new[1]) == "disagree: ids 2 != usage 1" and count_check_cell(new[0]) == ""
    from llmcompare.records import RequestRecord

    failed = RequestRecord("b", "p", 0, False, 4, 2, 0, None, None, error="x", stage="latency")
    retried = RequestRecord("b", "p", 0, False, 4, 2, 2, 0.1, 0.2, token_times_s=[0.1, 0.2], stage="latency")
    assert superseded([failed, retried], []) == {id(failed)}


# ---- the engine tier: whole CLI runs against hostile servers -------------------------------------

N = 4


def load_cli(url: str, run_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return cli("load", "-b", "openai", "-o", f"url={url}/v1", "-n", str(N), "-O", str(run_dir), "-q", *args,
               cwd=run_dir.parent, timeout=timeout)


def utf8_files(run_dir: Path, leave: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file of the run as text, each checked to be valid UTF-8 (plots and ``leave`` aside)."""
    return {str(p.relative_to(run_dir)): p.read_bytes().decode("utf-8") for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.suffix != ".png" and p.name != ".lock" and p.name not in leave}


HOSTILE_TEXT = "\x1b[2J\x1b]0;pwned\x07\x9b31m <script>alert(1)</script> [/bold] | **x**\n# heading"


@pytest.mark.engine
@needs_model
def test_text_a_server_sends_is_data_in_every_report(tmp_path):
    run_dir = tmp_path / "run"
    with HostileServer("ok", owned_by=HOSTILE_TEXT, fail_posts=(2, 3), error_text=HOSTILE_TEXT) as url:
        proc = load_cli(url, run_dir, "-c", "1", "--requests", "3", "--warmup", "1")
    assert proc.returncode == 1, proc.stderr  # the warm-up wave failed whole: the level is not a result
    files = utf8_files(run_dir)
    for name, text in files.items():
        if name.endswith((".csv", ".md", ".html")):
            assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text, name
    md, html, csv_text = files["summary.md"], files["report.html"], files["requests.csv"]
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "\n# heading" not in md
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\\x1b[2J" in csv_text and "\\x1b[2J" in md
    out = proc.stdout + proc.stderr
    assert "\x1b" not in out and "\x9b" not in out and "\x07" not in out
    flat = " ".join(out.split())
    assert "[/bold]" in flat  # markup in data is shown, not interpreted (nor a MarkupError)
    assert "load:c=1 failed: 1 of its 1 warm-up requests failed (server_error 1)" in flat


@pytest.mark.engine
@needs_model
@pytest.mark.parametrize("fail, why", [((2, 4), "2 of its 2 warm-up requests failed (server_error 2)"),
                                       ((4, 7), "3 of its 4 measured requests failed (server_error 3)")])
def test_a_level_that_mostly_failed_is_marked_in_every_report_and_exits_1(fail, why, tmp_path):
    run_dir = tmp_path / "run"
    with HostileServer("ok", fail_posts=fail) as url:  # POST 1 is the probe, 2-3 the warm-up, 4-7 measured
        proc = load_cli(url, run_dir, "-c", "2", "--requests", "4")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    files = utf8_files(run_dir)
    for name in ("summary.md", "report.html"):
        assert "load:c=2 failed: " + why in files[name], name
    assert "load:c=2 failed: " + why in " ".join(proc.stdout.split())
    level = json.loads(files["results.json"])["levels"][0]
    assert level["failed"].startswith(why) and "more than the 50%" in level["failed"]
    assert json.loads(files["results.json"])["analysis"]["recommendations"]["best_throughput"] is None
    import csv
    import io

    row = next(csv.DictReader(io.StringIO(files["levels.csv"])))
    assert row["failed"].startswith(why)
    assert row["warmup_errors"] == ("2" if fail == (2, 4) else "0")


@pytest.mark.engine
@needs_model
def test_count_disagreements_show_in_every_report_and_in_requests_csv(tmp_path):
    run_dir = tmp_path / "run"
    with HostileServer("ids_usage", healthy_first=1, ids=N, usage_raw="1") as url:
        proc = load_cli(url, run_dir, "-c", "1", "--requests", "2", "--warmup", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = utf8_files(run_dir)
    note = "load:c=1: 2 request(s) where the sources of the output count disagree"
    assert note in " ".join(proc.stdout.split())
    assert note in files["summary.md"] and note in files["report.html"]
    results = json.loads(files["results.json"])
    assert results["levels"][0]["count_disagreements"] == 2 and results["summaries"][0]["n_count_disagreements"] == 2
    assert results["levels"][0]["output_tokens"] == 2  # 1 verified token each: only those count
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(files["requests.csv"])))
    assert [r["count_check"] for r in rows] == [f"disagree: ids {N} != usage 1"] * 2


@pytest.fixture(scope="module")
def echo_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("echo") / "run"
    proc = cli("load", "-b", "echo", "-c", "1", "--requests", "2", "-n", "2", "-O", str(run_dir), "-q",
               cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr
    return run_dir


@pytest.mark.engine
@needs_model
def test_report_reads_surrogates_bad_lines_and_non_objects_and_writes_valid_utf8(echo_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(echo_run, run_dir)
    lines = (run_dir / "requests.jsonl").read_text().splitlines()
    for i, line in enumerate(lines):
        d = json.loads(line)
        if d["type"] == "request":
            d["finish_reason"] = "len\ud800"  # written by json.dumps as the escape "\ud800"
        elif d["type"] == "backend":
            d["versions"] = {**d["versions"], "server": "v\udfff\x1b[31m"}
        lines[i] = json.dumps(d)
    data = "\n".join(lines).encode() + b"\n\xff\xfe broken\n[1,2,3]\n"
    (run_dir / "requests.jsonl").write_bytes(data)
    for name in ("results.json", "summary.md", "report.html", "requests.csv", "levels.csv"):
        (run_dir / name).unlink()
    proc = cli("report", str(run_dir), cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "2 line(s) of requests.jsonl left out as unreadable: 1 not UTF-8 (line" in proc.stderr
    files = utf8_files(run_dir, leave=("requests.jsonl",))  # the one we broke on purpose
    assert "len\ufffd" in files["requests.csv"] and "v\ufffd\\x1b[31m" in files["summary.md"]
    assert "\\ud800" not in files["results.json"].lower()
    assert len(json.loads(files["results.json"])["unreadable_lines"]) == 2


def _report_as_nobody(run_dir: Path) -> tuple[int | None, str]:
    """``llmcompare report RUN_DIR`` without root's power to write anywhere: in a forked child that
    already imported everything the report needs, as ``nobody``. Returns its status and stderr."""
    import io
    import traceback

    from llmcompare.cli.main import main

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            sys.stderr = err = io.StringIO()
            sys.stdout = io.StringIO()
            result = [main(["report", str(run_dir)]), err.getvalue()]
        except BaseException:  # noqa: BLE001 - reported to the parent
            result = [None, traceback.format_exc()]
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    status, err = json.loads(b"".join(chunks) or b'[null, "no answer"]')
    return status, err


@pytest.mark.engine
@needs_model
def test_report_into_a_read_only_run_directory_is_one_line(echo_run):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="llmcompare-ro-"))
    base.chmod(0o755)  # nobody must reach it
    run_dir = base / "run"
    shutil.copytree(echo_run, run_dir)
    jsonl = (run_dir / "requests.jsonl").read_bytes()
    (run_dir / "summary.md").unlink()
    handler = signal.getsignal(signal.SIGTERM)
    for p in [run_dir, *run_dir.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        if os.geteuid() == 0:  # root writes anywhere: report as nobody (everything imported first, as root)
            from llmcompare.cli.main import main

            assert main(["report", str(echo_run)]) == 0
            status, err = _report_as_nobody(run_dir)
        else:
            proc = cli("report", str(run_dir), cwd=base)
            status, err = proc.returncode, proc.stderr
    finally:
        signal.signal(signal.SIGTERM, handler)
        for p in [run_dir, *run_dir.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    try:
        assert status == 1, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith("llmcompare: error: cannot write") and "make it writable" in err, err
        assert (run_dir / "requests.jsonl").read_bytes() == jsonl and not (run_dir / "summary.md").exists()
    finally:
        shutil.rmtree(base)


@pytest.mark.engine
@needs_model
def test_after_a_resume_requests_csv_tells_the_abandoned_attempt_apart(tmp_path):
    import csv

    run_dir = tmp_path / "run"
    args = ["load", "-b", "echo", "-o", "per_token_ms=40", "-c", "1", "--requests", "12", "-n", "4", "--warmup", "0",
            "-O", str(run_dir), "-q"]
    parent = subprocess.Popen([PYTHON, "-m", "llmcompare", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    requests = run_dir / "requests.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if requests.exists() and requests.read_text().count('"type":"request"') >= 3:
            break
        time.sleep(0.2)
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=120)
    assert parent.returncode == 130 and f"--resume {run_dir}" in err, err
    proc = cli("--resume", str(run_dir), "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((run_dir / "requests.csv").open()))
    sessions = list(dict.fromkeys(r["session"] for r in rows))
    assert len(sessions) == 2
    first, second = ([r for r in rows if r["session"] == s] for s in sessions)
    assert len(first) >= 3 and all(r["superseded"] == "True" for r in first)
    assert len(second) == 12 and all(r["superseded"] == "False" for r in second)
    level = json.loads((run_dir / "results.json").read_text())["levels"][0]
    assert level["requests"] == 12


def test_a_sweep_stops_before_a_rate_level_that_would_schedule_more_than_a_level_may(caplog):
    """The sweep's rates come from the server's own speed, so no flag bounds them: a server fast enough to
    make one rate level schedule more than MAX_LEVEL_REQUESTS ends the sweep before that level."""
    from types import SimpleNamespace

    from llmcompare.scenarios.load import LoadScenario
    from llmcompare.scenarios.loadgen import LoadConfig

    config = LoadConfig(sweep=True, sweep_levels=3, duration_s=100.0, max_new_tokens=4)
    ran = []

    def run_level(config, session, ctx, writer, level, index, server, gpu, sweep_stops=False):
        ran.append(level.stage)
        # synchronous: 10 requests/s; throughput: 10,000 requests/s (so rates of 2,507 to 7,502/s follow)
        n = 10 if index == 0 else 10_000
        return SimpleNamespace(achieved={"requests": n, "errors": 0}, wall_s=1.0)

    scenario = LoadScenario()
    scenario._run_level = run_level
    with caplog.at_level("WARNING", logger="llmcompare.scenarios.load"):
        scenario._sweep(config, None, None, None, None, None)
    # 2,507.5/s × 100 s is 250,750 requests, past the 200,000 bound: no rate level runs
    assert len(ran) == 2 and all(s.startswith("load:c=") for s in ran), ran
    assert f"{limits.MAX_LEVEL_REQUESTS}" in caplog.text and "lower --duration" in caplog.text
