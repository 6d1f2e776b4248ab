"""workers: quarantine (quarantined_at, quarantine_reason) and the code they run (code_sha)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

A worker (a box's GPU or CPU slot) whose attempts failed the same way k times in a row
stops claiming until `recip workers release`; a restarted worker of the same host and slot
inherits the quarantine (workers/quarantine.py, QueueRepo.quarantine_worker). code_sha is
the commit of the worker's checkout, so `recip status` can say that no live worker runs the
commit a pinned study needs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("quarantine_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("code_sha", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("code_sha")
        batch.drop_column("quarantine_reason")
        batch.drop_column("quarantined_at")
