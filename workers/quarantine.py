"""Bad boxes set aside: a worker whose attempts fail the same box-shaped way k times in a
row (crashed, oom, spawn, disk_full) stops claiming, so one bad GPU cannot fail a whole
study; the queued work goes to the other workers. The quarantine lives in the
queue (workers.quarantined_at), survives a restart of the same host and slot, shows in
`recip workers ls` and `recip status`, and ends with `recip workers release`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from orchestrator.core.states import AttemptState, FailureKind

if TYPE_CHECKING:
    from workers.outcome import AttemptOutcome
    from workers.ports import Queue
    from workers.retry import Retrier

logger = logging.getLogger(__name__)

QUARANTINE_KINDS: frozenset[str] = frozenset({
    FailureKind.CRASHED.value, FailureKind.OOM.value, FailureKind.SPAWN.value, "disk_full"})
"""Failure kinds that point at the box or GPU, not at the code: k in a row quarantine it."""


@dataclass
class Streak:
    """Consecutive same-kind box failures of one worker; `add` returns the quarantine reason
    once `k` in a row happened (k <= 0: never)."""

    k: int
    kind: str | None = None
    count: int = 0

    def add(self, failure_kind: str | None) -> str | None:
        if failure_kind not in QUARANTINE_KINDS:
            self.kind, self.count = None, 0
            return None
        self.count = self.count + 1 if failure_kind == self.kind else 1
        self.kind = failure_kind
        if self.k <= 0 or self.count < self.k:
            return None
        return f"{self.count} {failure_kind} failures in a row"

    def reset(self) -> None:
        self.kind, self.count = None, 0


class Quarantine:
    """One worker's streak and quarantine state, kept in step with the queue."""

    def __init__(self, queue: Queue, retrier: Retrier, worker_id: str, k: int) -> None:
        self.queue = queue
        self.retrier = retrier
        self.worker_id = worker_id
        self.streak = Streak(k)
        self.reason: str | None = None

    def load(self) -> None:
        """Read the quarantine a restarted worker of this slot inherited."""
        self.reason = self.retrier.call(
            "quarantine", lambda: self.queue.worker_quarantine(self.worker_id))

    def count(self, out: AttemptOutcome, now: datetime) -> None:
        """Add one attempt's outcome; the k-th same box failure in a row quarantines."""
        why = self.streak.add(out.failure_kind if out.state == AttemptState.FAILED else None)
        if why is None:
            return
        self.reason = why
        logger.warning("worker %s quarantined: %s", self.worker_id, why,
                       extra={"action": "worker_quarantined", "reason": why})
        self.retrier.best_effort(lambda: self.queue.quarantine_worker(
            self.worker_id, now, reason=why))

    def blocked(self) -> bool:
        """True while quarantined (re-read from the queue: `recip workers release`)."""
        if self.reason is not None:
            self.load()
            if self.reason is None:
                self.streak.reset()
        return self.reason is not None
