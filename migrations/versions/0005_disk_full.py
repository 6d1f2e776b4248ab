"""failure kind disk_full: the attempts.failure_kind CHECK admits 'disk_full'

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Only the CHECK constraint changes (every stored row satisfies the wider one). PostgreSQL:
drop and re-add the constraint. SQLite cannot alter a CHECK; instead of rebuilding the table
(which would have to re-create its partial indexes), the CREATE TABLE text in sqlite_master
is edited under `PRAGMA writable_schema`, the procedure SQLite's ALTER TABLE documentation
gives for changes that do not touch the stored data, and the schema version is bumped so
every connection re-reads it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

OLD_KINDS = ("exception", "oom", "diverged", "crashed", "spawn")
NEW_KINDS = (*OLD_KINDS, "disk_full")
NAME = "ck_attempts_failure_kind"


def _check(kinds: tuple[str, ...]) -> str:
    return f"failure_kind IS NULL OR failure_kind IN ({', '.join(repr(k) for k in kinds)})"


def _sqlite_swap(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    conn = op.get_bind()
    old_in = f"failure_kind IN ({', '.join(repr(k) for k in old)})"
    new_in = f"failure_kind IN ({', '.join(repr(k) for k in new)})"
    sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'attempts'").scalar_one()
    if new_in in sql:
        return
    if old_in not in sql:
        raise RuntimeError(f"attempts table has no {NAME} constraint to widen")
    if old == NEW_KINDS:  # downgrade: refuse while rows use the kind being removed
        used = conn.exec_driver_sql(
            "SELECT count(*) FROM attempts WHERE failure_kind = 'disk_full'").scalar_one()
        if used:
            raise RuntimeError(f"{used} attempts are failed:disk_full; cannot downgrade")
    version = conn.exec_driver_sql("PRAGMA schema_version").scalar_one()
    conn.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        conn.execute(sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND "
                             "name = 'attempts'"), {"sql": sql.replace(old_in, new_in)})
        conn.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        conn.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_swap(OLD_KINDS, NEW_KINDS)
        return
    op.drop_constraint(NAME, "attempts", type_="check")
    op.create_check_constraint(op.f(NAME), "attempts", _check(NEW_KINDS))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_swap(NEW_KINDS, OLD_KINDS)
        return
    # never rewrites history: re-adding the narrower CHECK fails while rows use disk_full
    op.drop_constraint(NAME, "attempts", type_="check")
    op.create_check_constraint(op.f(NAME), "attempts", _check(OLD_KINDS))
