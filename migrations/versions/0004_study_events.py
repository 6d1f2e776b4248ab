"""study_events: study-level history (seeds added after a look)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Frozen copy of the table at 0004 (never import orchestrator.queue.schema here). One row per
study-level event; today the only kind is `seeds_added` (a look at the study after which
`recip seeds add` or `recip run --until-decided` queued more seeds).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "study_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload_json", sa.JSON(none_as_null=True), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE",
                                name=op.f("fk_study_events_study_id_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_events")),
    )
    op.create_index(op.f("ix_study_events_study_id"), "study_events", ["study_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_study_events_study_id"), table_name="study_events")
    op.drop_table("study_events")
