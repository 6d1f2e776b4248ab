"""PostgreSQL: the metric series index compares names bytewise (varchar_pattern_ops)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

`recip report` reads metric names by prefix (`stats/`, `grad/`, `kv_keep_ratio`). Under a
linguistic collation a B-tree on `name` cannot serve `name LIKE 'stats/%'`, so PostgreSQL
scanned the whole `metrics` table for every prefix read, also for the `val_loss` names
OR'd with the `kv_keep_ratio` prefix (61-75 ms at 1M rows, 18-19 ms with this index,
2026-12-04, load 0.6). `varchar_pattern_ops` keeps equality and makes the prefix a key
range; nothing orders metrics by `name` in the collation's order. SQLite compares bytewise
already (`queue.reads._name_prefix`): no change there.
"""

from __future__ import annotations

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = ["attempt_id", "name", "step", "value"]


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.drop_index("ix_metrics_series", table_name="metrics")
    op.create_index("ix_metrics_series", "metrics", COLUMNS,
                    postgresql_ops={"name": "varchar_pattern_ops"})


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.drop_index("ix_metrics_series", table_name="metrics")
    op.create_index("ix_metrics_series", "metrics", COLUMNS)
