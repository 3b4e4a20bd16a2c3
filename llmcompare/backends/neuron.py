"""AWS Inferentia2 / Trainium through optimum-neuron's ``NeuronModelForCausalLM`` (static shapes).

* Compile: ``NeuronModelForCausalLM.get_neuron_config(DIR, batch_size=, sequence_length=,
  tensor_parallel_size=, instance_type=)`` → ``export(DIR, neuron_config, load_weights=True)`` →
  ``save_pretrained``, cached by :func:`llmcompare.models.cached_build` under a key made of the
  model's fingerprint, the compiled shapes and target, and the Neuron package versions; later runs
  ``from_pretrained`` the artifact. A directory that already holds ``neuron_config.json`` (a compiled
  model) is loaded as is, and its shapes must match what the run asks for.
* Shapes are static. The variants are the seed study's Inferentia2 configurations, all with sequence
  length 2048: ``budget`` (inf2.xlarge: 1 device, 2 NeuronCores, batch 1), ``latency`` (24 cores of
  inf2.48xlarge, batch 1) and ``throughput`` (24 cores, batch 4); ``-o batch_size``,
  ``-o sequence_length`` and ``-o tensor_parallel_size`` override them. Impossible shapes are refused
  before anything compiles: :meth:`NeuronBackend.validate_workload` (prompt + N must fit the
  sequence length) needs no engine, and ``load`` checks the sequence length against the model's
  positions first.
* Greedy and forced length: Llama-family models compile with on-device sampling, which skips
  transformers' logits processors, so ``min_new_tokens`` is not honoured. The adapter passes an
  explicit ``GenerationConfig(do_sample=False, max_new_tokens=N, eos_token_id=<vocab_size>)``: an id
  the model cannot produce, so nothing stops generation before N. The count is still checked: a
  request that ends short reports ``finish_reason="stop"`` and the driver flags it.
* Per-token times: there is no streamer. A ``StoppingCriteria`` that never stops is called by
  ``generate`` after every step (the prefill's first token, then each decode step) with the ids so
  far, already on the host; it timestamps the step. **Untested on Inferentia hardware**: it relies on
  optimum-neuron's ``_sample`` loop calling the criteria once per step, as its source does.
* Concurrency: one thread runs ``generate`` on up to ``batch_size`` waiting requests at once (static
  batching, right-padded, as optimum-neuron requires); each request gets its own tokens as the
  steps complete. A batch runs until its longest request is done; later requests wait for the next
  batch. ``generate`` resets the KV cache on every call, so there is no prefix cache.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import json
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcompare import hookimpl
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, Chunk, OptionSpec, clock
from llmcompare.errors import RequestFailed, UserError

SHAPES: dict[str, dict[str, int]] = {
    "budget": {"batch_size": 1, "sequence_length": 2048, "tensor_parallel_size": 2},
    "latency": {"batch_size": 1, "sequence_length": 2048, "tensor_parallel_size": 24},
    "throughput": {"batch_size": 4, "sequence_length": 2048, "tensor_parallel_size": 24},
}
VARIANTS = {
    "budget": "inf2.xlarge: 1 Inferentia2 device (2 NeuronCores), batch 1, sequence length 2048",
    "latency": "inf2.48xlarge: 24 NeuronCores, batch 1, sequence length 2048",
    "throughput": "inf2.48xlarge: 24 NeuronCores, batch 4, sequence length 2048",
}
NEURON_DISTRIBUTIONS = ("optimum-neuron", "neuronx-cc", "torch-neuronx", "neuronx-distributed", "libneuronxla")
INSTALL = "pip install 'llmcompare[neuron]' --extra-index-url https://pip.repos.neuron.amazonaws.com"


class NeuronBackend:

    def __init__(self, config: BackendConfig):
        self.config = config
        opts = dict(config.options)
        shape = dict(SHAPES[config.variant or "budget"])
        shape.update({k: int(opts[k]) for k in shape if opts.get(k) is not None})
        self.batch_size = shape["batch_size"]
        self.sequence_length = shape["sequence_length"]
        self.tensor_parallel_size = shape["tensor_parallel_size"]
        self.instance_type: str | None = opts.get("instance_type")
        self.model = None
        self._batcher: StaticBatcher | None = None
        self._tokenizer = None

    # ---- shape checks, before anything compiles ----
    def validate_workload(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Raise :class:`UserError` if a request of this size cannot run on the compiled shapes.

        Needs no engine: call it before :meth:`load`, with the longest prompt and output of the run.
        Concurrency needs no check: requests beyond ``batch_size`` wait for the next batch."""
        need = int(prompt_tokens) + int(max_new_tokens)
        if need > self.sequence_length:
            raise UserError(
                f"backend 'neuron' compiles for sequence_length={self.sequence_length}, but a request needs "
                f"{prompt_tokens} prompt + {max_new_tokens} new = {need} positions; raise it with "
                f"-o neuron.sequence_length={need} (or more), or shorten the prompts or --max-new-tokens"
            )

    def _check_model(self, src: str) -> dict[str, Any] | None:
        """Check the model directory against the asked shapes; return its compiled shapes, if any."""
        config_path = Path(src, "config.json")
        if not config_path.is_file():
            raise UserError(f"backend 'neuron' compiles a local HF model directory, not {src!r}")
        positions = json.loads(config_path.read_text()).get("max_position_embeddings")
        if positions is not None and self.sequence_length > int(positions):
            raise UserError(f"backend 'neuron': sequence_length={self.sequence_length} exceeds the model's "
                            f"max_position_embeddings={positions}; lower -o neuron.sequence_length")
        compiled_path = Path(src, "neuron_config.json")
        if not compiled_path.is_file():
            return None
        compiled = json.loads(compiled_path.read_text())
        asked = {"batch_size": self.batch_size, "sequence_length": self.sequence_length,
                 "tp_degree": self.tensor_parallel_size}
        differ = {k: compiled.get(k) for k, v in asked.items() if compiled.get(k) != v}
        if differ:
            got = ", ".join(f"{k}={v}" for k, v in differ.items())
            raise UserError(f"the compiled model in {src} has {got}, not what this run asks for; pass -o options"
                            " (batch_size, sequence_length, tensor_parallel_size) that match it")
        return compiled

    # ---- load ----
    def load(self) -> None:
        src = self.config.model.hf_dir()
        compiled = self._check_model(src)
        from optimum.neuron import NeuronModelForCausalLM

        if compiled is not None:
            self.model = NeuronModelForCausalLM.from_pretrained(src)
        else:
            self.model = self._compile(NeuronModelForCausalLM, src)
        nc = self.model.neuron_config
        self.batch_size, self.sequence_length = int(nc.batch_size), int(nc.sequence_length)
        never = int(self.model.config.vocab_size)  # logits cover ids < vocab_size: this one is never produced
        pad = getattr(self.model.config, "pad_token_id", None)
        self._batcher = StaticBatcher(self.model, self.batch_size, never_id=never,
                                      pad_id=0 if pad is None else int(pad))

    def _compile(self, model_class: Any, src: str) -> Any:
        from llmcompare.models import cached_build, fingerprint

        neuron_config = model_class.get_neuron_config(
            src, batch_size=self.batch_size, sequence_length=self.sequence_length,
            tensor_parallel_size=self.tensor_parallel_size, instance_type=self.instance_type,
        )
        key = {
            "neuron_from_hf": fingerprint(src), "batch_size": neuron_config.batch_size,
            "sequence_length": neuron_config.sequence_length, "tp_degree": neuron_config.tp_degree,
            "target": neuron_config.target, "dtype": str(neuron_config.torch_dtype),
            "prefill_chunk_size": getattr(neuron_config, "prefill_chunk_size", 0), "versions": _neuron_versions(),
        }
        exported: dict[str, Any] = {}

        def build(out: Path) -> None:
            model = model_class.export(src, neuron_config, load_weights=True)
            model.save_pretrained(str(out))
            exported["model"] = model

        path = cached_build("neuron", key, build)
        return exported.get("model") or model_class.from_pretrained(str(path))

    # ---- requests ----
    async def astream(self, prompt: Sequence[int], max_new_tokens: int) -> AsyncIterator[Chunk]:
        ids = [int(t) for t in prompt]
        if len(ids) + max_new_tokens > self.sequence_length:
            raise RequestFailed("client_error", f"{len(ids)} prompt + {max_new_tokens} new tokens exceed the compiled "
                                                f"sequence_length={self.sequence_length}")
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        self._batcher.submit(BatchRequest(ids, max_new_tokens, _deliverer(loop, items)))
        got = 0
        while True:
            item = await items.get()
            if isinstance(item, BaseException):
                raise RequestFailed("engine", f"Neuron: {type(item).__name__}: {item}") from item
            if item[0] == "end":  # the batch ended before this request had its N tokens
                yield Chunk([], clock(), finish_reason="stop", prompt_tokens=len(ids))
                return
            _, token, t = item
            got += 1
            if got == max_new_tokens:
                yield Chunk([token], t, finish_reason="length", prompt_tokens=len(ids))
                return
            yield Chunk([token], t)

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            self._tokenizer = self.config.model.tokenizer(trust_remote_code=self.config.trust_remote_code)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def engine_version(self) -> dict[str, str]:
        versions = _neuron_versions()
        nc = self.model.neuron_config
        versions["neuron_compiled"] = (f"batch={nc.batch_size} sequence_length={nc.sequence_length} "
                                       f"tp={nc.tp_degree} target={nc.target}")
        return versions

    def unload(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
        self._batcher = None
        self.model = None
        gc.collect()


@dataclass
class BatchRequest:
    ids: list[int]
    max_new_tokens: int
    deliver: Callable[[Any], None]
    """Hands ``("token", id, time)``, ``("end",)`` or an exception to the waiting ``astream``."""
    sent: int = 0


class StaticBatcher:
    """One thread that runs ``model.generate`` on up to ``batch_size`` waiting requests at a time."""

    def __init__(self, model: Any, batch_size: int, *, never_id: int, pad_id: int):
        self.model = model
        self.batch_size = batch_size
        self.never_id = never_id
        self.pad_id = pad_id
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="llmcompare-neuron", daemon=True)
        self.thread.start()

    def submit(self, request: BatchRequest) -> None:
        self.queue.put(request)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.batch_size:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            try:
                self.generate(batch)
            except Exception as exc:
                for request in batch:
                    request.deliver(exc)

    def generate(self, batch: list[BatchRequest]) -> None:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        width = max(len(r.ids) for r in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, request in enumerate(batch):
            input_ids[row, :len(request.ids)] = torch.tensor(request.ids, dtype=torch.long)
            attention_mask[row, :len(request.ids)] = 1

        def on_step(column: list[int], t: float) -> None:
            for row, request in enumerate(batch):
                if request.sent < request.max_new_tokens:
                    request.sent += 1
                    request.deliver(("token", int(column[row]), t))

        config = GenerationConfig(max_new_tokens=max(r.max_new_tokens for r in batch), do_sample=False, num_beams=1,
                                  eos_token_id=self.never_id, pad_token_id=self.pad_id)
        self.model.generate(input_ids, attention_mask=attention_mask, generation_config=config,
                            stopping_criteria=StoppingCriteriaList([step_clock(on_step)]))
        for request in batch:
            if request.sent < request.max_new_tokens:
                request.deliver(("end",))


def step_clock(on_step: Callable[[list[int], float], None]) -> Any:
    """A ``StoppingCriteria`` that never stops: after each step it hands the step's tokens (the last
    column of the ids, already on the host) and a :data:`clock` reading to ``on_step``."""
    import torch
    from transformers import StoppingCriteria

    class StepClock(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            column = input_ids[:, -1].tolist()
            on_step(column, clock())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StepClock()


def _deliverer(loop: asyncio.AbstractEventLoop, items: asyncio.Queue) -> Callable[[Any], None]:
    def deliver(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(items.put_nowait, item)
        except RuntimeError:  # the caller's loop has closed: nobody is waiting for this request any more
            pass

    return deliver


def _neuron_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in NEURON_DISTRIBUTIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    if "optimum-neuron" not in out:
        from optimum.neuron.version import __version__

        out["optimum-neuron"] = __version__
    return out


@hookimpl
def register_backends(register):
    register(
        BackendSpec(
            name="neuron",
            target="llmcompare.backends.neuron:NeuronBackend",
            install=INSTALL,
            requires=("optimum.neuron", "transformers", "torch"),
            variants=VARIANTS,
            default_variant="budget",
            options={
                "batch_size": OptionSpec(int, None, "compiled (static) batch size; overrides the variant", minimum=1),
                "sequence_length": OptionSpec(int, None, "compiled prompt + output length; overrides the variant",
                                              minimum=2),
                "tensor_parallel_size": OptionSpec(int, None, "NeuronCores to shard over; overrides the variant",
                                                   minimum=1),
                "instance_type": OptionSpec(str, None, "compilation target (default: this machine's)",
                                            ("inf2", "trn1", "trn1n", "trn2")),
            },
            capabilities=Capabilities(accepts_token_ids=True, concurrent=True, devices=("neuron",), in_process=True,
                                      model_formats=("hf",), prefix_cache="none"),
            description="optimum-neuron NeuronModelForCausalLM on Inferentia2/Trainium; compiled once, cached.",
            distributions=NEURON_DISTRIBUTIONS,
        )
    )
