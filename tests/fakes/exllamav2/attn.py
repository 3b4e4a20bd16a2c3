"""Fake of ``exllamav2/attn.py``: the flash-attn probe flags and ``assert_paged_attn``.

The real module sets the flags at import from the installed flash-attn; the fake has none installed
(tests set ``has_flash_attn_with_paged`` to model a machine that has flash-attn ≥ 2.5.7).
"""

has_flash_attn = False
has_flash_attn_with_paged = False
has_flash_attn_with_window = False
has_flash_attn_with_softcap = False
has_xformers = False


def assert_paged_attn():
    """Raise an exception if paged attention is not available."""
    global has_flash_attn_with_paged
    assert has_flash_attn_with_paged, "Paged attention required Flash Attention 2.5.7 or later"
