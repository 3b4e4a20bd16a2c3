"""The built-in scenarios, registered through the same hook as a plugin's."""

from __future__ import annotations

from llmcompare.hookspecs import hookimpl
from llmcompare.plugins.specs import ScenarioSpec


@hookimpl
def register_scenarios(register):
    register(ScenarioSpec("latency", "llmcompare.scenarios.latency:LatencyScenario",
                          "compare backends at batch size 1 (the default command)", command="run"))
    register(ScenarioSpec("load", "llmcompare.scenarios.load:LoadScenario",
                          "throughput and latency under load: concurrency or arrival-rate levels", command="load"))
    register(ScenarioSpec("fidelity", "llmcompare.scenarios.fidelity:FidelityScenario",
                          "does each backend still say the same thing? (judged by a reference model)",
                          joins=("latency",)))
