"""Fake of ``mlc_llm.serve`` (the names the real ``__init__`` exports that a caller uses)."""

from .config import EngineConfig
from .engine import AsyncMLCEngine, MLCEngine

__all__ = ["AsyncMLCEngine", "EngineConfig", "MLCEngine"]
