"""metric series read index: (attempt_id, name, step, value)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

`recip report` reads metric series by (attempt, name or name prefix) in step order. The
primary key (attempt_id, name, step) finds the rows but not `value`, so every row cost a
second lookup (SQLite: into the rowid table; PostgreSQL: into the heap). With `value` in
the key the same range is a covering (SQLite) / index-only (PostgreSQL) scan: 1.7x faster
for the `stats/` prefix at 1,000 runs / 1M rows (docs/performance.md). The cost: one more
B-tree over `metrics`, written by every `record_metrics`.
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_metrics_series", "metrics", ["attempt_id", "name", "step", "value"])


def downgrade() -> None:
    op.drop_index("ix_metrics_series", table_name="metrics")
