"""Read models for the dashboard: what `QueueRepo.snapshot()` returns and `render` draws.

One row per run (its latest attempt), so building a snapshot is O(runs), never O(metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.core.states import TERMINAL


@dataclass(frozen=True)
class RunView:
    study: str
    step: str
    seed: int
    run_id: int
    config_hash: str
    attempt_id: int | None = None
    attempt_no: int | None = None
    attempts: int = 0
    state: str | None = None
    failure_kind: str | None = None
    worker: str | None = None
    iter: int | None = None
    tokens: int | None = None
    train_s: float | None = None
    eval_s: float | None = None
    """Seconds in evals and post-train evals so far, outside train_s."""
    phase: str | None = None
    """What the trainer last said it does (training, eval, checkpoint, preparing_data,
    post_train, ...); meaningful while the attempt holds a lease."""
    budget_s: float | None = None
    fraction: float | None = None
    """Budget used, 0..1."""
    loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    heartbeat_at: datetime | None = None
    lease_expires_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    code_sha: str | None = None
    code_dirty: bool | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyView:
    name: str
    description: str
    created_at: datetime | None
    counts: dict[str, int]
    """Runs by the state of their latest attempt."""
    runs: tuple[RunView, ...] = ()
    pinned_sha: str | None = None
    """The commit a `code: pinned` study runs only on (None: any commit)."""

    @property
    def done(self) -> bool:
        return all(r.state in TERMINAL for r in self.runs)


@dataclass(frozen=True)
class WorkerView:
    id: str
    host: str
    gpu: str | None
    pid: int | None
    started_at: datetime | None
    last_heartbeat: datetime | None
    stopped_at: datetime | None
    current_attempt: int | None = None
    quarantined: str | None = None
    """Why the worker stopped claiming (k same failures in a row), until released."""
    code_sha: str | None = None
    """The commit of the worker's checkout (as of its last idle heartbeat)."""


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    db: str
    """The database URL with any password redacted."""
    studies: tuple[StudyView, ...] = ()
    workers: tuple[WorkerView, ...] = field(default_factory=tuple)
