"""The queue's tables as SQLAlchemy Core `Table`s: the Alembic comparison target.

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

Core tables, not ORM classes: nothing here needs a session or identity map, and declaring
them as mapped classes cost every `recip status` ~0.15 s of imports and class building
(`sqlalchemy.orm` plus the annotation-driven declarative scan; bench/cli_bench.py). Columns
are `TABLE.c.name`; nullability is spelled out (Core's default is nullable).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

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


metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _col(name: str, kind: Any, *args: Any, null: bool = False, **kw: Any) -> sa.Column[Any]:
    """A column, NOT NULL unless `null` (the declarative `Mapped[X | None]` rule)."""
    return sa.Column(name, kind, *args, nullable=null, **kw)


STUDIES = sa.Table(
    "studies", metadata,
    _col("id", sa.Integer, primary_key=True),
    _col("name", sa.String(200), unique=True),
    _col("description", sa.Text, default=""),
    _col("spec_hash", sa.String(64)),
    _col("spec_json", JSONDict()),
    _col("source", sa.Text, null=True),
    _col("code_policy", sa.String(16), default="head"),
    _col("pinned_sha", sa.String(64), null=True),
    _col("created_at", UTCDateTime()),
    _col("updated_at", UTCDateTime()),
    sa.CheckConstraint(_in("code_policy", CODE_POLICIES), name="code_policy"),
)

RUNS = sa.Table(
    "runs", metadata,
    _col("id", sa.Integer, primary_key=True),
    _col("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE")),
    _col("step_key", sa.String(200)),
    _col("seed", sa.Integer),
    _col("config_hash", sa.String(64)),
    _col("config_json", JSONDict()),
    _col("parent_step", sa.String(200), null=True),
    _col("description", sa.Text, default=""),
    _col("priority", sa.Integer, default=0),
    _col("max_attempts", sa.Integer, default=3),
    _col("budget_seconds", sa.Float, null=True),
    _col("created_at", UTCDateTime()),
    _col("superseded_at", UTCDateTime(), null=True),
    sa.UniqueConstraint("study_id", "step_key", "seed", "config_hash"),
    sa.Index(
        "uq_runs_current", "study_id", "step_key", "seed", unique=True,
        sqlite_where=sa.text("superseded_at IS NULL"),
        postgresql_where=sa.text("superseded_at IS NULL"),
    ),
)

ATTEMPTS = sa.Table(
    "attempts", metadata,
    _col("id", sa.Integer, primary_key=True),
    _col("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE")),
    _col("attempt_no", sa.Integer),
    _col("state", sa.String(16)),
    _col("failure_kind", sa.String(16), null=True),
    _col("priority", sa.Integer, default=0),
    _col("worker_id", sa.String(200), null=True),
    _col("claimed_at", UTCDateTime(), null=True),
    _col("started_at", UTCDateTime(), null=True),
    _col("heartbeat_at", UTCDateTime(), null=True),
    _col("lease_expires_at", UTCDateTime(), null=True),
    _col("finished_at", UTCDateTime(), null=True),
    _col("exit_code", sa.Integer, null=True),
    _col("error_type", sa.String(200), null=True),
    _col("error_message", sa.Text, null=True),
    _col("code_sha", sa.String(64), null=True),
    _col("code_dirty", sa.Boolean, null=True),
    _col("diff_hash", sa.String(64), null=True),
    _col("host", sa.String(200), null=True),
    _col("gpu", sa.String(200), null=True),
    _col("pid", sa.Integer, null=True),
    _col("artifact_dir", sa.Text, null=True),
    _col("env_json", JSONDict(), null=True),
    _col("result_json", JSONDict(), null=True),
    _col("iter", sa.Integer, null=True),
    _col("tokens", sa.BigInteger, null=True),
    _col("train_s", sa.Float, null=True),
    _col("fraction", sa.Float, null=True),
    _col("loss", sa.Float, null=True),
    _col("val_loss", sa.Float, null=True),
    _col("best_val_loss", sa.Float, null=True),
    _col("lr", sa.Float, null=True),
    _col("created_at", UTCDateTime()),
    # progress.json's phase: preparing_data, training, eval, checkpoint, post_train, ...
    _col("phase", sa.String(32), null=True),
    _col("eval_s", sa.Float, null=True),
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

WORKERS = sa.Table(
    "workers", metadata,
    _col("id", sa.String(200), primary_key=True),
    _col("host", sa.String(200)),
    _col("gpu", sa.String(200), null=True),
    _col("pid", sa.Integer, null=True),
    _col("started_at", UTCDateTime()),
    _col("last_heartbeat", UTCDateTime()),
    _col("stopped_at", UTCDateTime(), null=True),
    _col("current_attempt", sa.Integer, null=True),
    _col("quarantined_at", UTCDateTime(), null=True),
    _col("quarantine_reason", sa.Text, null=True),
    _col("code_sha", sa.String(64), null=True),
)

EVENTS = sa.Table(
    "events", metadata,
    _col("id", sa.Integer, primary_key=True),
    _col("attempt_id", sa.Integer, sa.ForeignKey("attempts.id", ondelete="CASCADE"), index=True),
    _col("at", UTCDateTime()),
    _col("kind", sa.String(32)),
    _col("payload_json", JSONDict(), null=True),
)

METRICS = sa.Table(
    "metrics", metadata,
    _col("attempt_id", sa.Integer, sa.ForeignKey("attempts.id", ondelete="CASCADE"),
         primary_key=True),
    _col("name", sa.String(200), primary_key=True),
    _col("step", sa.Integer, primary_key=True),
    _col("value", sa.Float, null=True),   # NULL reads back as NaN (SQLite stores NaN as NULL)
    # covering read of a series (value in the key): migration 0002; on PostgreSQL names
    # compare bytewise so a name prefix is a key range (0007)
    sa.Index("ix_metrics_series", "attempt_id", "name", "step", "value",
             postgresql_ops={"name": "varchar_pattern_ops"}),
)

STUDY_EVENTS = sa.Table(
    # a study-level event: `seeds_added` (payload: the look's seeds per step before, the
    # seeds added per step, the cap) is the record a sequential correction reads
    "study_events", metadata,
    _col("id", sa.Integer, primary_key=True),
    _col("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), index=True),
    _col("at", UTCDateTime()),
    _col("kind", sa.String(32)),
    _col("payload_json", JSONDict(), null=True),
)
