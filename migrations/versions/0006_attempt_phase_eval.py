"""attempts: the trainer's phase and eval seconds (phase, eval_s), copied from heartbeats

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

`phase` is what progress.json says the attempt is doing (preparing_data, training, eval,
checkpoint, post_train, then its final status); `eval_s` the seconds it spent in evals and
post-train evals, outside `train_s`. The dashboard shows the phase of leased runs and counts
eval time in its ETA. Both nullable: rows of older attempts stay NULL. Adding a column is a
plain ALTER on both dialects; the downgrade drops them with a plain ALTER too (SQLite >=
3.35), because a batch move-and-copy of `attempts` would have to rebuild its partial
indexes and its hand-edited CHECK (0005).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("phase", sa.String(32), nullable=True))
    op.add_column("attempts", sa.Column("eval_s", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("attempts", "eval_s")
    op.drop_column("attempts", "phase")
