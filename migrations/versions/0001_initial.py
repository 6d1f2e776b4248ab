"""initial: studies, runs, attempts, workers, events, metrics

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Frozen copy of the schema at 0001 (never import orchestrator.queue.schema here). Timestamps
are plain `DateTime(timezone=True)`: the UTC handling lives in the application's type.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

STATES = ("queued", "claimed", "running", "succeeded", "failed", "timed_out", "lost", "cancelled")
FAILURE_KINDS = ("exception", "oom", "diverged", "crashed", "spawn")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _ts(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.JSON(none_as_null=True), nullable=nullable)


def _partial(where: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(where), "postgresql_where": sa.text(where)}


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        _json("spec_json", nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("code_policy", sa.String(16), nullable=False),
        sa.Column("pinned_sha", sa.String(64), nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.CheckConstraint(_in("code_policy", ("head", "pinned")), name=op.f("ck_studies_code_policy")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("name", name=op.f("uq_studies_name")),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("gpu", sa.String(200), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        _ts("started_at", nullable=False),
        _ts("last_heartbeat", nullable=False),
        _ts("stopped_at"),
        sa.Column("current_attempt", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("step_key", sa.String(200), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        _json("config_json", nullable=False),
        sa.Column("parent_step", sa.String(200), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("budget_seconds", sa.Float(), nullable=True),
        _ts("created_at", nullable=False),
        _ts("superseded_at"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE",
                                name=op.f("fk_runs_study_id_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("study_id", "step_key", "seed", "config_hash",
                            name=op.f("uq_runs_study_id_step_key_seed_config_hash")),
    )
    op.create_index("uq_runs_current", "runs", ["study_id", "step_key", "seed"], unique=True,
                    **_partial("superseded_at IS NULL"))
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failure_kind", sa.String(16), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(200), nullable=True),
        _ts("claimed_at"),
        _ts("started_at"),
        _ts("heartbeat_at"),
        _ts("lease_expires_at"),
        _ts("finished_at"),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error_type", sa.String(200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("code_sha", sa.String(64), nullable=True),
        sa.Column("code_dirty", sa.Boolean(), nullable=True),
        sa.Column("diff_hash", sa.String(64), nullable=True),
        sa.Column("host", sa.String(200), nullable=True),
        sa.Column("gpu", sa.String(200), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("artifact_dir", sa.Text(), nullable=True),
        _json("env_json"),
        _json("result_json"),
        sa.Column("iter", sa.Integer(), nullable=True),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
        sa.Column("train_s", sa.Float(), nullable=True),
        sa.Column("fraction", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("val_loss", sa.Float(), nullable=True),
        sa.Column("best_val_loss", sa.Float(), nullable=True),
        sa.Column("lr", sa.Float(), nullable=True),
        _ts("created_at", nullable=False),
        sa.CheckConstraint(_in("state", STATES), name=op.f("ck_attempts_state")),
        sa.CheckConstraint(f"failure_kind IS NULL OR {_in('failure_kind', FAILURE_KINDS)}",
                           name=op.f("ck_attempts_failure_kind")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE",
                                name=op.f("fk_attempts_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint("run_id", "attempt_no", name=op.f("uq_attempts_run_id_attempt_no")),
    )
    op.create_index("ix_attempts_queued", "attempts", [sa.literal_column("priority").desc(), "id"],
                    **_partial("state = 'queued'"))
    op.create_index("ix_attempts_leased", "attempts", ["lease_expires_at"],
                    **_partial("state IN ('claimed', 'running')"))
    op.create_index("uq_attempts_live_run", "attempts", ["run_id"], unique=True,
                    **_partial("state IN ('queued', 'claimed', 'running')"))
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        _ts("at", nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        _json("payload_json"),
        sa.ForeignKeyConstraint(["attempt_id"], ["attempts.id"], ondelete="CASCADE",
                                name=op.f("fk_events_attempt_id_attempts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_attempt_id"), "events", ["attempt_id"])
    op.create_table(
        "metrics",
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["attempt_id"], ["attempts.id"], ondelete="CASCADE",
                                name=op.f("fk_metrics_attempt_id_attempts")),
        sa.PrimaryKeyConstraint("attempt_id", "name", "step", name=op.f("pk_metrics")),
    )


def downgrade() -> None:
    op.drop_table("metrics")
    op.drop_table("events")
    op.drop_table("attempts")
    op.drop_table("runs")
    op.drop_table("workers")
    op.drop_table("studies")
