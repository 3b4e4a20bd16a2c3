"""ExLlamaV2 in process: fp16 safetensors, GPTQ and EXL2 checkpoints, through its dynamic generator.

Checkpoints (the variant says which, so the label always says what ran):

* ``exllamav2:fp16``: the model's own unquantized safetensors, run in fp16. ``synthetic:<shape>`` is
  built once in fp16 (:func:`llmcompare.models.quantize.fp16_source`).
* ``exllamav2:gptq``: 4-bit, group 128, made from that fp16 checkpoint by gptqmodel
  (:class:`~llmcompare.models.quantize.GPTQRecipe`), cached.
* ``exllamav2:exl2``: EXL2 at ``-o exllamav2.bits=`` bits per weight (4.0 by default), made by
  exllamav2's own converter (:class:`~llmcompare.models.quantize.EXL2Recipe`), cached.

``-o exllamav2.model_dir=DIR`` loads a checkpoint made elsewhere; its ``config.json`` must hold the
variant's format. A model directory that already holds it is loaded as is.

Engine, as exllamav2 0.3.2 documents it: ``ExLlamaV2Config(dir)`` → ``ExLlamaV2(config)`` →
``ExLlamaV2Cache(model, max_seq_len=cache_tokens, lazy=True)`` → ``model.load_autosplit(cache)`` →
``ExLlamaV2Tokenizer(config)`` → ``ExLlamaV2DynamicGenerator(model, cache, tokenizer, paged=...)``.
Paged attention, which batches requests together, needs flash-attn ≥ 2.5.7; without it the generator
runs unpaged, one request at a time, the others waiting in its queue (``paged=auto`` picks what is
installed and the environment block records which ran).

Fairness, stated on every job (``ExLlamaV2DynamicJob``):

* greedy: ``gen_settings=ExLlamaV2Sampler.Settings.greedy()`` (top-k 1, top-p 0, repetition penalty
  1.0; the class defaults sample, with a 1.025 repetition penalty);
* exactly N: ``max_new_tokens=N`` and ``stop_conditions=None`` (no stop token or string, so EOS is an
  ordinary token); no banned strings, filters, token healing or draft model (with a draft the job ends
  ``num_draft_tokens`` early). For the fidelity pass (``stop_at_eos=True``, ``natural_stop``) the stop
  conditions are the checkpoint's EOS ids (``config.json`` and ``generation_config.json``) and nothing
  else; the EOS token is not output and the finish reason is ``stop``;
* the prompt goes in as ids (a (1, n) CPU tensor); the output is counted from the engine's
  ``token_ids``. One result can carry several tokens (the generator holds back text that ends inside a
  UTF-8 character): they share its time;
* prefix cache: the dynamic generator reuses KV pages by content (whole 256-token pages by hash, and a
  partial first page copied from any page that starts with the same tokens), across requests, and has
  no switch for it. :class:`JobDriver` resets the page table whenever the generator drains, so a
  request that starts on an idle generator (every request at batch 1, every repetition of a latency
  prompt) reuses nothing. Requests in flight together could still share pages; the load driver makes
  every request start with distinct random tokens, so they have none to share. The engine's own
  ``cached_tokens`` of every request is summed in ``JobDriver.cached_tokens``.

Both ``generate`` (batch 1) and ``astream`` (many requests in flight, ``concurrent``) hand jobs to one
:class:`JobDriver` thread that owns the generator; tokens are stamped when the caller takes them.

The CUDA extension builds just in time on the first ``import exllamav2`` of a machine (about 90 s on
the H100/H200 machines), then loads from torch's extension cache: that first load time includes it.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import json
import queue
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from llmcompare import hookimpl
from llmcompare.backend import (
    BackendConfig,
    BackendSpec,
    Capabilities,
    Chunk,
    EnvRecipe,
    Generation,
    OptionSpec,
    clock,
    collect,
)
from llmcompare.errors import RequestFailed, UserError
from llmcompare.models.quantize import EXL2Recipe, GPTQRecipe

PAGE_SIZE = 256
"""Both generators page their KV cache in 256-token pages; a cache's size is a multiple of it."""

VARIANTS = {
    "fp16": "the model's unquantized safetensors, run in fp16",
    "gptq": "GPTQ 4-bit, group 128 (gptqmodel, cached; or -o model_dir=)",
    "exl2": "EXL2 at -o bits= bits per weight, default 4.0 (exllamav2's converter, cached; or -o model_dir=)",
}


class JobDriver:
    """Runs a dynamic generator (ExLlamaV2's or ExLlamaV3's: the same interface) on a thread of its own.

    Every call into the generator (``enqueue``, ``iterate``, ``cancel``, the page-table reset) happens
    on that thread, so batch-1 ``generate`` calls and many concurrent ``astream`` requests share one
    batch with no lock around the engine, and the caller's event loop never waits on a forward pass.

    ``submit(job, deliver)`` hands a job over; ``deliver`` is then called on the driver thread with
    each of the job's result dicts (the last has ``eos`` true), or once with an exception if the
    engine failed. ``cancel(job)`` drops a job whose caller went away. Whenever the generator drains
    (no job pending or active) the driver calls ``reset_cache()`` before it takes the next job, so no
    request that starts on an idle generator finds anything of an earlier one in the cache.
    """

    def __init__(self, generator: Any, reset_cache: Callable[[], None], name: str):
        self.generator = generator
        self._reset_cache = reset_cache
        self._cv = threading.Condition()
        self._inbox: list[tuple[str, Any, Callable[[Any], None] | None]] = []
        self._sinks: dict[int, tuple[Any, Callable[[Any], None]]] = {}
        self._closing = False
        self._dirty = False
        self.cached_tokens = 0
        """Prompt tokens the engine reported as taken from its cache, summed over finished requests."""
        self.resets = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- called from any thread
    def submit(self, job: Any, deliver: Callable[[Any], None]) -> None:
        with self._cv:
            if self._closing:
                raise RuntimeError("the engine is unloaded")
            self._inbox.append(("add", job, deliver))
            self._cv.notify()

    def cancel(self, job: Any) -> None:
        with self._cv:
            self._inbox.append(("cancel", job, None))
            self._cv.notify()

    def close(self, timeout: float = 60.0) -> None:
        """Stop the thread; requests still running get an exception."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout)

    # ---- the driver thread
    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._inbox or self._closing or self._sinks):
                    self._cv.wait()
                if self._closing:
                    break
                inbox, self._inbox = self._inbox, []
            for op, job, deliver in inbox:
                if op == "add":
                    self._add(job, deliver)
                else:
                    self._cancel(job)
            if self._sinks:
                try:
                    results = self.generator.iterate()
                except Exception as exc:  # no one job's fault: every job in flight fails with it
                    self._fail_all(exc)
                    results = []
                for result in results:
                    self._route(result)
                if self._sinks and self.generator.num_remaining_jobs() == 0:  # never expected: do not spin
                    self._fail_all(RuntimeError("the engine dropped the request without finishing it"))
            self._reset_if_drained()
        self._fail_all(RuntimeError("the engine was unloaded while the request ran"))

    def _add(self, job: Any, deliver: Callable[[Any], None]) -> None:
        try:
            self.generator.enqueue(job)
        except Exception as exc:  # the engine refused the job (too long for the cache...)
            deliver(exc)
            return
        self._sinks[id(job)] = (job, deliver)
        self._dirty = True

    def _cancel(self, job: Any) -> None:
        if self._sinks.pop(id(job), None) is not None:
            self.generator.cancel(job)

    def _route(self, result: dict[str, Any]) -> None:
        key = id(result["job"])
        entry = self._sinks.get(key)
        if entry is None:
            return
        if result.get("eos"):
            del self._sinks[key]
            self.cached_tokens += int(result.get("cached_tokens") or 0)
        try:
            entry[1](result)
        except Exception:  # the caller's event loop is gone: drop its job
            if self._sinks.pop(key, None) is not None:
                self.generator.cancel(entry[0])

    def _fail_all(self, exc: BaseException) -> None:
        sinks, self._sinks = list(self._sinks.values()), {}
        for _, deliver in sinks:
            try:
                deliver(exc)
            except Exception:
                pass
        if sinks:
            self.generator.clear_queue()
            self._dirty = True

    def _reset_if_drained(self) -> None:
        if self._dirty and not self._sinks and self.generator.num_remaining_jobs() == 0:
            self._reset_cache()
            self._dirty = False
            self.resets += 1


def result_chunk(result: dict[str, Any], t: float) -> Chunk | None:
    """A generator result as a :class:`Chunk` (None for the ``started``/``prefill`` stages and for a
    streaming result that holds no tokens yet). The last result carries the engine's counts and the
    finish reason: ``length`` (``max_new_tokens``) or ``stop`` (a stop token, i.e. EOS under
    ``stop_at_eos``). A stop token is not emitted: the engine puts it, after any tokens it was still
    holding back, in the result's ``held``; those held tokens are output, the stop token is not, and
    the engine's ``new_tokens`` (which counts it) is reported without it."""
    if result.get("stage") != "streaming":
        return None
    tokens = _ids(result.get("token_ids"))
    if not result.get("eos"):
        return Chunk(tokens, t) if tokens else None
    reason = result.get("eos_reason")
    new_tokens = result.get("new_tokens")
    if reason == "stop_token":
        tokens += _ids((result.get("held") or {}).get("token_ids"))[:-1]
        new_tokens = None if new_tokens is None else new_tokens - 1
    finish = {"max_new_tokens": "length", "stop_token": "stop"}.get(reason, reason)
    return Chunk(tokens, t, finish_reason=finish, prompt_tokens=result.get("prompt_tokens"),
                 engine_output_tokens=new_tokens)


def _ids(tensor: Any) -> list[int]:
    return [int(x) for x in tensor.reshape(-1).tolist()] if tensor is not None else []


def eos_ids(checkpoint: str) -> list[int]:
    """The ids that end a sequence, as transformers takes them: ``eos_token_id`` (an id or a list) of the
    checkpoint's ``config.json`` and ``generation_config.json``."""
    out: set[int] = set()
    for name in ("config.json", "generation_config.json"):
        try:
            eos = json.loads((Path(checkpoint) / name).read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError):
            continue
        out.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
    return sorted(int(e) for e in out)


class DynamicGeneratorBackend:
    """What the ExLlamaV2 and ExLlamaV3 adapters share: the checkpoint, the job driver, the request
    paths, counting and unloading. A subclass loads its engine (setting ``driver``, ``tokenizer``,
    ``capacity``) and builds its jobs."""

    engine_name = "ExLlama"
    backend_name = "exllama"
    default_variant = "fp16"
    recipes: dict[str, Any] = {}
    """Variant -> the :mod:`llmcompare.models.quantize` recipe class that makes its checkpoint (None: fp16)."""

    def __init__(self, config: BackendConfig):
        self.config = config
        if not config.device.startswith("cuda"):
            raise UserError(f"backend {self.backend_name!r} runs on CUDA GPUs only; pass --device cuda")
        opts = dict(config.options)
        self.model_dir_option: str | None = opts.pop("model_dir", None)
        self.cache_tokens_option: int | None = opts.pop("cache_tokens", None)
        self.variant = config.variant or self.default_variant
        given = {k: opts.pop(k, None) for k in ("bits", "head_bits")}
        self.recipe_options = {k: v for k, v in given.items() if v is not None}
        recipe = self.recipes.get(self.variant)
        for key in self.recipe_options:
            if recipe is None or key not in recipe.options:
                takes = [v for v, r in self.recipes.items() if r is not None and key in r.options]
                raise UserError(f"option {key!r} of backend {self.backend_name!r} sets a conversion recipe and"
                                f" applies to the {' and '.join(takes)} variant only, not {self.variant}")
        self.engine_options = opts
        self.checkpoint: str | None = None
        self.driver: JobDriver | None = None
        self.tokenizer: Any = None
        self.capacity = 0
        """Prompt plus output tokens one request may hold (the KV cache's size, less one)."""
        self.eos: list[int] = []
        """The checkpoint's EOS ids: the stop tokens of a ``stop_at_eos`` request (none otherwise)."""

    # ---- the checkpoint
    def checkpoint_dir(self) -> str:
        """The directory to load: ``model_dir``, the model itself if it holds the variant's format, the
        fp16 source, or the variant's cached conversion of it."""
        from llmcompare.models import quantize

        wanted = "unquantized" if self.variant == "fp16" else self.variant
        model = self.config.model
        given = self.model_dir_option
        if given is None and model.kind == "hf" and wanted != "unquantized" \
                and quantize.checkpoint_format(model.path) == wanted:
            given = model.path
        if given is not None:
            held = quantize.checkpoint_format(given)
            if held != wanted:
                shown = "fp16" if held == "unquantized" else held
                raise UserError(f"{given!r} holds a {held} checkpoint but the variant is {self.variant};"
                                f" run it as {self.backend_name}:{shown} so the label says what ran")
            return str(given)
        source = quantize.fp16_source(model)
        if self.variant == "fp16":
            return str(source)
        recipe = self.recipes[self.variant](**self.recipe_options)
        return str(quantize.quantize(source, recipe, log_dir=self.config.logs_dir))

    def cache_size(self, model_context: int) -> int:
        """KV-cache tokens: the option, else the model's context; rounded up to whole pages."""
        tokens = int(self.cache_tokens_option or model_context)
        return -(-tokens // PAGE_SIZE) * PAGE_SIZE

    # ---- requests
    def make_job(self, input_ids: Any, max_new_tokens: int, stop_tokens: list[int] | None) -> Any:
        """The engine's job: greedy, ``max_new_tokens``, and no stop condition but ``stop_tokens``."""
        raise NotImplementedError

    def _job(self, prompt: Sequence[int], max_new_tokens: int, stop_at_eos: bool) -> Any:
        if self.driver is None:
            raise RuntimeError(f"{self.engine_name} is not loaded")
        if len(prompt) + max_new_tokens > self.capacity:
            raise RequestFailed("client_error", f"{len(prompt)} prompt + {max_new_tokens} new tokens do not fit the"
                                f" {self.capacity}-token KV cache; raise -o {self.backend_name}.cache_tokens")
        import torch

        if stop_at_eos and not self.eos:
            raise RequestFailed("unsupported", f"{self.checkpoint} names no eos_token_id: nothing to stop at")
        return self.make_job(torch.tensor([[int(t) for t in prompt]], dtype=torch.long), max_new_tokens,
                             list(self.eos) if stop_at_eos else None)

    def _failed(self, exc: BaseException) -> RequestFailed:
        return RequestFailed("engine", f"{self.engine_name}: {type(exc).__name__}: {exc}")

    def generate(self, prompt: Sequence[int], max_new_tokens: int, *, stop_at_eos: bool = False) -> Generation:
        job = self._job(prompt, max_new_tokens, stop_at_eos)
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.driver.submit(job, inbox.put)
        chunks: list[Chunk] = []
        while True:
            item = inbox.get()
            t = clock()
            if isinstance(item, BaseException):
                raise self._failed(item) from item
            chunk = result_chunk(item, t)
            if chunk is not None:
                chunks.append(chunk)
            if item.get("eos"):
                return collect(chunks)

    async def astream(self, prompt: Sequence[int], max_new_tokens: int, *,
                      stop_at_eos: bool = False) -> AsyncIterator[Chunk]:
        job = self._job(prompt, max_new_tokens, stop_at_eos)
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        self.driver.submit(job, lambda item: loop.call_soon_threadsafe(inbox.put_nowait, item))
        done = False
        try:
            while not done:
                item = await inbox.get()
                t = clock()
                if isinstance(item, BaseException):
                    done = True
                    raise self._failed(item) from item
                done = bool(item.get("eos"))
                chunk = result_chunk(item, t)
                if chunk is not None:
                    yield chunk
        finally:
            if not done:  # the caller stopped early: the engine drops the job
                self.driver.cancel(job)

    def count_tokens(self, text: str) -> int:
        return int(self.tokenizer.encode(text, add_bos=False, encode_special_tokens=False).shape[-1])

    # ---- versions and unloading
    def torch_versions(self) -> dict[str, str]:
        import torch

        v = {"torch": torch.__version__}
        if torch.cuda.is_available():
            v["cuda"] = str(torch.version.cuda)
            v["gpu"] = torch.cuda.get_device_name(0)
        return v

    def free_engine(self) -> None:
        """Drop the engine's objects (the subclass unloads its model first)."""
        raise NotImplementedError

    def unload(self) -> None:
        if self.driver is not None:
            self.driver.close()
        self.driver = None
        self.free_engine()
        self.tokenizer = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


def prefill_attention(attn: Any, config: Any) -> str:
    """Which attention a multi-token prefill runs, made causal: ``flash-attn`` or ``xformers`` when
    installed (exllamav2 masks both causally); otherwise the matmul path, by setting ``config.no_sdpa``.

    exllamav2 0.3.2's SDPA branch (``ExLlamaV2Attention._attn_torch``, taken when neither flash-attn
    nor xformers is installed) passes ``attn_params.get_block_diag_mask()`` as the mask whenever
    ``causal`` is set, and that is ``None`` for an ordinary prefill: the prompt then attends both
    ways. On the H200 this made every greedy answer differ from transformers' from its first token,
    while 1-token prompts agreed (benchmarks/results/2026-11-22-h200-c). The matmul branch adds the
    causal ``get_attn_mask()``. Decoding steps (one query) need no mask, so their speed is the same.
    """
    if getattr(attn, "has_flash_attn", False) and not config.no_flash_attn:
        return "flash-attn"
    if getattr(attn, "has_xformers", False) and not config.no_xformers:
        return "xformers"
    config.no_sdpa = True
    return "matmul (exllamav2's SDPA prefill is not causal without flash-attn)"


class ExLlamaV2Backend(DynamicGeneratorBackend):

    engine_name = "ExLlamaV2"
    backend_name = "exllamav2"

    recipes = {"fp16": None, "gptq": GPTQRecipe, "exl2": EXL2Recipe}

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self.paged_option: str = self.engine_options.pop("paged", "auto")
        self.model = None
        self.cache = None
        self.generator = None
        self.paged = False
        self.attention = ""

    def load(self) -> None:
        self.checkpoint = self.checkpoint_dir()
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer, attn
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        config = ExLlamaV2Config(self.checkpoint)
        self.attention = prefill_attention(attn, config)
        self.model = ExLlamaV2(config)
        tokens = self.cache_size(config.max_seq_len)
        self.cache = ExLlamaV2Cache(self.model, max_seq_len=tokens, lazy=True)
        self.model.load_autosplit(self.cache, progress=False)
        self.tokenizer = ExLlamaV2Tokenizer(config)
        if self.paged_option == "auto":
            self.paged = bool(getattr(attn, "has_flash_attn_with_paged", False)) and not config.no_flash_attn
        else:
            self.paged = self.paged_option == "true"
        kwargs = {k: v for k, v in self.engine_options.items() if v is not None}
        self.generator = ExLlamaV2DynamicGenerator(model=self.model, cache=self.cache, tokenizer=self.tokenizer,
                                                   paged=self.paged, **kwargs)
        self.capacity = tokens - 1
        self.eos = eos_ids(self.checkpoint)
        self.driver = JobDriver(self.generator, self.generator.reset_page_table, "llmcompare-exllamav2")

    def make_job(self, input_ids: Any, max_new_tokens: int, stop_tokens: list[int] | None) -> Any:
        from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

        return ExLlamaV2DynamicJob(input_ids=input_ids, max_new_tokens=max_new_tokens, min_new_tokens=0,
                                   gen_settings=ExLlamaV2Sampler.Settings.greedy(), stop_conditions=stop_tokens,
                                   banned_strings=None, filters=None, token_healing=False)

    def engine_version(self) -> dict[str, str]:
        import exllamav2

        from llmcompare.models.quantize import describe_checkpoint

        v = {"exllamav2": str(exllamav2.__version__), **self.torch_versions(),
             "exllamav2_checkpoint": describe_checkpoint(self.checkpoint), "exllamav2_paged": str(self.paged).lower(),
             "exllamav2_cache_tokens": str(self.capacity + 1), "exllamav2_attention": self.attention}
        try:
            v["flash_attn"] = importlib.metadata.version("flash-attn")
        except importlib.metadata.PackageNotFoundError:
            pass
        return v

    def free_engine(self) -> None:
        if self.model is not None:
            self.model.unload()
        self.generator = self.cache = self.model = None


OPTIONS = {
    "model_dir": OptionSpec(str, None, "a checkpoint to load as is (its format must be the variant's);"
                                       " default: the model, or its cached conversion"),
    "bits": OptionSpec(float, None, "bits per weight of the conversion recipe (default 4.0)", minimum=1),
    "head_bits": OptionSpec(int, None, "bits per weight of the output layer in the conversion (default 6)", minimum=1),
    "cache_tokens": OptionSpec(int, None, "KV-cache size in tokens, shared by the requests in flight"
                                          " (default: the model's context), rounded up to 256", minimum=1),
    "max_batch_size": OptionSpec(int, None, "most requests batched together (the generator's max_batch_size)",
                                 minimum=1),
    "max_chunk_size": OptionSpec(int, None, "prefill chunk in tokens (the generator's max_chunk_size)", minimum=1),
}


#: How the ExLlamas' CUDA extensions are built where they run (the recipes' build_note).
JIT_NOTE = ("{engine}'s wheel is pure Python: its CUDA extension is built just in time by torch's cpp_extension on"
            " the first import ({seconds} s with 16 jobs on an H200 host), which the environment's import check"
            " does. TORCH_CUDA_ARCH_LIST (9.0 in the recipe: H100, H200) must be the same when the engine runs,"
            " or the extension builds again inside the first run's load; set it for another GPU")


@hookimpl
def register_backends(register):
    register(
        BackendSpec(
            name="exllamav2",
            target="llmcompare.backends.exllamav2:ExLlamaV2Backend",
            install="pip install 'llmcompare[exllamav2]'",
            requires=("exllamav2", "torch"),
            variants=VARIANTS,
            default_variant="fp16",
            weight_dtypes={"fp16": "fp16", "gptq": "int4", "exl2": "int4"},  # at the recipes' 4 bits
            options={**OPTIONS, "paged": OptionSpec(str, "auto", "paged attention (batching; needs flash-attn"
                                                                  " >= 2.5.7); auto: when installed",
                                                    ("auto", "true", "false"))},
            capabilities=Capabilities(accepts_token_ids=True, concurrent=True, devices=("cuda",), in_process=True,
                                      model_formats=("hf", "synthetic"), prefix_cache="reset", natural_stop=True),
            description="ExLlamaV2 dynamic generator (fp16, GPTQ, EXL2); page table reset whenever it drains.",
            distributions=("exllamav2", "flash-attn"),
            environments={"cuda": EnvRecipe(
                extra="exllamav2", check_module="exllamav2", engine_distribution="exllamav2",
                requirements=("exllamav2==0.3.2",), build_env=(("TORCH_CUDA_ARCH_LIST", "9.0"), ("MAX_JOBS", "16")),
                build_needs=("nvcc", "ninja"),
                note="ExLlamaV2 on CUDA (fp16, GPTQ, EXL2)",
                build_note=JIT_NOTE.format(engine="ExLlamaV2", seconds="about 90"))},
        )
    )

