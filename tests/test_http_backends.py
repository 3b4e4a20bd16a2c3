"""The HTTP backends (openai, tgi) against llmcompare's own mock server.

Each adapter's ``astream`` is driven directly inside ``asyncio.run``. The mock server echoes the
prompt's ids cyclically and gives token ``i`` the one-character text ``chr(32 + i % 95)``; the test
tokenizer below is byte-level, so text prompts, chat content and re-tokenized counts line up exactly
with the server's own byte counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest
from conftest import needs_model

from llmcompare.backend import BackendConfig, Generation, collect
from llmcompare.backends.openai_http import OpenAIBackend, PromptText, SSEParser, next_fix
from llmcompare.backends.tgi import TGIBackend
from llmcompare.errors import RequestFailed, UserError
from llmcompare.servers.mock import MockConfig, serve_in_thread, spawn

PROMPT = list(b"Hello, world")


class ByteTokenizer:
    """One id per UTF-8 byte; an optional chat template wraps a user turn in ``<u>…</u><a>``."""

    def __init__(self, chat: bool = False):
        self.chat_template = "<u>{content}</u><a>" if chat else None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": list(text.encode("utf-8"))}

    def decode(self, ids, **kwargs) -> str:
        return bytes(ids).decode("utf-8", "replace")

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tokenize: bool = False) -> str:
        return self.chat_template.format(content=messages[-1]["content"])


class ByteModel:
    """Stands in for ResolvedModel: all the HTTP backends ask of it is ``tokenizer()``."""

    def __init__(self, chat: bool = False):
        self.chat = chat

    def tokenizer(self, trust_remote_code: bool = False) -> ByteTokenizer:
        return ByteTokenizer(self.chat)


def expected(prompt: list[int], n: int) -> list[int]:
    return [prompt[i % len(prompt)] for i in range(n)]


@pytest.fixture
def server():
    """Start mock servers in threads; all are stopped at the end of the test."""
    handles = []

    def start(**config) -> str:
        handle = serve_in_thread(MockConfig(**config))
        handles.append(handle)
        return handle.url

    yield start
    for h in handles:
        h.stop()


def openai(url: str, chat_template: bool = False, **options) -> OpenAIBackend:
    backend = OpenAIBackend(BackendConfig(model=ByteModel(chat_template), options={"url": url + "/v1", **options}))
    backend.load()
    return backend


def tgi(url: str, **options) -> TGIBackend:
    backend = TGIBackend(BackendConfig(model=ByteModel(), options={"url": url, **options}))
    backend.load()
    return backend


def stream(backend, prompt=PROMPT, n: int = 7):
    """All chunks of one request, on a fresh event loop (the backend's session is closed after)."""

    async def go():
        try:
            return [c async for c in backend.astream(prompt, n)]
        finally:
            await backend.aclose()

    return asyncio.run(go())


def failure(backend, prompt=PROMPT, n: int = 7) -> RequestFailed:
    with pytest.raises(RequestFailed) as info:
        stream(backend, prompt, n)
    return info.value


def repoint(backend, url: str, root: bool = False):
    """Aim a loaded backend at another server (the probe in load() needs a healthy one)."""
    backend.http.base_url = url if root else url + "/v1"
    return backend


# ---- openai: ids, counts, chunks ----

def test_openai_returns_exact_ids_and_the_servers_counts(server):
    backend = openai(server())
    chunks = stream(backend, n=30)
    gen = collect(chunks)
    assert gen.token_ids == expected(PROMPT, 30)
    assert len(gen.token_times) == 30
    assert (gen.finish_reason, gen.prompt_tokens, gen.engine_output_tokens, gen.count_source) == (
        "length", len(PROMPT), 30, "ids")
    version = backend.engine_version()
    assert version["server"] == "llmcompare-mock" and version["count_source"] == "ids"
    assert version["prompt_format"] == "ids" and version["server_version"].startswith("llmcompare-mock")
    assert {"ignore_eos", "min_tokens", "cache_prompt", "return_token_ids"} <= set(version["fields"].split(","))
    assert backend.model == "llmcompare-mock"


def test_openai_tokens_of_one_chunk_share_its_arrival_time(server):
    backend = openai(server(tokens_per_chunk=3, itl_ms=40))
    chunks = [c for c in stream(backend, n=9) if c.count]
    gen = collect(chunks)
    assert gen.token_ids == expected(PROMPT, 9)
    assert len(chunks) >= 2 and all(c.count % 3 == 0 for c in chunks)
    times = [c.time for c in chunks]
    assert times == sorted(times) and len(set(times)) == len(times)
    # every token of a chunk carries the chunk's one time; no gaps are invented inside a chunk
    assert sorted(set(gen.token_times)) == times
    assert times[-1] - times[0] >= 0.04 * (len(chunks) - 1) * 0.9


def test_openai_usage_only_counts_come_from_the_server_and_are_flagged(server):
    backend = openai(server(token_ids=False, tokens_per_chunk=3))
    assert backend.engine_version()["count_source"] == "usage"
    gen = collect(stream(backend, n=10))
    assert gen.token_ids == [] and gen.count_source == "usage"
    assert gen.engine_output_tokens == 10 and gen.prompt_tokens == len(PROMPT)
    # 4 text events (3+3+3+1 tokens) count one each as they arrive; the 6 the server counted beyond
    # them arrive with the final chunk, so the times still number exactly the server's count
    assert len(gen.token_times) == 10


def test_openai_without_ids_or_usage_counts_a_length_finish_exactly(server):
    # no ids, no usage, but the server says it stopped at max_tokens: exactly N, and nothing is asked of
    # the server to count (log-probabilities cost llama-cpp-python half its speed)
    backend = openai(server(token_ids=False, usage=False))
    assert backend.engine_version()["count_source"] == "length"
    assert "logprobs" not in backend.engine_version()["fields"]
    gen = collect(stream(backend, n=11))
    assert gen.count_source == "length" and gen.engine_output_tokens is None
    assert len(gen.token_times) == 11 and gen.finish_reason == "length"


def test_openai_without_ids_usage_or_a_length_finish_retokenizes_and_flags_it(server):
    # a server that ignores the length-forcing fields and stops at EOS: only re-tokenizing can count
    backend = openai(server(token_ids=False, usage=False, eos_after=3, refuse_fields=("ignore_eos", "min_tokens")))
    assert backend.engine_version()["count_source"] == "retokenized"
    gen = collect(stream(backend, n=11))
    assert gen.count_source == "retokenized" and gen.finish_reason == "stop"
    assert len(gen.token_times) == 3  # one byte per token text: exact here, approximate in general


def test_openai_chat_mode_sends_the_user_turn_and_reports_the_servers_prompt_count(server):
    backend = openai(server(), chat_template=True, mode="chat")
    wrapped = list(b"<u>") + PROMPT + list(b"</u><a>")
    gen = collect(stream(backend, prompt=wrapped, n=6))
    assert backend.engine_version()["api"] == "openai/chat"
    assert backend.engine_version()["prompt_format"] == "messages"
    assert gen.prompt_tokens == len(PROMPT)  # the template's wrapping was cut off before sending
    assert gen.token_ids == expected(PROMPT, 6) and gen.finish_reason == "length"


def test_openai_auto_falls_back_to_text_when_the_server_refuses_ids(server):
    url = server(faults={"refuse_ids": 1.0})
    backend = openai(url)
    version = backend.engine_version()
    assert version["prompt_format"] == "text" and "add_special_tokens" in version["fields"]
    gen = collect(stream(backend, n=5))
    assert gen.token_ids == expected(PROMPT, 5)
    assert gen.prompt_tokens == len(PROMPT)  # the server's count of the decoded text matches ours
    with pytest.raises(UserError, match="refused the probe"):
        openai(url, prompt_format="ids")


def test_openai_probe_drops_fields_the_server_refuses(server):
    backend = openai(server(refuse_fields=("ignore_eos", "cache_prompt"), eos_after=3))
    version = backend.engine_version()
    assert version["fields_refused"] == "ignore_eos,cache_prompt"
    assert "ignore_eos" not in version["fields"].split(",") and "min_tokens" in version["fields"]
    gen = collect(stream(backend, n=8))
    assert len(gen.token_ids) == 8 and gen.finish_reason == "length"  # min_tokens still forced the length

    stops_early = openai(server(refuse_fields=("ignore_eos", "min_tokens"), eos_after=3))
    gen = collect(stream(stops_early, n=8))
    assert (len(gen.token_ids), gen.finish_reason) == (3, "stop")  # reported as it came, for the core to flag


def test_next_fix_reads_common_refusals():
    fields = ("return_tokens", "ignore_eos", "min_tokens")
    serde = "Failed to deserialize: unknown field `ignore_eos`, expected one of `model`, `prompt`, `min_tokens`"
    assert next_fix(serde, fields, "ids", "auto") == ("drop", ("ignore_eos",))
    transformers_serve = '{"detail":"Unexpected fields in the request: {\'min_tokens\', \'ignore_eos\'}"}'
    assert next_fix(transformers_serve, fields, "ids", "auto") == ("drop", ("ignore_eos", "min_tokens"))
    pydantic = '{"detail":[{"type":"extra_forbidden","loc":["body","min_tokens"],"msg":"Extra inputs"}]}'
    assert next_fix(pydantic, fields, "ids", "auto") == ("drop", ("min_tokens",))
    llama_cpp_python = "2 validation errors: {'type': 'string_type', 'loc': ('body', 'prompt', 'str')}"
    assert next_fix(llama_cpp_python, fields, "ids", "auto") == ("text", ())
    assert next_fix(llama_cpp_python, fields, "ids", "ids") == ("drop", ("return_tokens",))
    assert next_fix("bad request", (), "text", "auto") is None


# ---- openai: failures ----

def test_openai_connection_refused_is_connect(server):
    handle = serve_in_thread(MockConfig())
    backend = openai(handle.url)
    handle.stop()
    assert failure(backend).kind == "connect"


def test_openai_connect_timeout(server):
    backend = openai(server(), connect_timeout_s=0.3)
    with full_backlog() as url:
        t = time.perf_counter()
        assert failure(repoint(backend, url)).kind == "timeout_connect"
    assert time.perf_counter() - t < 5


def test_openai_first_token_and_total_timeouts(server):
    slow_start = server(ttft_ms=5000)
    slow_stream = server(itl_ms=100)
    backend = openai(server(), first_token_timeout_s=0.3, total_timeout_s=60)
    assert failure(repoint(backend, slow_start)).kind == "timeout_first_token"
    backend = openai(server(), first_token_timeout_s=5, total_timeout_s=0.5)
    assert failure(repoint(backend, slow_stream), n=20).kind == "timeout_total"


@pytest.mark.parametrize("fault,kind", [
    ("overload", "overload"),          # HTTP 429
    ("unavailable", "overload"),       # HTTP 503
    ("server_error", "server_error"),  # HTTP 500
    ("error_event", "overload"),       # a mid-stream error event saying "overloaded"
    ("stream_cut", "stream_cut"),      # the connection drops halfway
    ("early_end", "stream_cut"),       # the body ends properly, but before [DONE] and any finish_reason
    ("malformed", "malformed"),        # an event that is not JSON
])
def test_openai_maps_each_fault_to_its_kind(server, fault, kind):
    backend = repoint(openai(server()), server(faults={fault: 1.0}, itl_ms=5))
    exc = failure(backend, n=10)
    assert exc.kind == kind, str(exc)


def test_openai_server_dying_mid_stream_is_stream_cut_then_connect():
    with spawn(["--die-after", "2", "--itl-ms", "30"]) as proc:
        backend = openai(proc.url)  # the probe is request 1
        assert failure(backend, n=20).kind == "stream_cut"  # request 2 kills the server after its first chunk
        proc.proc.wait(timeout=10)
        assert proc.proc.returncode == 70
        assert failure(backend).kind == "connect"


def test_openai_api_key_comes_from_the_named_variable_and_is_never_shown(server, monkeypatch):
    key = "sk-test-7f3a9c1e5b"
    monkeypatch.setenv("LLMCOMPARE_TEST_KEY", key)
    url = server(api_key=key)
    backend = openai(url, api_key_env="LLMCOMPARE_TEST_KEY")
    gen = collect(stream(backend))
    assert gen.token_ids == expected(PROMPT, 7)
    shown = [repr(backend), str(vars(backend)), repr(backend.http), str(vars(backend.http)),
             str(backend.engine_version()), repr(backend.config), repr(dict(backend.config.options))]
    assert not any(key in s for s in shown)
    assert "LLMCOMPARE_TEST_KEY" in repr(dict(backend.config.options))  # the name is kept, the value is not

    with pytest.raises(UserError, match="failed the probe request: client_error"):
        openai(url)  # no key: 401
    monkeypatch.delenv("LLMCOMPARE_TEST_KEY")
    with pytest.raises(UserError, match="LLMCOMPARE_TEST_KEY"):
        openai(url, api_key_env="LLMCOMPARE_TEST_KEY")


# ---- tgi ----

def test_tgi_exact_ids_and_the_final_details_event(server):
    backend = tgi(server(tokens_per_chunk=3, itl_ms=30))
    chunks = stream(backend, n=10)
    gen = collect(chunks)
    assert gen.token_ids == expected(PROMPT, 10) and len(gen.token_times) == 10
    assert (gen.finish_reason, gen.prompt_tokens, gen.engine_output_tokens, gen.count_source) == (
        "length", len(PROMPT), 10, "ids")
    assert chunks[-1].finish_reason == "length" and chunks[-1].engine_output_tokens == 10
    assert len({c.time for c in chunks}) >= 2  # three events per write share one arrival time
    version = backend.engine_version()
    assert version["tgi"].startswith("llmcompare-mock") and version["server_device"] == "cpu"


def test_tgi_reports_an_early_eos_as_it_came(server):
    gen = collect(stream(tgi(server(eos_after=4)), n=10))
    assert (len(gen.token_ids), gen.finish_reason, gen.engine_output_tokens) == (4, "eos_token", 4)


@pytest.mark.parametrize("fault,kind", [
    ("overload", "overload"),        # 429 {"error_type": "overloaded"}
    ("server_error", "server_error"),
    ("error_event", "overload"),     # data:{"error": ..., "error_type": "overloaded"}
    ("stream_cut", "stream_cut"),    # the connection drops before the details event
    ("early_end", "stream_cut"),     # the body ends properly without the details event
    ("malformed", "malformed"),
])
def test_tgi_maps_faults(server, fault, kind):
    backend = repoint(tgi(server()), server(faults={fault: 1.0}, itl_ms=5), root=True)
    assert failure(backend, n=10).kind == kind


# ---- the mock server and the SSE parser ----

def test_mockserver_serial_queues_requests(server):
    backend = openai(server(serial=True, itl_ms=20))

    async def two():
        try:
            return await asyncio.gather(*[_collect(backend.astream(PROMPT, 5)) for _ in range(2)])
        finally:
            await backend.aclose()

    first, second = sorted(asyncio.run(two()), key=lambda g: g.token_times[0])
    assert len(first.token_ids) == len(second.token_ids) == 5
    assert second.token_times[0] >= first.token_times[-1]  # the second waited for the first to finish


def test_mockserver_stall_window_holds_every_stream(server):
    backend = openai(server(itl_ms=40, stall_at_s=0.6, stall_for_s=0.6))
    chunks = [c for c in stream(backend, n=40) if c.count]
    gaps = [b.time - a.time for a, b in zip(chunks, chunks[1:], strict=False)]
    assert sum(c.count for c in chunks) == 40
    assert max(gaps) >= 0.4  # nothing left during the stall; what fell due in it left together after


async def _collect(chunks) -> Generation:
    return collect([c async for c in chunks])


def test_mockserver_cli_prints_its_url_and_serves_every_route():
    import json
    import urllib.request

    with spawn(["--model", "m1"]) as proc:
        assert proc.url.startswith("http://127.0.0.1:")

        def post(path: str, body: dict) -> dict:
            req = urllib.request.Request(proc.url + path, json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())

        with urllib.request.urlopen(proc.url + "/health", timeout=10) as resp:
            assert resp.status == 200
        whole = post("/v1/completions", {"prompt": [5, 6], "max_tokens": 3, "return_token_ids": True})
        assert whole["choices"][0]["token_ids"] == [5, 6, 5] and whole["usage"]["completion_tokens"] == 3
        chat = post("/v1/chat/completions", {"messages": [{"role": "user", "content": "ab"}], "max_tokens": 2})
        assert chat["choices"][0]["message"]["content"] == chr(32 + 97 % 95) + chr(32 + 98 % 95)
        assert chat["model"] == "m1"
        generated = post("/generate", {"inputs": "ab", "parameters": {"max_new_tokens": 3, "details": True}})
        assert [t["id"] for t in generated["details"]["tokens"]] == [97, 98, 97]


def test_sse_parser_handles_splits_crlf_and_both_data_spellings():
    parser = SSEParser()
    assert parser.feed(b"data: {\"a\":1}\r") == []
    assert parser.feed(b"\n\r\ndata:{\"b\":2}\n\n: keep-alive\n\nevent: x\ndata: 1\ndata: 2\n\ndata: [DO") == [
        b'{"a":1}', b'{"b":2}', b"1\n2"]
    assert parser.feed(b"NE]\n\n") == [b"[DONE]"]
    assert parser.feed(b"data: tail") == [] and parser.flush() == [b"tail"]


def test_backends_register_as_http_clients():
    from llmcompare.backends import openai_http
    from llmcompare.backends import tgi as tgi_module

    specs = []
    openai_http.register_backends(specs.append)
    tgi_module.register_backends(specs.append)
    by_name = {s.name: s for s in specs}
    for name in ("openai", "tgi"):
        caps = by_name[name].capabilities
        assert caps.accepts_token_ids and caps.concurrent and not caps.in_process
        assert set(caps.model_formats) == {"gguf", "hf", "synthetic"} and "cuda" in caps.devices
    with pytest.raises(Exception, match="url"):
        OpenAIBackend(BackendConfig(model=ByteModel(), options={}))


class full_backlog:
    """A listening socket whose accept queue is full, so a new connection neither opens nor fails."""

    def __enter__(self) -> str:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            self.fillers.append(s)
        time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        for s in self.fillers:
            s.close()
        self.listener.close()


@needs_model
def test_prompt_text_round_trips_the_real_tokenizer():
    from llmcompare.models import resolve_model
    from llmcompare.models.prompting import Prompt, tokenize

    tokenizer = resolve_model(None).tokenizer()
    prompt = tokenize([Prompt("p", "What is the capital of France?")], tokenizer)[0]
    text = PromptText(tokenizer)
    assert text.count(text.text(prompt.token_ids)) == len(prompt.token_ids)  # what a text-only server counts
    assert text.chat_content(prompt.token_ids) == "What is the capital of France?"  # no double template


@pytest.mark.engine
@needs_model
def test_both_adapters_pass_the_conformance_kit_through_a_session(server, monkeypatch):
    from llmcompare import plugins
    from llmcompare.testing import check_backend

    if not {"openai", "tgi"} <= set(plugins.get_registry().backends):  # until they are default plugins
        monkeypatch.setenv("LLMCOMPARE_PLUGINS", "llmcompare.backends.openai_http,llmcompare.backends.tgi")
        plugins.get_registry(reload=True)
    try:
        url = server(tokens_per_chunk=2, itl_ms=2)
        for name, base in (("openai", url + "/v1"), ("tgi", url)):
            report = check_backend(name, options={"url": base})
            assert report.ok, str(report)
    finally:
        monkeypatch.undo()
        plugins.get_registry(reload=True)
