"""The durable queue: schema, engines, migrations and the repository.

    from orchestrator.queue import QueueRepo
    repo = QueueRepo.open("sqlite:///recip.db")
"""

from __future__ import annotations

from orchestrator.queue.db import make_engine, redact_url
from orchestrator.queue.repo import QueueRepo
from orchestrator.queue.types import ClaimedAttempt, SubmitResult

__all__ = ["ClaimedAttempt", "QueueRepo", "SubmitResult", "make_engine", "redact_url"]
