"""A claimer loop run in threads and in spawned processes by test_concurrency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.queue.repo import QueueRepo

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def claim_until_empty(url: str, worker_id: str, barrier: Any = None) -> list[int]:
    """Claim with a repo (engine, connection) of its own until the queue is empty; with a
    barrier, all claimers start together."""
    repo = QueueRepo.open(url)
    got: list[int] = []
    try:
        if barrier is not None:
            barrier.wait(timeout=60)
        while (c := repo.claim(worker_id, NOW, timedelta(hours=1))) is not None:
            got.append(c.attempt_id)
    finally:
        repo.close()
    return got
