"""Fake of ``exllamav2/attn.py``: the attention probe flags, ``assert_paged_attn`` and which prefill
attention is causal.

The real module sets the flags at import from the installed flash-attn, xformers and torch; the fake
has no flash-attn or xformers (tests set ``has_flash_attn_with_paged`` to model a machine that has
flash-attn ≥ 2.5.7) and a torch with ``causal_lower_right`` (``has_lower_right_sdpa``).

``prefill_is_causal`` mirrors 0.3.2's ``ExLlamaV2Attention.forward``/``_attn_torch``: flash-attn, then
xformers, are used with a causal mask; without either, the SDPA branch asks
``attn_params.get_block_diag_mask()`` for its mask, which is ``None`` for an ordinary (non-varlen)
prefill, so that prefill attends both ways. With ``config.no_sdpa`` the matmul branch adds the causal
``get_attn_mask()`` and is right. The fake generator's first token after a multi-token prompt is
wrong in that case, as the real engine's was on the H200 (2026-11-22-h200-c, ``c3-exl2-logits.py``).
"""

has_flash_attn = False
has_flash_attn_with_paged = False
has_flash_attn_with_window = False
has_flash_attn_with_softcap = False
has_xformers = False
has_lower_right_sdpa = True


def assert_paged_attn():
    """Raise an exception if paged attention is not available."""
    global has_flash_attn_with_paged
    assert has_flash_attn_with_paged, "Paged attention required Flash Attention 2.5.7 or later"


def prefill_is_causal(cfg) -> bool:
    """Fake-only: whether 0.3.2 masks a multi-token prefill causally under ``cfg``."""
    if (has_flash_attn and not cfg.no_flash_attn) or (has_xformers and not cfg.no_xformers):
        return True
    return not (has_lower_right_sdpa and not cfg.no_sdpa)
