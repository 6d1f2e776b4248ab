"""The durable queue: schema, engines, migrations and the repository.

    from orchestrator.queue import QueueRepo
    repo = QueueRepo.open("sqlite:///recip.db")

Names are loaded on first use, so `import orchestrator.queue.db` (the migrations' env.py,
`recip db`) does not load the schema module or the repository.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.queue.db import make_engine, redact_url
    from orchestrator.queue.repo import QueueRepo
    from orchestrator.queue.types import ClaimedAttempt, SubmitResult

__all__ = ["ClaimedAttempt", "QueueRepo", "SubmitResult", "make_engine", "redact_url"]

_WHERE = {
    "QueueRepo": "orchestrator.queue.repo",
    "ClaimedAttempt": "orchestrator.queue.types",
    "SubmitResult": "orchestrator.queue.types",
    "make_engine": "orchestrator.queue.db",
    "redact_url": "orchestrator.queue.db",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'orchestrator.queue' has no attribute {name!r}")
