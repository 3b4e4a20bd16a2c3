"""Scenarios: what a run does with each loaded backend. :mod:`.base` is the contract; the built-in
ones are :mod:`.latency` (batch 1), :mod:`.load` (concurrency and rates) and :mod:`.fidelity` (does each
backend still say the same thing), registered by :mod:`.builtin` like any plugin's."""
