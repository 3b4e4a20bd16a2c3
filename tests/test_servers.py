"""Managed servers: the process manager (llmcompare/servers.py) against tiny real servers, a
ServedBackend on the mock server, the recipes' argv (backends/served.py), and three recipes live on
the default model (vllm-serve in vLLM's own environment, when it exists)."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from llmcompare.backend import BackendConfig
from llmcompare.backends import served
from llmcompare.errors import OptionError, UserError
from llmcompare.models import ResolvedModel
from llmcompare.servers import ManagedServer, Readiness, ServerFailed
from llmcompare.servers import managed as servers

# A server in a few lines, run with `python -c TINY HOST PORT MODE [MARKER]`. It prints its pid, then:
# serve (GET /health is 200), exit (status 3), hang (never listens), tree (spawn a child in its group
# and one in a new session, print their pids, serve), busy-once (the first start fails as if the port
# were taken; later starts serve).
TINY = r"""
import http.server, os, subprocess, sys, time
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print("pid", os.getpid(), flush=True)
if mode == "exit":
    print("error: no such model file", flush=True)
    sys.exit(3)
if mode == "hang":
    print("loading weights...", flush=True)
    time.sleep(600)
if mode == "busy-once" and not os.path.exists(sys.argv[4]):
    open(sys.argv[4], "w").close()
    print("OSError: [Errno 98] Address already in use", flush=True)
    sys.exit(1)
if mode == "tree":
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    child = subprocess.Popen(sleep)
    escaped = subprocess.Popen(sleep, start_new_session=True)
    print("children", child.pid, escaped.pid, flush=True)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

http.server.HTTPServer((host, port), Handler).serve_forever()
"""


def tiny(mode: str, *extra: str) -> list[str]:
    return [sys.executable, "-c", TINY, "{host}", "{port}", mode, *extra]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def logged_pids(path: Path) -> list[int]:
    pids = []
    for line in path.read_text().splitlines():
        if line.startswith(("pid ", "children ")):
            pids += [int(x) for x in line.split()[1:]]
    return pids


def get(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as resp:
        return resp.status


# ---- the process manager ----

def test_ready_by_route_on_loopback_then_stopped(tmp_path):
    server = ManagedServer("tiny", tiny("serve"), Readiness.get("/health"), log_dir=tmp_path)
    with server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert get(server.url + "/health") == 200
        assert server.listening() == {("127.0.0.1", server.port)}
        pids = server.pids()
        assert len(pids) == 2  # the guard and the server
        assert server.startup_s is not None and 0 < server.startup_s < 30
    assert wait_gone(pids) == []
    log = tmp_path / "tiny.server.log"
    assert f"starting {sys.executable} -c" in log.read_text()
    assert logged_pids(log)[0] in pids
    with pytest.raises(OSError):
        get(server.url + "/health")


def test_ready_by_first_completion_on_the_mock_server(tmp_path):
    argv = [sys.executable, "-m", "llmcompare.servers.mock", "--host", "{host}", "--port", "{port}"]
    ready = Readiness.post("/v1/completions", {"prompt": "hi", "max_tokens": 1, "temperature": 0})
    with ManagedServer("mock", argv, ready, log_dir=tmp_path) as server:
        assert server.listening() == {("127.0.0.1", server.port)}
        pids = server.pids()
    assert wait_gone(pids) == []


def test_a_server_that_never_gets_ready_fails_with_its_last_log_lines(tmp_path):
    server = ManagedServer("hang", tiny("hang"), Readiness.get("/health"), log_dir=tmp_path, startup_timeout_s=1.5)
    with pytest.raises(ServerFailed) as err:
        server.start()
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message
    assert "was not ready (GET /health answering 2xx) within 1.5 s" in message
    assert "loading weights..." in message and str(tmp_path / "hang.server.log") in message
    assert not server.running and wait_gone(logged_pids(tmp_path / "hang.server.log")) == []


def test_a_server_that_exits_at_start_fails_with_its_status_and_log(tmp_path):
    server = ManagedServer("bad", tiny("exit"), Readiness.get("/health"), log_dir=tmp_path)
    with pytest.raises(ServerFailed, match=r"exited with status 3 before it was ready; last log lines: .*"
                                           r"error: no such model file"):
        server.start()
    assert not server.running


def test_a_command_that_does_not_exist_fails_the_same_way(tmp_path):
    server = ManagedServer("missing", ["llmcompare-no-such-server", "--port", "{port}"], Readiness.get("/"),
                           log_dir=tmp_path)
    with pytest.raises(ServerFailed, match=r"exited with status 127 .*cannot start 'llmcompare-no-such-server'"):
        server.start()


def test_a_taken_port_is_retried_on_a_new_one(tmp_path):
    marker = tmp_path / "started-once"
    with ManagedServer("busy", tiny("busy-once", str(marker)), Readiness.get("/health"), log_dir=tmp_path) as server:
        assert get(server.url + "/health") == 200
    assert (tmp_path / "busy.server.log").read_text().count("# llmcompare ") == 2


def test_stop_kills_the_whole_tree_even_a_child_that_left_the_group(tmp_path):
    with ManagedServer("tree", tiny("tree"), Readiness.get("/health"), log_dir=tmp_path) as server:
        server_pid, child, escaped = logged_pids(tmp_path / "tree.server.log")
        assert os.getpgid(child) == server.pid and os.getpgid(escaped) != server.pid
        assert {server_pid, child, escaped} <= set(server.pids())
    assert wait_gone([server_pid, child, escaped]) == []


def test_keyboard_interrupt_while_waiting_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(servers, "_probe", interrupted)
    server = ManagedServer("tiny", tiny("serve"), Readiness.get("/health"), log_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert calls and not server.running
    assert wait_gone(logged_pids(tmp_path / "tiny.server.log")) == []


PARENT = r"""
import json, sys
from llmcompare.servers import ManagedServer, Readiness
server = ManagedServer("tree", [sys.executable, "-c", sys.argv[1], "{host}", "{port}", "tree"],
                       Readiness.get("/health"), log_dir=sys.argv[2])
server.start()
print(json.dumps(server.pids()), flush=True)
if sys.argv[3] == "wait":
    sys.stdin.read()
"""


@pytest.mark.parametrize("fate", ["sigkill", "exit-without-stop"])
def test_no_server_outlives_its_parent(tmp_path, fate):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, TINY, str(tmp_path), "wait" if fate == "sigkill" else "exit"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(parent.stdout.readline())
        pids += logged_pids(tmp_path / "tree.server.log")[1:]  # the server's two children
        assert len(set(pids)) == 4 and all(alive(p) for p in pids)
        if fate == "sigkill":
            parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        assert wait_gone(pids) == []
    finally:
        parent.kill()
        parent.wait()


def test_placeholders_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOMPARE_TEST_REMOVED", "x")
    script = ("import os, sys; print('env', os.environ['SERVER_PORT'], os.environ.get('LLMCOMPARE_TEST_REMOVED'),"
              " sys.argv[1:], flush=True)")
    server = ManagedServer("env", [sys.executable, "-c", script, "--port={port}", "{host}"], Readiness.get("/"),
                           log_dir=tmp_path, env={"SERVER_PORT": "{port}", "LLMCOMPARE_TEST_REMOVED": None})
    with pytest.raises(ServerFailed, match="exited with status 0") as err:
        server.start()
    port = server.port
    assert f"env {port} None ['--port={port}', '127.0.0.1']" in str(err.value)


# ---- ServedBackend: a managed server composed with a client backend, on the mock server ----

class MockServe(served.ServedBackend):
    """The smallest recipe: llmcompare's mock OpenAI server (echoes the prompt ids)."""

    name = "mock-serve"

    def plan(self) -> served.ServerPlan:
        argv = (sys.executable, "-m", "llmcompare.servers.mock", "--host", "{host}", "--port", "{port}", "--ttft-ms", "5",
                *self.extra_args())
        return served.ServerPlan(argv, Readiness.get("/health"), client="openai", distributions=("aiohttp",))


@pytest.fixture
def no_tokenizer_model(tmp_path, monkeypatch):
    """A model without a tokenizer: the mock server echoes ids, so the client needs none."""

    def no_tokenizer(self, trust_remote_code=False):
        raise RuntimeError("this test model has no tokenizer")

    monkeypatch.setattr(ResolvedModel, "tokenizer", no_tokenizer)
    (tmp_path / "model").mkdir()
    return ResolvedModel(str(tmp_path / "model"), "hf", "model", str(tmp_path / "model"))


def test_served_backend_starts_streams_and_stops(tmp_path, no_tokenizer_model):
    backend = MockServe(BackendConfig(model=no_tokenizer_model, logs_dir=str(tmp_path)))
    backend.load()
    server = backend.server
    pids = server.pids()
    try:
        assert server.listening() == {("127.0.0.1", server.port)}
        versions = backend.engine_version()
        assert versions["count_source"] == "ids" and versions["aiohttp"]
        assert versions["server_command"].endswith(f"--host 127.0.0.1 --port {server.port} --ttft-ms 5")

        async def run():
            try:
                return [c async for c in backend.astream([7, 8, 9], 8)]
            finally:
                await backend.aclose()

        chunks = asyncio.run(run())
    finally:
        backend.unload()
    assert [t for c in chunks for t in c.token_ids] == [7, 8, 9, 7, 8, 9, 7, 8]
    assert chunks[-1].finish_reason == "length"
    assert backend.server is None and backend.client is None and wait_gone(pids) == []
    assert "starting" in (tmp_path / "mock-serve.server.log").read_text()


def test_a_client_that_fails_to_load_stops_the_server(tmp_path, no_tokenizer_model, monkeypatch):
    monkeypatch.setenv("LLMCOMPARE_TEST_SERVER_KEY", "sesame")  # the server wants it; the client has none
    started = {}
    start = ManagedServer.start

    def remember(self):
        start(self)
        started["pids"] = self.pids()
        return self

    monkeypatch.setattr(ManagedServer, "start", remember)
    backend = MockServe(BackendConfig(model=no_tokenizer_model, logs_dir=str(tmp_path),
                                      options={"server_args": "--api-key-env LLMCOMPARE_TEST_SERVER_KEY"}))
    with pytest.raises(UserError):  # the client gives up on a server that answers 401
        backend.load()
    assert backend.server is None and wait_gone(started["pids"]) == []


# ---- the recipes' argv (no engine needed) ----

def config(model: ResolvedModel, spec_name: str, variant=None, device="cpu", **options) -> BackendConfig:
    spec = next(s for s in served.SPECS if s.name == spec_name)
    return BackendConfig(model=model, variant=spec.resolve_variant(variant), options=spec.validate_options(options),
                         device=device, logs_dir=None)


@pytest.fixture
def hf_model(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    return ResolvedModel(str(tmp_path / "m"), "hf", "m", str(tmp_path / "m"))


def pairs(argv) -> set[tuple[str, str]]:
    return set(itertools.pairwise(argv))


def test_every_recipe_registers_as_a_concurrent_http_backend():
    got = []
    served.register_backends(register=got.append)
    assert [s.name for s in got] == ["llamacpp-server", "transformers-serve", "vllm-serve", "sglang-serve",
                                     "tgi-serve"]
    for spec in got:
        caps = spec.capabilities
        assert caps.concurrent and not caps.in_process and caps.accepts_token_ids
        assert spec.target.startswith("llmcompare.backends.served:") and spec.install
        assert "aiohttp" in spec.requires


def test_vllm_serve_argv(hf_model, monkeypatch):
    monkeypatch.delenv("VLLM_HOST_IP", raising=False)
    plan = served.VLLMServe(config(hf_model, "vllm-serve", "bf16", max_model_len=512, enforce_eager=True)).plan()
    argv = list(plan.argv)
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert {("--model", hf_model.path), ("--host", "{host}"), ("--port", "{port}"), ("--generation-config", "vllm"),
            ("--dtype", "bfloat16"), ("--max-model-len", "512")} <= pairs(argv)
    assert "--no-enable-prefix-caching" in argv and "--enforce-eager" in argv and "--load-format" not in argv
    assert plan.ready == Readiness.get("/health") and plan.client == "openai"
    assert ("--kv-cache-memory-bytes", str(4 << 30)) in pairs(argv) and plan.env["HF_HUB_OFFLINE"] == "1"
    assert plan.client_options == {"model": hf_model.path, "prompt_format": "ids"}
    assert plan.env["VLLM_HOST_IP"] == "127.0.0.1"  # vLLM's internal sockets on the loopback too
    monkeypatch.setenv("VLLM_HOST_IP", "10.0.0.7")  # a user's own choice (another host's workers) wins
    assert "VLLM_HOST_IP" not in served.VLLMServe(config(hf_model, "vllm-serve", "bf16")).plan().env


@pytest.mark.engine
def test_vllm_serve_argv_for_a_synthetic_model_on_a_gpu(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("LLMCOMPARE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    model = ResolvedModel("synthetic:llama-2-7b", "synthetic", "synthetic-llama-2-7b", shape="llama-2-7b")
    plan = served.VLLMServe(config(model, "vllm-serve", "fp16", device="cuda:1")).plan()
    argv = list(plan.argv)
    assert {("--load-format", "dummy"), ("--dtype", "float16")} <= pairs(argv) and "--skip-tokenizer-init" in argv
    assert (Path(argv[argv.index("--model") + 1]) / "config.json").exists()
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "1" and "--kv-cache-memory-bytes" not in argv


def test_sglang_serve_argv(hf_model):
    plan = served.SGLangServe(config(hf_model, "sglang-serve", device="cuda", context_length=1024)).plan()
    argv = list(plan.argv)
    assert argv[:3] == [sys.executable, "-m", "sglang.launch_server"]
    assert {("--model-path", hf_model.path), ("--host", "{host}"), ("--port", "{port}"), ("--dtype", "bfloat16"),
            ("--context-length", "1024")} <= pairs(argv)
    assert "--disable-radix-cache" in argv and plan.ready == Readiness.get("/health")


def test_tgi_launcher_argv_maps_the_serving_knobs(hf_model, monkeypatch):
    monkeypatch.setattr(served.shutil, "which", lambda name: f"/usr/bin/{name}")
    knobs = {"max_batch_prefill_tokens": 4096, "max_batch_total_tokens": 16000, "max_input_length": 1024,
             "max_total_tokens": 2048, "max_concurrent_requests": 64}
    plan = served.TGIServe(config(hf_model, "tgi-serve", device="cuda", **knobs)).plan()
    argv = list(plan.argv)
    assert argv[0] == "text-generation-launcher"
    assert {("--model-id", hf_model.path), ("--hostname", "{host}"), ("--port", "{port}"),
            ("--max-batch-prefill-tokens", "4096"), ("--max-batch-total-tokens", "16000"),
            ("--max-input-tokens", "1024"), ("--max-total-tokens", "2048"), ("--max-concurrent-requests", "64"),
            ("--usage-stats", "off"), ("--shard-uds-path", "/tmp/llmcompare-tgi-{port}")} <= pairs(argv)
    assert plan.env["PREFIX_CACHING"] == "0" and plan.client == "tgi" and plan.ready == Readiness.get("/health")
    with pytest.raises(OptionError, match="not both"):
        served.TGIServe(config(hf_model, "tgi-serve", max_input_length=1, max_input_tokens=2)).plan()


def test_tgi_docker_argv_publishes_on_loopback_and_removes_the_container(hf_model, monkeypatch):
    monkeypatch.setattr(served.shutil, "which", lambda name: f"/usr/bin/{name}")
    plan = served.TGIServe(config(hf_model, "tgi-serve", "docker", device="cuda:0", max_total_tokens=2048)).plan()
    argv = list(plan.argv)
    assert argv[:3] == ["docker", "run", "--rm"]
    assert {("--name", "llmcompare-tgi-{port}"), ("-p", "{host}:{port}:80"), ("-e", "PREFIX_CACHING=0"),
            ("-v", f"{hf_model.path}:/data/model:ro"), ("--gpus", "device=0"), ("--model-id", "/data/model"),
            ("--max-total-tokens", "2048")} <= pairs(argv)
    assert argv[argv.index("--model-id") - 1] == served.TGI_IMAGE
    assert plan.cleanup == ("docker", "rm", "-f", "llmcompare-tgi-{port}")
    with pytest.raises(OptionError, match="replicas needs the launcher variant"):  # --gpus would not follow them
        served.TGIServe(config(hf_model, "tgi-serve", "docker", device="cuda", replicas=2)).plan()


def test_tgi_serve_says_what_is_missing(hf_model, monkeypatch):
    monkeypatch.setattr(served.shutil, "which", lambda name: None)
    spec = next(s for s in served.SPECS if s.name == "tgi-serve")
    assert spec.missing_module() == "text-generation-launcher or docker"
    with pytest.raises(UserError, match=r"no text-generation-launcher or docker on PATH\); install it with: docker pull"):
        spec.ensure_installed()
    with pytest.raises(UserError, match="no docker on PATH"):
        served.TGIServe(config(hf_model, "tgi-serve", "docker")).plan()


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_llamacpp_server_argv_parses_with_the_installed_server(tmp_path):
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ServerSettings, Settings

    gguf = tmp_path / "m.Q4_0.gguf"
    gguf.write_bytes(b"")
    model = ResolvedModel(str(gguf), "gguf", "m", str(gguf))
    plan = served.LlamaCppServer(config(model, "llamacpp-server", n_threads=2)).plan()
    argv = [a.replace("{host}", "127.0.0.1").replace("{port}", "8123") for a in plan.argv]
    assert argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    import argparse

    parser = argparse.ArgumentParser()
    add_args_from_model(parser, Settings)
    settings = parse_model_from_args(ServerSettings, parser.parse_args(argv[3:]))  # unknown flags exit here
    assert settings.interrupt_requests is False and settings.host == "127.0.0.1" and settings.port == 8123
    assert {("--cache", "False"), ("--n_gpu_layers", "0"), ("--n_threads", "2")} <= pairs(argv)
    assert plan.env == {"HOST": "{host}", "PORT": "{port}", "CONFIG_FILE": None}
    assert plan.ready == Readiness.get("/v1/models") and plan.client_options == {"model": str(gguf)}


# ---- live, on the default model ----

def _live_ready(*modules: str) -> str | None:
    from llmcompare.models import default_model_path

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        return f"not installed: {', '.join(missing)}"
    return None if default_model_path() is not None else "the default model is not installed"


def stream_fixed_length(name: str, logs: Path, n: int = 8, variant=None):
    """Start ``name`` on the default model, stream ``n`` tokens, stop it; return what was seen."""
    from llmcompare.models import resolve_model

    spec = next(s for s in served.SPECS if s.name == name)
    model = resolve_model(None)
    cfg = BackendConfig(model=model, variant=spec.resolve_variant(variant), options=spec.validate_options({}),
                        logs_dir=str(logs))
    backend = spec.load_class()(cfg)
    ids = model.tokenizer()("The capital of France is", add_special_tokens=False)["input_ids"]
    t0 = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - t0
    try:
        server = backend.server
        pids, listening, versions = server.pids(), server.listening(), backend.engine_version()

        async def run():
            try:
                return [c async for c in backend.astream(ids, n)]
            finally:
                await backend.aclose()

        chunks = asyncio.run(run())
    finally:
        backend.unload()
    return {"chunks": chunks, "pids": pids, "listening": listening, "versions": versions, "load_s": load_s,
            "port": server.port}


@pytest.mark.engine
@pytest.mark.skipif(_live_ready("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context",
                                "pydantic_settings", "aiohttp", "transformers") is not None,
                    reason="llamacpp-server is not installed")
def test_llamacpp_server_live(tmp_path):
    seen = stream_fixed_length("llamacpp-server", tmp_path)
    print(f"llamacpp-server load (start + ready + probe): {seen['load_s']:.2f} s")
    chunks = seen["chunks"]
    assert sum(c.count for c in chunks) == 8 and chunks[-1].finish_reason == "length"
    assert chunks[-1].engine_output_tokens in (None, 8)
    assert seen["listening"] == {("127.0.0.1", seen["port"])}
    assert seen["versions"]["llama_cpp_python"] and "--interrupt_requests False" in seen["versions"]["server_command"]
    assert wait_gone(seen["pids"]) == []
    assert "Uvicorn running on http://127.0.0.1" in (tmp_path / "llamacpp-server.server.log").read_text()


@pytest.mark.engine
@pytest.mark.skipif(_live_ready("transformers", "torch", "fastapi", "uvicorn", "openai", "aiohttp", "gguf") is not None,
                    reason="transformers-serve is not installed")
def test_transformers_serve_live(tmp_path):
    seen = stream_fixed_length("transformers-serve", tmp_path)
    print(f"transformers-serve load (start + ready + probe): {seen['load_s']:.2f} s")
    chunks = seen["chunks"]
    assert sum(c.count for c in chunks) == 8 and chunks[-1].finish_reason == "length"
    assert chunks[-1].engine_output_tokens == 8 and chunks[-1].count_source == "usage"
    assert seen["listening"] == {("127.0.0.1", seen["port"])}
    assert seen["versions"]["transformers"] and "--continuous-batching" in seen["versions"]["server_command"]
    assert wait_gone(seen["pids"]) == []
    assert (tmp_path / "transformers-serve_fp32.server.log").exists()


# vLLM cannot share the main environment: its server runs under the managed `vllm` environment's
# interpreter (`llmcompare env create vllm`), from a driver started there, as `--python` would do.
VLLM_DRIVER = r'''
import asyncio, json, sys, time
import psutil
from llmcompare.backend import BackendConfig
from llmcompare.backends import served
from llmcompare.models import resolve_model

job = json.loads(open(sys.argv[1]).read())
spec = next(s for s in served.SPECS if s.name == "vllm-serve")
config = BackendConfig(model=resolve_model(job["model"]), variant="fp32", logs_dir=job["logs"],
                       options=spec.validate_options({"max_model_len": 512, "enforce_eager": True, "kv_cache_gib": 1}))
backend = spec.load_class()(config)
t0 = time.perf_counter()
backend.load()
out = {"load_s": time.perf_counter() - t0, "ready_s": backend.server.startup_s, "pids": backend.server.pids(),
       "listening": sorted(backend.server.listening()), "versions": backend.engine_version()}

async def run():
    try:
        return [c async for c in backend.astream(job["ids"], job["n"])]
    finally:
        await backend.aclose()

chunks = asyncio.run(run())
backend.unload()
out.update(ids=[t for c in chunks for t in c.token_ids], finish=chunks[-1].finish_reason,
           engine_output_tokens=chunks[-1].engine_output_tokens, count_source=chunks[-1].count_source)
json.dump(out, open(sys.argv[2], "w"))
'''


@pytest.mark.engine
def test_vllm_serve_live_in_its_own_environment(tmp_path):
    from llmcompare import envs
    from llmcompare.models import resolve_model

    python = envs.managed_python("vllm")
    if python is None:
        pytest.skip("vLLM's environment does not exist; create it with: llmcompare env create vllm")
    if _live_ready("transformers", "gguf") is not None:
        pytest.skip("the default model (llmcompare[default-model]) is not installed")
    model = resolve_model(None)
    ids = model.tokenizer()("The capital of France is", add_special_tokens=False)["input_ids"]
    (tmp_path / "job.json").write_text(json.dumps({"model": model.hf_dir(), "ids": ids, "n": 8, "logs": str(tmp_path)}))
    (tmp_path / "driver.py").write_text(VLLM_DRIVER)
    proc = subprocess.run([python, str(tmp_path / "driver.py"), str(tmp_path / "job.json"), str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    print(f"vllm-serve ready after {out['ready_s']:.1f} s, load {out['load_s']:.1f} s")
    assert len(out["ids"]) == 8 and out["finish"] == "length" and out["engine_output_tokens"] == 8
    assert out["count_source"] is None  # exact ids from the server (return_token_ids)
    assert out["listening"] and all(ip == "127.0.0.1" for ip, _ in out["listening"])
    assert out["versions"]["server_version"] and "--no-enable-prefix-caching" in out["versions"]["server_command"]
    assert wait_gone(out["pids"]) == []


def test_replicas_start_one_server_each_and_share_the_requests(tmp_path, no_tokenizer_model):
    """``-o replicas=2``: two servers (their own logs and ports), requests to the one with fewest in flight."""
    backend = MockServe(BackendConfig(model=no_tokenizer_model, logs_dir=str(tmp_path), options={"replicas": 2}))
    backend.load()
    servers = [server for server, _ in backend.replicas]
    pids = [p for server in servers for p in server.pids()]
    used: list[int] = []
    try:
        assert len(servers) == 2 and servers[0].port != servers[1].port and backend.server is servers[0]
        assert backend.client_config() is None  # the balancing lives in this process
        assert backend.engine_version()["replicas"] == "2"
        startups = [float(x) for x in backend.engine_version()["replica_startup_s"].split(";")]
        assert len(startups) == 2 and all(0 < x < 60 for x in startups)
        for i, (_, client) in enumerate(backend.replicas):
            real = client.astream

            def counted(*args, _real=real, _i=i, **kwargs):
                used.append(_i)
                return _real(*args, **kwargs)

            client.astream = counted

        async def run():
            try:
                async def one(p):
                    return [t for c in [c async for c in backend.astream(p, 6)] for t in c.token_ids]
                return await asyncio.gather(*(one([k, k + 1]) for k in range(1, 9)))
            finally:
                await backend.aclose()

        outputs = asyncio.run(run())
    finally:
        backend.unload()
    assert outputs == [[k, k + 1] * 3 for k in range(1, 9)]
    assert sorted(used) == [0] * 4 + [1] * 4  # eight requests at once: four each
    assert backend.replicas == [] and wait_gone(pids) == []
    assert {p.name for p in tmp_path.glob("*.server.log")} == {"mock-serve.r0.server.log", "mock-serve.r1.server.log"}


def test_replica_devices_split_the_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5,7")
    assert served.replica_devices("cuda", 2) == ["2", "3"]
    assert served.replica_devices("cuda", 2, per_replica=2) == ["2,3", "5,7"]
    assert served.replica_devices("cuda", 1) == [] and served.replica_devices("cpu", 2) == []
    with pytest.raises(UserError, match="needs 6 GPUs; this machine shows 4"):
        served.replica_devices("cuda", 3, per_replica=2)
    with pytest.raises(UserError, match="pass --device cuda, not cuda:1"):
        served.replica_devices("cuda:1", 2)
