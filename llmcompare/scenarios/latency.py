"""The batch-1 latency driver: one request at a time, a fixed prompt set, forced output length.

Per stage (one per ``--input-tokens`` length, or one for the prompts as they are): ``warmup``
requests (recorded with ``warmup=True``, excluded from the statistics; the first is the cold
request), then ``repeats`` passes over the prompts. Every request is handed the same prompt token ids,
asked for exactly ``max_new_tokens`` tokens, and its actual count is checked. Each finished request is
appended at once; a stage record closes each stage with its measured wall time.
"""

from __future__ import annotations

from llmcompare.backend import clock
from llmcompare.records import RecordWriter, StageRecord
from llmcompare.runner.session import BackendSession
from llmcompare.scenarios import Context


def run(session: BackendSession, ctx: Context, writer: RecordWriter) -> None:
    scenario = ctx.spec.scenario
    for plan in ctx.header.stages:
        prompts = ctx.header.stage_prompts(plan)
        for i in range(scenario.warmup):
            writer.write(session.request(prompts[i % len(prompts)], scenario.max_new_tokens, stage=plan.stage,
                                         request_id=f"warmup/{i}", repeat=i, warmup=True))
        start = end = None
        for rep in range(scenario.repeats):
            for p in prompts:
                request_id = f"{p.id}/r{rep}"
                if ctx.job.is_done(plan.stage, request_id):
                    continue
                t = clock()
                start = t if start is None else start
                writer.write(session.request(p, scenario.max_new_tokens, stage=plan.stage, request_id=request_id,
                                             repeat=rep))
                end = clock()
        if start is not None:
            writer.write(StageRecord(
                backend=ctx.backend.label, stage=plan.stage, session=session.id,
                started_at=start + session.epoch_offset, wall_s=end - start,
                params={"input_tokens": plan.input_tokens, "max_new_tokens": scenario.max_new_tokens,
                        "repeats": scenario.repeats},
            ))
            session.record.measured_wall_s += end - start
