"""Built-in prompt sets, shipped as package data (``<name>.jsonl``)."""
