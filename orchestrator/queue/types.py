"""Column types that behave the same on SQLite and PostgreSQL, and the queue's value types.

`UTCDateTime` stores UTC and always hands back aware datetimes (SQLite would read
`DateTime(timezone=True)` back naive). `JSONDict` is plain `JSON` (key order survives on
both backends, unlike JSONB). `SubmitResult` and `ClaimedAttempt` are what `QueueRepo`
returns; frozen values, never live rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp; naive datetimes are refused on the way in."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the queue takes aware UTC datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def JSONDict() -> sa.JSON:
    """A JSON column where Python None is SQL NULL."""
    return sa.JSON(none_as_null=True)


def finite_json(value: Any) -> Any:
    """`value` with NaN/inf floats replaced by None (PostgreSQL's json rejects them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


@dataclass(frozen=True)
class SubmitResult:
    """What `QueueRepo.submit` did.

    `new_runs` are (step, seed, config_hash) of the runs it inserted; `changed_steps` the
    steps whose current run for some seed changed config (new hash, or an older hash made
    current again); `superseded_runs` counts runs that stopped being current and
    `cancelled_attempts` their queued attempts that were cancelled (running ones finish)."""

    study: str
    study_created: bool
    new_runs: tuple[tuple[str, int, str], ...]
    unchanged_runs: int
    changed_steps: tuple[str, ...]
    queued_attempts: int
    superseded_runs: int = 0
    cancelled_attempts: int = 0

    @property
    def changed(self) -> bool:
        """True when the submission wrote anything."""
        return self.study_created or bool(self.new_runs) or bool(self.changed_steps)


@dataclass(frozen=True)
class ClaimedAttempt:
    """An attempt a worker now holds the lease on.

    `previous_artifact_dir` is the artifact dir of the run's latest attempt (this one
    included, when it was re-queued after a clean stop) that has one; the new process
    resumes from the checkpoint there."""

    attempt_id: int
    attempt_no: int
    run_id: int
    study: str
    step: str
    seed: int
    config: dict[str, Any]
    config_hash: str
    budget_seconds: float | None
    max_attempts: int
    previous_artifact_dir: str | None = None
    lease_expires_at: datetime | None = None


@dataclass(frozen=True)
class AttemptRef:
    """Where one attempt of a current run is: what `recip logs` needs to find its files."""

    seed: int
    attempt_no: int
    attempt_id: int
    artifact_dir: str | None
    state: str
