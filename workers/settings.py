"""The settings of one WorkerLoop (plain data, pickled to a Ray actor)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from workers.train import disk


@dataclass(frozen=True)
class WorkerSettings:
    worker_id: str
    runs_dir: Path
    lease_s: float = 30.0
    poll_s: float = 0.5
    """How often a running attempt's files are read."""
    idle_poll_s: float = 2.0
    """How long to wait after an empty claim."""
    grace_s: float = 120.0
    """Wall time allowed past budget_seconds (startup, evals, checkpoints) before timed_out."""
    kill_after_s: float = 30.0
    """SIGTERM -> SIGKILL delay."""
    max_attempts: int | None = None
    """Stop after running this many attempts (`--once` = 1)."""
    until_empty: bool = False
    """Stop once nothing is queued or running (in `study`, or anywhere)."""
    study: str | None = None
    """Claim only this study's attempts (`recip run`); None: any study."""
    gpu_index: int | None = None
    db_label: str = ""
    """The database URL (redacted); an artifact dir is only resumed by the same database."""
    storage: str | None = None
    """Checkpoint storage any box can read (workers/storage.py); None = runs_dir only."""
    quarantine_after: int = 3
    """Stop claiming after this many same-kind box failures in a row (0: never)."""
    metric_points: int = 1000
    backoff_s: float = 0.5
    backoff_max_s: float = 15.0
    min_free_bytes: int = field(default_factory=disk.min_free_bytes)
    """No claim while runs_dir has less free space ($RECIP_MIN_FREE_MB, default 200 MB)."""


def default_worker_id(slot: str) -> str:
    """`host:slot-pid`, unique among the live workers of one database."""
    return f"{socket.gethostname()}:{slot}-{os.getpid()}"
