"""The port: the part of the queue a worker uses (orchestrator/queue/repo.py is the adapter).

`tests/workers/test_ports.py` checks that QueueRepo matches this Protocol, method by method,
as pgqueuer's port-conformance test does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from orchestrator.core.states import AttemptState, FailureKind
    from orchestrator.core.views import Snapshot
    from orchestrator.queue.types import ClaimedAttempt


class Queue(Protocol):
    """What a WorkerLoop needs from the queue; every attempt write is fenced there."""

    def claim(self, worker_id: str, now: datetime, lease: timedelta, *,
              code_sha: str | None = None, study: str | None = None
              ) -> ClaimedAttempt | None: ...

    def start(self, attempt_id: int, worker_id: str, now: datetime, lease: timedelta, *,
              artifact_dir: str, code_sha: str | None, code_dirty: bool | None,
              diff_hash: str | None, host: str, gpu: str | None, pid: int | None,
              env: dict[str, Any]) -> None: ...

    def heartbeat(self, attempt_id: int, worker_id: str, now: datetime, lease: timedelta,
                  progress: dict[str, Any] | None = None) -> None: ...

    def record_metrics(self, attempt_id: int, worker_id: str,
                       rows: Sequence[tuple[str, int, float]]) -> object: ...

    def finish(self, attempt_id: int, worker_id: str, now: datetime, state: AttemptState, *,
               failure_kind: FailureKind | None = None, exit_code: int | None = None,
               error_type: str | None = None, error_message: str | None = None,
               result: dict[str, Any] | None = None) -> None: ...

    def requeue(self, attempt_id: int, worker_id: str, now: datetime, *,
                reason: str = "stopped") -> None: ...

    def record_checkpoint(self, attempt_id: int, worker_id: str, now: datetime, *,
                          uri: str, iteration: int | None) -> None: ...

    def register_worker(self, worker_id: str, now: datetime, *, host: str, gpu: str | None,
                        pid: int | None, code_sha: str | None = None) -> None: ...

    def worker_heartbeat(self, worker_id: str, now: datetime,
                         current_attempt: int | None = None, *,
                         code_sha: str | None = None) -> None: ...

    def worker_stopped(self, worker_id: str, now: datetime) -> None: ...

    def quarantine_worker(self, worker_id: str, now: datetime, *, reason: str) -> None: ...

    def worker_quarantine(self, worker_id: str) -> str | None: ...

    def snapshot(self, now: datetime, study: str | None = None) -> Snapshot: ...
