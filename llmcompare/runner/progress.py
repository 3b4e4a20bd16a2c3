"""Progress callbacks the orchestration calls as a run goes (the console draws them as bars)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmcompare.records import BackendRecord, RequestRecord, StageRecord


class ProgressCallbacks:
    """Override what you need; every method is a no-op here."""

    def backend_started(self, label: str, total: int | None) -> None: ...

    def request_done(self, label: str, record: RequestRecord) -> None: ...

    def stage_done(self, label: str, record: StageRecord) -> None: ...

    def backend_done(self, label: str, record: BackendRecord) -> None: ...
