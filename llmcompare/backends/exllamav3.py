"""ExLlamaV3 in process: EXL3 checkpoints (and unquantized fp16 ones), through its paged generator.

Checkpoints:

* ``exllamav3:exl3`` (default): EXL3 at ``-o exllamav3.bits=`` bits per weight (4.0 by default), made
  from the fp16 checkpoint by exllamav3's own converter (:class:`~llmcompare.models.quantize.EXL3Recipe`),
  cached; or ``-o exllamav3.model_dir=DIR``, or a model directory that already holds EXL3.
* ``exllamav3:fp16``: the unquantized safetensors, which ExLlamaV3 also runs.

Engine, as exllamav3 1.6.5 documents it: ``Config.from_directory(dir)`` → ``Model.from_config(config)``
→ ``Cache(model, max_num_tokens=cache_tokens)`` (before loading: the model allocates the cache's
tensors when it loads) → ``model.load()`` → ``Tokenizer.from_config(config)`` →
``Generator(model, cache, tokenizer, cpu_cache_size=0, disk_cache_dir=None)``. The generator pages
its cache and batches requests itself (no flash-attn needed).

Fairness, as for ExLlamaV2 (:mod:`llmcompare.backends.exllamav2`, whose :class:`JobDriver` this
adapter shares):

* greedy: ``Job(..., sampler=ArgmaxSampler())`` (a job without a sampler gets ``DefaultSampler``:
  min-p 0.08, temperature 0.8, sampled);
* exactly N: ``max_new_tokens=N``, ``min_new_tokens=0``, ``stop_conditions=None``, no banned strings,
  filters, loop detection or drafting (``stop_at_eos``: the checkpoint's EOS ids are the only stop
  conditions, as for ExLlamaV2). The generator caps ``max_new_tokens`` at what the cache has
  room for (cache tokens − prompt − 1): a request that would be cut is refused before it is sent;
* prefix cache: the page table reuses complete pages by content hash across requests, and the
  generator has two more tiers (pinned CPU memory, disk), both off by default and passed off
  explicitly here (no option reaches them). The page table is reset whenever the generator
  drains (``generator.pagetable.reset_page_table()``), as for ExLlamaV2; the engine's
  ``cached_tokens`` per request is summed in ``JobDriver.cached_tokens``.

Its CUDA extension also builds just in time on first import, then loads from torch's extension cache.
"""

from __future__ import annotations

from typing import Any

from llmcompare import hookimpl
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, EnvRecipe
from llmcompare.backends.exllamav2 import JIT_NOTE, OPTIONS, DynamicGeneratorBackend, JobDriver, eos_ids
from llmcompare.models.quantize import EXL3Recipe

VARIANTS = {
    "exl3": "EXL3 at -o bits= bits per weight, default 4.0 (exllamav3's converter, cached; or -o model_dir=)",
    "fp16": "the model's unquantized safetensors, run in fp16",
}


class ExLlamaV3Backend(DynamicGeneratorBackend):

    engine_name = "ExLlamaV3"
    backend_name = "exllamav3"
    default_variant = "exl3"
    recipes = {"exl3": EXL3Recipe, "fp16": None}

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self.model = None
        self.cache = None
        self.generator = None

    def load(self) -> None:
        self.checkpoint = self.checkpoint_dir()
        from exllamav3 import Cache, Config, Generator, Model, Tokenizer

        config = Config.from_directory(self.checkpoint)
        self.model = Model.from_config(config)
        tokens = self.cache_size(config.max_position_embeddings)
        self.cache = Cache(self.model, max_num_tokens=tokens)
        self.model.load(progressbar=False)
        self.tokenizer = Tokenizer.from_config(config)
        kwargs = {k: v for k, v in self.engine_options.items() if v is not None}
        self.generator = Generator(model=self.model, cache=self.cache, tokenizer=self.tokenizer,
                                   cpu_cache_size=0, disk_cache_dir=None, **kwargs)
        self.capacity = tokens - 1
        self.eos = eos_ids(self.checkpoint)
        self.driver = JobDriver(self.generator, self.generator.pagetable.reset_page_table, "llmcompare-exllamav3")

    def make_job(self, input_ids: Any, max_new_tokens: int, stop_tokens: list[int] | None) -> Any:
        from exllamav3 import ArgmaxSampler, Job

        return Job(input_ids=input_ids, max_new_tokens=max_new_tokens, min_new_tokens=0, sampler=ArgmaxSampler(),
                   stop_conditions=stop_tokens, banned_strings=None, filters=None, token_healing=False,
                   stop_on_loop=None)

    def engine_version(self) -> dict[str, str]:
        import importlib.metadata

        import exllamav3

        from llmcompare.models.quantize import describe_checkpoint

        # exllamav3 1.6.5 has no __version__ attribute (seen on the H200): then its distribution's version
        version = getattr(exllamav3, "__version__", None) or importlib.metadata.version("exllamav3")
        return {"exllamav3": str(version), **self.torch_versions(),
                "exllamav3_checkpoint": describe_checkpoint(self.checkpoint),
                "exllamav3_cache_tokens": str(self.capacity + 1)}

    def free_engine(self) -> None:
        if self.generator is not None:
            self.generator.close()  # its host buffers and thread pool; the model stays ours to unload
        if self.model is not None:
            self.model.unload()
        self.generator = self.cache = self.model = None


@hookimpl
def register_backends(register):
    register(
        BackendSpec(
            name="exllamav3",
            target="llmcompare.backends.exllamav3:ExLlamaV3Backend",
            install="pip install 'llmcompare[exllamav3]'",
            requires=("exllamav3", "torch"),
            variants=VARIANTS,
            default_variant="exl3",
            weight_dtypes={"fp16": "fp16", "exl3": "int4"},  # EXL3 at the recipe's 4 bits
            options=OPTIONS,
            capabilities=Capabilities(accepts_token_ids=True, concurrent=True, devices=("cuda",), in_process=True,
                                      model_formats=("hf", "synthetic"), prefix_cache="reset", natural_stop=True),
            description="ExLlamaV3 generator (EXL3, fp16); page table reset whenever it drains, CPU/disk tiers off.",
            distributions=("exllamav3",),
            environments={"cuda": EnvRecipe(
                extra="exllamav3", check_module="exllamav3", engine_distribution="exllamav3",
                requirements=("exllamav3==1.6.5",), build_env=(("TORCH_CUDA_ARCH_LIST", "9.0"), ("MAX_JOBS", "16")),
                build_needs=("nvcc", "ninja"),
                note="ExLlamaV3 on CUDA (EXL3, fp16)",
                build_note=JIT_NOTE.format(engine="ExLlamaV3", seconds="a few hundred"))},
        )
    )
