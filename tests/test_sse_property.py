"""Property tests: whatever bytes a server streams, however the network splits them, the SSE parser
and the chunk handling of the HTTP adapters (OpenAI ``Tally``, TGI ``TGITally``, SageMaker
``StreamParser``) raise nothing but :class:`~llmcompare.errors.RequestFailed`, and what they give back
is valid: ids that are token ids, counts within the request's cap, strings that are valid UTF-8 and
bounded, count checks that serialize.

Inputs: random bytes; random JSON values (deep nesting, integers of hundreds of digits, NaN and
infinities, lone surrogates, every wrong type) placed where an event's fields go; events that are
almost right. Each property runs a bounded number of examples (the whole file takes well under 20 s).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llmcompare import limits
from llmcompare.backends.http_transport import SSEParser
from llmcompare.backends.openai_stream import Tally
from llmcompare.backends.sagemaker import StreamParser
from llmcompare.backends.tgi import TGITally
from llmcompare.errors import RequestFailed

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
N = 8
CAP = limits.token_cap(N)

KEYS = ["choices", "usage", "token_ids", "tokens", "text", "delta", "content", "finish_reason", "logprobs",
        "completion_tokens", "prompt_tokens", "error", "code", "token", "id", "details", "generated_tokens",
        "input_length", "error_type", "index", "special"]

any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()),
                   max_size=12)
numbers = st.one_of(st.integers(min_value=-10, max_value=40), st.integers(), st.sampled_from([10**400, -10**400,
                    2**31, 2**63]), st.floats(allow_nan=True, allow_infinity=True), st.booleans())
scalars = st.one_of(st.none(), numbers, any_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), any_text), inner, max_size=4)),
    max_leaves=10)


def _deep(depth: int) -> bytes:
    return b'{"choices": ' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def openai_events(draw) -> bytes:
    """One event's payload: a completion chunk with one field (or none) replaced by a random value,
    or noise: random bytes, nesting deeper than the parser recurses, ``[DONE]``."""
    kind = draw(st.integers(0, 11))
    if kind == 0:
        return draw(st.binary(max_size=60))
    if kind == 1:
        return _deep(draw(st.sampled_from([10, 200, 5000, 100000])))
    if kind == 2:
        return b"[DONE]"
    choice: dict = {"index": 0, "text": "a", "finish_reason": None}
    if draw(st.booleans()):
        choice["token_ids"] = draw(st.lists(st.integers(0, 100), min_size=1, max_size=3))
    if draw(st.integers(0, 3)) == 0:
        choice["logprobs"] = {"tokens": ["a"] * draw(st.integers(0, 3)), "content": [{}]}
    if draw(st.integers(0, 4)) == 0:
        choice["finish_reason"] = "length"
    choice["delta"] = {"content": "a"}
    event: dict = {"choices": [choice]}
    if draw(st.integers(0, 4)) == 0:
        event = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": draw(st.integers(0, 20))}}
    where = draw(st.sampled_from(["none", "none", "text", "token_ids", "tokens", "finish_reason", "delta", "logprobs",
                                  "choices", "usage", "completion_tokens", "error", "choice"]))
    value = draw(json_values)
    if where in ("text", "token_ids", "tokens", "finish_reason", "delta", "logprobs") and event["choices"]:
        choice[where] = value
    elif where == "choice" and event["choices"]:
        event["choices"] = [value]
    elif where in ("choices", "usage", "error"):
        event[where] = value
    elif where == "completion_tokens":
        event["usage"] = {"prompt_tokens": draw(json_values), "completion_tokens": value}
    try:
        return json.dumps(event, allow_nan=True).encode()
    except (ValueError, RecursionError):  # an integer of more digits than str() converts
        return b'{"choices": []}'


@st.composite
def tgi_events(draw) -> bytes:
    if draw(st.integers(0, 6)) == 0:
        return draw(st.binary(max_size=60))
    if draw(st.integers(0, 2)):
        token = {"id": draw(st.integers(0, 50)), "text": "a"}
    else:
        token = draw(st.one_of(st.fixed_dictionaries({"id": json_values, "text": json_values}), json_values))
    roll = draw(st.integers(0, 9))
    if roll < 6:
        details = None
    elif roll < 8:
        details = {"finish_reason": "length", "generated_tokens": draw(st.integers(0, 12)), "input_length": 3}
    else:
        details = draw(st.one_of(st.fixed_dictionaries({"finish_reason": json_values, "generated_tokens": json_values,
                                                        "input_length": json_values}), json_values))
    event = {"token": token, "details": details}
    if draw(st.integers(0, 5)) == 0:
        event["error"] = draw(json_values)
    try:
        return json.dumps(event, allow_nan=True).encode()
    except (ValueError, RecursionError):
        return b'{"token": {"id": 1}}'


def _stream(payloads: list[bytes], draw_spellings: list[int]) -> bytes:
    out = b""
    for i, p in enumerate(payloads):
        spelling = draw_spellings[i % len(draw_spellings)] if draw_spellings else 0
        sep = [b"\n\n", b"\r\n\r\n", b"\n\n: keep-alive\n\n"][spelling % 3]
        out += (b"data: " if spelling % 2 else b"data:") + p + sep
    return out


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return [p for p in pieces if p]


def _valid_text(value, limit: int) -> None:
    assert isinstance(value, str) and len(value) <= limit
    value.encode("utf-8")


# ---- the SSE parser ------------------------------------------------------------------------------

@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=8))
def test_sse_parser_takes_any_bytes_split_anywhere_and_gives_the_same_events(data, cuts):
    whole = SSEParser()
    expected = whole.feed(data) + whole.flush()
    parser = SSEParser()
    got = []
    for piece in _split(data, cuts):
        got += parser.feed(piece)
    got += parser.flush()
    assert got == expected
    assert all(isinstance(p, bytes) for p in got)


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=6), st.integers(1, 64))
def test_sse_parser_bound_raises_only_request_failed(data, cuts, bound):
    parser = SSEParser(max_event=bound)
    try:
        for piece in _split(data, cuts):
            for payload in parser.feed(piece):
                assert len(payload) <= bound
        parser.flush()
    except RequestFailed as exc:
        assert exc.kind == "malformed"


# ---- OpenAI chunks -------------------------------------------------------------------------------

@SETTINGS
@given(st.lists(openai_events(), min_size=1, max_size=6), st.lists(st.integers(0, 5), max_size=4),
       st.lists(st.integers(min_value=0), max_size=8), st.booleans())
def test_openai_chunk_handling_raises_only_request_failed_and_yields_valid_chunks(events, spellings, cuts, chat):
    parser = SSEParser()
    tally = Tally(chat=chat, cap=CAP)
    ids, n_tokens = [], None
    try:
        for piece in _split(_stream(events, spellings), cuts):
            ids, n_text = tally.take(parser.feed(piece))
            assert all(type(t) is int and 0 <= t <= limits.MAX_TOKEN_ID for t in ids)
            assert type(n_text) is int and n_text >= 0
            n_tokens = len(ids) + n_text if n_text else None
            tally.add(len(ids) + n_text)
            assert tally.counted <= CAP
            if tally.finish is not None:
                _valid_text(tally.finish, limits.MAX_FINISH_REASON)
            if tally.done:
                break
        for text in tally.texts:
            text.encode("utf-8")
        if tally.usage is not None:
            assert all(v is None or (type(v) is int and 0 <= v <= limits.MAX_COUNT) for v in tally.usage.values())
        chunk = tally.closing(ids, 0.0, n_tokens, N, probe=False, count_text=lambda s: len(s.encode("utf-8")))
    except RequestFailed as exc:
        assert exc.kind in RequestFailed.KINDS
        str(exc).encode("utf-8")
        event(f"failed: {exc.kind}")
        return
    event(f"closed: {chunk.count_source}, {chunk.count_check['verdict']}")
    assert chunk.count <= CAP and tally.counted + chunk.count - len(ids) <= CAP + N
    assert chunk.engine_output_tokens is None or 0 <= chunk.engine_output_tokens <= CAP
    assert chunk.count_check is not None and chunk.count_check["verdict"] in ("agree", "disagree")
    json.dumps(chunk.count_check)


# ---- TGI and SageMaker ---------------------------------------------------------------------------

@SETTINGS
@given(st.lists(tgi_events(), min_size=1, max_size=14), st.lists(st.integers(0, 5), max_size=4),
       st.lists(st.integers(min_value=0), max_size=8))
def test_tgi_event_handling_raises_only_request_failed_and_yields_valid_chunks(events, spellings, cuts):
    parser = SSEParser()
    tally = TGITally(CAP)
    ids: list[int] = []
    try:
        for piece in _split(_stream(events, spellings), cuts):
            ids = tally.take(parser.feed(piece))
            assert all(type(t) is int and 0 <= t <= limits.MAX_TOKEN_ID for t in ids)
            assert tally.total <= CAP
            if tally.details is not None:
                break
        chunk = tally.closing(ids, 0.0)
    except RequestFailed as exc:
        assert exc.kind in RequestFailed.KINDS
        str(exc).encode("utf-8")
        event(f"failed: {exc.kind}")
        return
    event(f"closed: {chunk.count_check['verdict']}")
    assert chunk.engine_output_tokens is None or 0 <= chunk.engine_output_tokens <= CAP
    assert chunk.prompt_tokens is None or 0 <= chunk.prompt_tokens <= limits.MAX_COUNT
    if chunk.finish_reason is not None:
        _valid_text(chunk.finish_reason, limits.MAX_FINISH_REASON)
    json.dumps(chunk.count_check)


@SETTINGS
@given(st.lists(st.one_of(tgi_events(), st.binary(max_size=40)), min_size=1, max_size=12),
       st.lists(st.integers(min_value=0), max_size=8))
def test_sagemaker_stream_parser_raises_only_request_failed(events, cuts):
    parser = StreamParser(cap=CAP)
    data = b"".join((b"data:" + e if i % 2 else e) + b"\n" for i, e in enumerate(events))
    total = 0
    try:
        for piece in _split(data, cuts):
            chunk = parser.feed(piece, 0.0)
            if chunk is not None:
                assert all(type(t) is int and 0 <= t <= limits.MAX_TOKEN_ID for t in chunk.token_ids)
                total += len(chunk.token_ids)
                assert total <= CAP
                if chunk.finish_reason is not None:
                    _valid_text(chunk.finish_reason, limits.MAX_FINISH_REASON)
        parser.close(0.0)
        event("closed")
    except RequestFailed as exc:
        assert exc.kind in RequestFailed.KINDS
        str(exc).encode("utf-8")
        event(f"failed: {exc.kind}")
