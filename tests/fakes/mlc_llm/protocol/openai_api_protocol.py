"""Fake of ``mlc_llm.protocol.openai_api_protocol``: the completion response objects.

Mirrors mlc-ai/mlc-llm at commit 79d603f (2026-07-23). The real classes are pydantic models; these
dataclasses have the same field names and defaults, which is all a caller reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

COMPLETION_MAX_TOP_LOGPROBS = 5


@dataclass
class CompletionLogProbs:
    text_offset: Optional[list[int]]
    token_logprobs: list[float]
    tokens: list[str]
    top_logprobs: list[dict[str, float]]


@dataclass
class CompletionUsage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    extra: Optional[dict[str, Any]] = None


@dataclass
class StreamOptions:
    include_usage: Optional[bool]


@dataclass
class CompletionResponseChoice:
    text: str
    finish_reason: Optional[Literal["stop", "length", "preempt"]] = None
    index: int = 0
    logprobs: Optional[CompletionLogProbs] = None


@dataclass
class CompletionResponse:
    id: str
    choices: list[CompletionResponseChoice]
    created: int = 0
    model: Optional[str] = None
    object: str = "text_completion"
    usage: Optional[CompletionUsage] = None
    system_fingerprint: str = field(default="")
