"""Prompt sets: built-in, user files, and exact-length synthetic prompts; one tokenizer for all.

Every backend receives the same prompt token ids, produced here once, by the model's own tokenizer.
A prompt file may be JSONL (one object per line with ``text`` or ``prompt``, optional ``id``; or a
bare JSON string), YAML (a list of strings or mappings, or ``{prompts: [...]}``) or plain text (one
prompt per non-empty line; lines starting with ``#`` are comments).
"""

from __future__ import annotations

import importlib.resources
import json
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmcompare.errors import PromptFileError, UserError, did_you_mean
from llmcompare.limits import MAX_PROMPT_FILE_BYTES

BUILTIN_PACKAGE = "llmcompare.prompts"


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    token_ids: tuple[int, ...] = field(default=())
    category: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["token_ids"] = list(self.token_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prompt:
        return cls(d["id"], d["text"], tuple(d.get("token_ids", ())), d.get("category"))


def builtin_sets() -> list[str]:
    files = importlib.resources.files(BUILTIN_PACKAGE).iterdir()
    return sorted(f.name[: -len(".jsonl")] for f in files if f.name.endswith(".jsonl"))


def read_prompts(source: str | None) -> list[Prompt]:
    """Read prompt texts (not yet tokenized) from a built-in set name or a file."""
    source = source or "default"
    path = Path(source).expanduser()
    if not path.exists():
        if "/" not in source and "." not in source:
            sets = builtin_sets()
            if source in sets:
                res = importlib.resources.files(BUILTIN_PACKAGE) / f"{source}.jsonl"
                return _parse_jsonl(res.read_text(encoding="utf-8"), f"<built-in {source}>")
            raise UserError(
                f"unknown prompt set {source!r}{did_you_mean(source, sets)} (built-in sets: {', '.join(sets)};"
                " or pass a .jsonl, .yaml or .txt file)"
            )
        raise PromptFileError(source, None, "no such prompt file")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise PromptFileError(source, None, f"cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise PromptFileError(source, None, "is a directory; pass a .jsonl, .yaml or .txt file or a built-in set name")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise PromptFileError(source, None, f"is {kind}, not a regular file; pass a .jsonl, .yaml or .txt file")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise PromptFileError(source, None, f"is {path.stat().st_size / 2**20:,.0f} MiB, more than the"
                                            f" {MAX_PROMPT_FILE_BYTES / 2**20:,.0f} MiB a prompt file may be"
                                            " (llmcompare/limits.py); pass a smaller set")
    try:
        with open(path, "rb") as fh:  # read at most the bound, whatever the file grew to since
            data = fh.read(MAX_PROMPT_FILE_BYTES + 1)
        if len(data) > MAX_PROMPT_FILE_BYTES:
            raise PromptFileError(source, None, f"is more than the {MAX_PROMPT_FILE_BYTES / 2**20:,.0f} MiB a prompt"
                                                " file may be (llmcompare/limits.py); pass a smaller set")
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PromptFileError(source, line, "not valid UTF-8 text") from None
    except OSError as exc:
        raise PromptFileError(source, None, f"cannot read: {exc.strerror}") from None
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        prompts = _parse_jsonl(text, source)
    elif suffix in (".yaml", ".yml"):
        prompts = _parse_yaml(text, source)
    elif suffix in (".txt", ".text", ""):
        prompts = [
            Prompt(f"p{i}", line.strip())
            for i, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    else:
        raise PromptFileError(source, None, f"unsupported prompt file type {suffix!r}; use .jsonl, .yaml or .txt")
    if not prompts:
        raise PromptFileError(source, None, "contains no prompts")
    seen: dict[str, int] = {}
    for i, p in enumerate(prompts):
        if p.id in seen:
            raise PromptFileError(source, None, f"prompt id {p.id!r} appears twice; ids must be unique")
        seen[p.id] = i
    return prompts


def _item(value: Any, source: str, line: int, default_id: str) -> Prompt:
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict):
        raise PromptFileError(source, line, f"expected a string or an object with 'text', got {type(value).__name__}")
    text = value.get("text", value.get("prompt"))
    if not isinstance(text, str) or not text.strip():
        raise PromptFileError(source, line, "prompt needs a non-empty 'text' (or 'prompt') string")
    pid = value.get("id", default_id)
    category = value.get("category")
    return Prompt(str(pid), text, category=str(category) if category is not None else None)


def _parse_jsonl(text: str, source: str) -> list[Prompt]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptFileError(source, lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        out.append(_item(value, source, lineno, f"p{lineno}"))
    return out


def _parse_yaml(text: str, source: str) -> list[Prompt]:
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise PromptFileError(source, mark.line + 1 if mark else None, f"invalid YAML: {problem}") from None
    if isinstance(data, dict) and "prompts" in data:
        data = data["prompts"]
        root = next(v for k, v in root.value if k.value == "prompts")
    if not isinstance(data, list):
        line = root.start_mark.line + 1 if root is not None else 1
        raise PromptFileError(source, line, "expected a list of prompts (or a mapping with a 'prompts' list)")
    return [_item(v, source, node.start_mark.line + 1, f"p{i}") for i, (v, node) in enumerate(zip(data, root.value), 1)]


def tokenize(prompts: list[Prompt], tokenizer, chat: bool = True) -> list[Prompt]:
    """Attach token ids. With ``chat`` and a chat template, the prompt is wrapped as one user turn."""
    out = []
    use_chat = chat and getattr(tokenizer, "chat_template", None)
    for p in prompts:
        if use_chat:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": p.text}], add_generation_prompt=True, tokenize=False
            )
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(p.text)["input_ids"]
        out.append(Prompt(p.id, p.text, tuple(int(i) for i in ids), p.category))
    return out


def exact_length(prompts: list[Prompt], tokenizer, n_tokens: int) -> list[Prompt]:
    """Prompts of exactly ``n_tokens`` ids: each prompt's own text tokens, repeated and cut to length."""
    if n_tokens < 1:
        raise UserError(f"--input-tokens must be at least 1, got {n_tokens}")
    out = []
    for p in prompts:
        base = tokenizer(p.text, add_special_tokens=False)["input_ids"] or [0]
        ids = (base * (n_tokens // len(base) + 1))[:n_tokens]
        out.append(Prompt(f"{p.id}@{n_tokens}t", tokenizer.decode(ids), tuple(int(i) for i in ids), p.category))
    return out
