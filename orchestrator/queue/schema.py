"""The queue's tables as SQLAlchemy 2 typed classes: the Alembic comparison target.

    studies   one per study name; the latest submitted spec
    runs      one per (study, step, seed, config hash); `superseded_at IS NULL` = current
    attempts  one per try of a run: state, lease, worker, code, progress, result
    workers   one per worker process (heartbeats)
    events    append-only history of every attempt transition
    study_events  append-only study-level history (seeds added after a look)
    metrics   (attempt, name, step) -> value

Invariants live in the database: UNIQUE(study_id, step_key, seed, config_hash) makes submit
idempotent, a partial unique index keeps one current run per (study, step, seed), another
keeps at most one live (queued/claimed/running) attempt per run. Migrations never import
this module; `tests/migrations` checks that they produce exactly these tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from orchestrator.core import states
from orchestrator.core.states import AttemptState, FailureKind
from orchestrator.queue.types import JSONDict, UTCDateTime

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STATES = tuple(s.value for s in AttemptState)
FAILURE_KINDS = tuple(k.value for k in FailureKind)
LIVE_STATES = states.values(states.LIVE)
CODE_POLICIES = ("head", "pinned")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class StudyRow(Base):
    __tablename__ = "studies"
    __table_args__ = (sa.CheckConstraint(_in("code_policy", CODE_POLICIES), name="code_policy"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    spec_hash: Mapped[str] = mapped_column(sa.String(64))
    spec_json: Mapped[dict[str, Any]] = mapped_column(JSONDict())
    source: Mapped[str | None] = mapped_column(sa.Text)
    code_policy: Mapped[str] = mapped_column(sa.String(16), default="head")
    pinned_sha: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        sa.UniqueConstraint("study_id", "step_key", "seed", "config_hash"),
        sa.Index(
            "uq_runs_current", "study_id", "step_key", "seed", unique=True,
            sqlite_where=sa.text("superseded_at IS NULL"),
            postgresql_where=sa.text("superseded_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey("studies.id", ondelete="CASCADE"))
    step_key: Mapped[str] = mapped_column(sa.String(200))
    seed: Mapped[int] = mapped_column(sa.Integer)
    config_hash: Mapped[str] = mapped_column(sa.String(64))
    config_json: Mapped[dict[str, Any]] = mapped_column(JSONDict())
    parent_step: Mapped[str | None] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    priority: Mapped[int] = mapped_column(sa.Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(sa.Integer, default=3)
    budget_seconds: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AttemptRow(Base):
    __tablename__ = "attempts"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "attempt_no"),
        sa.CheckConstraint(_in("state", STATES), name="state"),
        sa.CheckConstraint(
            f"failure_kind IS NULL OR {_in('failure_kind', FAILURE_KINDS)}", name="failure_kind"
        ),
        sa.Index(
            "ix_attempts_queued", sa.literal_column("priority").desc(), "id",
            sqlite_where=sa.text("state = 'queued'"),
            postgresql_where=sa.text("state = 'queued'"),
        ),
        sa.Index(
            "ix_attempts_leased", "lease_expires_at",
            sqlite_where=sa.text("state IN ('claimed', 'running')"),
            postgresql_where=sa.text("state IN ('claimed', 'running')"),
        ),
        sa.Index(
            "uq_attempts_live_run", "run_id", unique=True,
            sqlite_where=sa.text(_in("state", LIVE_STATES)),
            postgresql_where=sa.text(_in("state", LIVE_STATES)),
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    attempt_no: Mapped[int] = mapped_column(sa.Integer)
    state: Mapped[str] = mapped_column(sa.String(16))
    failure_kind: Mapped[str | None] = mapped_column(sa.String(16))
    priority: Mapped[int] = mapped_column(sa.Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(sa.String(200))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exit_code: Mapped[int | None] = mapped_column(sa.Integer)
    error_type: Mapped[str | None] = mapped_column(sa.String(200))
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    code_sha: Mapped[str | None] = mapped_column(sa.String(64))
    code_dirty: Mapped[bool | None] = mapped_column(sa.Boolean)
    diff_hash: Mapped[str | None] = mapped_column(sa.String(64))
    host: Mapped[str | None] = mapped_column(sa.String(200))
    gpu: Mapped[str | None] = mapped_column(sa.String(200))
    pid: Mapped[int | None] = mapped_column(sa.Integer)
    artifact_dir: Mapped[str | None] = mapped_column(sa.Text)
    env_json: Mapped[dict[str, Any] | None] = mapped_column(JSONDict())
    result_json: Mapped[dict[str, Any] | None] = mapped_column(JSONDict())
    iter: Mapped[int | None] = mapped_column(sa.Integer)
    tokens: Mapped[int | None] = mapped_column(sa.BigInteger)
    train_s: Mapped[float | None] = mapped_column(sa.Float)
    fraction: Mapped[float | None] = mapped_column(sa.Float)
    loss: Mapped[float | None] = mapped_column(sa.Float)
    val_loss: Mapped[float | None] = mapped_column(sa.Float)
    best_val_loss: Mapped[float | None] = mapped_column(sa.Float)
    lr: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    phase: Mapped[str | None] = mapped_column(sa.String(32))
    """progress.json's phase: preparing_data, training, eval, checkpoint, post_train, ..."""
    eval_s: Mapped[float | None] = mapped_column(sa.Float)
    """Seconds in evals and post-train evals, outside train_s."""


class WorkerRow(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(200))
    gpu: Mapped[str | None] = mapped_column(sa.String(200))
    pid: Mapped[int | None] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    current_attempt: Mapped[int | None] = mapped_column(sa.Integer)
    quarantined_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    quarantine_reason: Mapped[str | None] = mapped_column(sa.Text)
    code_sha: Mapped[str | None] = mapped_column(sa.String(64))


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    attempt_id: Mapped[int] = mapped_column(
        sa.ForeignKey("attempts.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(sa.String(32))
    payload_json: Mapped[dict[str, Any] | None] = mapped_column(JSONDict())


class MetricRow(Base):
    __tablename__ = "metrics"
    # covering read of a series (value in the key): migration 0002
    __table_args__ = (sa.Index("ix_metrics_series", "attempt_id", "name", "step", "value"),)

    attempt_id: Mapped[int] = mapped_column(
        sa.ForeignKey("attempts.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    step: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    value: Mapped[float | None] = mapped_column(sa.Float)
    """NULL reads back as NaN (SQLite stores NaN as NULL)."""


class StudyEventRow(Base):
    """A study-level event: `seeds_added` (payload: the look's seeds per step before, the
    seeds added per step, the cap) is the record a sequential correction reads."""

    __tablename__ = "study_events"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(sa.String(32))
    payload_json: Mapped[dict[str, Any] | None] = mapped_column(JSONDict())


metadata = Base.metadata
