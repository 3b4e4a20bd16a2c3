"""Fake of ``mlc_llm.protocol`` (only ``openai_api_protocol`` is mirrored)."""
