"""What llmcompare reads from a server it does not control, bounded: every limit once, with its reason.

A benchmark client talks to servers that may be broken, misconfigured or hostile. Whatever such a
server sends (a count, a token id, a line, a body, a text) is *evidence*: it is checked for type and
range before use, and nothing it sends decides how much memory or time llmcompare spends. The HTTP
adapters (``backends/http_transport.py`` and the backends on it, ``backends/sagemaker.py``) read
these bounds from here and nowhere else; ``docs/load.md`` ("Servers you do not control") lists
them for users.

Failures these bounds raise are :class:`~llmcompare.errors.RequestFailed` kinds: ``overrun`` (the
server sent more than the request can produce: tokens beyond the forced length and its slack, or
more bytes than that many tokens can take), ``malformed`` (a line or event beyond its bound, a
number that is not a count), and the timeouts.
"""

from __future__ import annotations

import json
import math
from typing import Any

from llmcompare.errors import RequestFailed

# ---- tokens --------------------------------------------------------------------------------------

TOKEN_SLACK = 8
"""Tokens read beyond the forced length ``N`` before a request is cut and fails as ``overrun``.

Why a slack at all: a few extra tokens are a length mismatch worth *seeing* (the record keeps them,
flagged, and throughput counts at most ``N``), not a reason to drop the request. Why small: a server
that ignores ``max_tokens`` would otherwise be read until the total timeout (one ``-n 8`` request
once kept 4.9 M tokens in 15 s), and every token costs a timestamp in memory and on disk."""


def token_cap(n: int) -> int:
    """The most tokens one request asking for ``n`` may bring before it fails as ``overrun``."""
    return max(0, int(n)) + TOKEN_SLACK


MAX_COUNT = 2**31 - 1
"""The largest count (prompt or output tokens) a server may state: no context window comes near
it, and a larger figure is a broken or hostile server (``10**400`` once raised OverflowError)."""

MAX_TOKEN_ID = 2**31 - 1
"""The largest token id accepted (vocabularies are below 2**18; ids are stored as JSON numbers)."""

# ---- bytes ---------------------------------------------------------------------------------------

MAX_EVENT_BYTES = 1024 * 1024
"""One server-sent event (or one JSON line): 1 MiB. A vLLM chunk with ids is about 300 bytes, one
with 20 top log-probabilities for several tokens a few tens of KB; an event that long is a server
that never ends its line, and the parser would otherwise buffer it whole."""

STREAM_BYTES_BASE = 1024 * 1024
STREAM_BYTES_PER_TOKEN = 16 * 1024
"""A streamed answer asking for ``N`` tokens may take ``STREAM_BYTES_BASE + N * STREAM_BYTES_PER_TOKEN``
bytes (after decompression), then fails as ``overrun``. Keep-alive comments and events without
tokens carry no token, so the token cap alone would let a server flood a request until its total
timeout; 16 KiB a token is fifty times what the chattiest server we know sends with ids."""


def stream_byte_budget(n: int) -> int:
    """Bytes one streamed request asking for ``n`` tokens may read (decompressed)."""
    return STREAM_BYTES_BASE + token_cap(n) * STREAM_BYTES_PER_TOKEN


MAX_ERROR_BODY_BYTES = 64 * 1024
"""What is read of an error answer (4xx/5xx body) after decompression: 64 KiB. The message keeps
its first :data:`MAX_ERROR_TEXT` characters; reading on would only cost memory (a 500 whose gzip
body inflates to 1 GiB once took the process to 2.2 GB)."""

MAX_ERROR_TEXT = 2000
"""Characters of an error body or error event kept in a failure's message."""

MAX_JSON_BODY_BYTES = 4 * 1024 * 1024
"""A JSON document read whole (``GET /models``, ``/version``, TGI's ``/info``), decompressed: 4 MiB,
room for thousands of model entries."""

# ---- text ----------------------------------------------------------------------------------------

MAX_SERVER_TEXT = 200
"""Characters kept of a short string a server names itself with (``owned_by``, a version, a model
id, a device): enough for any real one, and it ends up in ``engine_version()`` and reports."""

MAX_FINISH_REASON = 64
"""Characters kept of a ``finish_reason`` (``length``, ``stop``, ``eos_token``...)."""

# ---- time ----------------------------------------------------------------------------------------

PROBE_FIRST_TOKEN_S = 300.0
"""The probe's first-token limit when ``first_token_timeout_s`` is 0 (none): a cold server may
compile or load for minutes before its first token, but ``load()`` must not wait forever."""

PROBE_TAIL_S = 120.0
"""The probe (a few tokens) must end within its first-token limit plus this, and within
``total_timeout_s`` where that is set: so an endless or trickling stream during ``load()`` is a
one-line error after minutes, not a silent hour (``total_timeout_s`` defaults to 3600 s)."""

GET_TIMEOUT_S = 60.0
"""A ``GET`` of a small JSON document (model list, version, info) when the first-token and connect
timeouts are both 0."""

MAX_REDIRECTS = 5
"""Redirects followed with ``follow_redirects=true`` (off by default: a 3xx is a ``redirect`` failure)."""


# ---- careless input: what a user asks for, bounded ------------------------------------------------
# The same rule for the user's own input: a flag, a file or a level that would take llmcompare's
# memory, time or file descriptors beyond reason is refused up front with a one-line error naming it
# (docs/load.md, "Careless input"), never found out as a MemoryError or a hang half-way through a run.

MAX_FAILED_SHARE = 0.5
"""A load level (or its warm-up wave) whose failed requests are more than this share of its requests
is marked failed, says why in every report, and makes the command exit 1: figures of a level that
mostly failed describe the failures, not the server (``-c 100000`` once reported 0 errors and exit 0
after every warm-up request hit "Too many open files"). Half: a level that loses more requests than
it serves is not a measurement of serving, whatever its few successes show."""

MAX_LEVEL_REQUESTS = 200_000
"""Requests one load level may schedule (``--rate × --duration``, ``--requests``, ``--warmup``).
An open-loop level creates a task per scheduled request as fast as the schedule says, and every
measured request's record stays in the worker's memory until the level ends (about 5 KB at 64
tokens): ``--rate 1e9 --duration 1`` once filled memory and filed the MemoryErrors as ``connect``
failures. 200,000 is about 1 GB at most, and an hour at 55 requests per second."""

OPEN_FILES_RESERVE = 256
"""File descriptors a worker needs beside one socket per request in flight (the interpreter, the
engine's libraries, the run's files, a managed server's pipes)."""

MAX_PROMPT_FILE_BYTES = 64 * 1024 * 1024
"""The largest prompt file read (``--prompts``): 64 MiB is hundreds of thousands of prompts; the file
is read whole and tokenized, so ``-p /dev/zero`` once ended in a MemoryError. Non-regular files
(a FIFO, a device, a directory) are refused outright: reading a FIFO waits for a writer forever."""


def open_files_needed(in_flight: int) -> int:
    """File descriptors a process keeping ``in_flight`` requests open over HTTP needs."""
    return max(0, int(in_flight)) + OPEN_FILES_RESERVE


def ensure_open_files(needed: int) -> tuple[bool, int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` towards its hard limit when ``needed`` is above it
    (children inherit it). Returns whether ``needed`` now fits, and the soft and hard limits. Never
    raises: a platform without ``resource`` reports that it fits."""
    try:
        import resource
    except ImportError:
        return True, needed, needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = hard if hard != resource.RLIM_INFINITY else max(needed, soft)
    if soft != resource.RLIM_INFINITY and needed > soft and soft < cap:
        target = cap if needed > cap else max(needed, soft)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    fits = soft == resource.RLIM_INFINITY or needed <= soft
    return fits, soft, hard


# ---- checks --------------------------------------------------------------------------------------

def count_value(value: Any, what: str, upper: int = MAX_COUNT) -> int | None:
    """A count a server sent, checked: None stays None (not given); an ``int`` (not a ``bool``) in
    ``[0, MAX_COUNT]`` is returned; anything else is ``malformed``. Counts above ``upper`` but within
    ``MAX_COUNT`` are ``overrun``: the server says it produced more than the request may."""
    if value is None:
        return None
    if type(value) is not int:
        shown = "a non-finite number" if isinstance(value, float) and not math.isfinite(value) else repr(value)[:40]
        raise RequestFailed("malformed", f"{what} is not a count: {shown}")
    if value < 0 or value > MAX_COUNT:
        raise RequestFailed("malformed", f"{what} is not a count: {_short_int(value)}")
    if value > upper:
        raise RequestFailed("overrun", f"{what} says {value} tokens, more than the {upper} this request may read")
    return value


def token_id(value: Any, what: str = "a token id") -> int:
    """One token id a server sent: an ``int`` (not a ``bool``) in ``[0, MAX_TOKEN_ID]``, else ``malformed``."""
    if type(value) is not int or not 0 <= value <= MAX_TOKEN_ID:
        shown = _short_int(value) if type(value) is int else repr(value)[:40]
        raise RequestFailed("malformed", f"{what} that is not a token id: {shown}")
    return value


def _short_int(value: int) -> str:
    if -10**12 < value < 10**12:
        return str(value)
    return f"{'-' if value < 0 else ''}an integer of {len(str(abs(value))) if value.bit_length() < 14000 else 'thousands of'} digits"


def safe_text(value: Any, limit: int) -> str:
    """A string a server sent, made safe to keep: valid UTF-8 (lone surrogates, which valid JSON can
    carry as ``"\\ud800"``, become U+FFFD) and at most ``limit`` characters (cut with ``…``). A value
    that is not a string is shown as its ``repr``, under the same bounds."""
    if not isinstance(value, str):
        value = repr(value) if not isinstance(value, (bytes, bytearray)) else bytes(value[: limit * 4]).decode("utf-8", "replace")
    if len(value) > limit:
        value = value[: max(0, limit - 1)] + "…"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        # a pair split by the cut above, or a high surrogate followed by a low one, is one character now
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def parse_json(data: bytes | str, what: str) -> Any:
    """``json.loads`` of what a server sent, with every way it can fail as ``malformed``: not JSON, not
    UTF-8, an integer of more digits than Python converts, or nesting deeper than the parser recurses."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        shown = bytes(data[:120]) if isinstance(data, (bytes, bytearray)) else data[:120]
        why = "nested too deeply" if isinstance(exc, RecursionError) else "not JSON"
        raise RequestFailed("malformed", f"{what} that is {why}: {safe_text(shown, 160)}") from None
