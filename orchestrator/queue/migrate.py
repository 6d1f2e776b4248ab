"""Schema migrations: `recip db upgrade` is the only migrator.

The Alembic config is built here (script_location = the `migrations` package, version table
`recip_alembic_version`); no alembic.ini. Upgrades and downgrades hold a lock so that two
processes racing to migrate run the revisions once: `pg_advisory_xact_lock` on PostgreSQL,
`BEGIN IMMEDIATE` (the engine's write transaction) on SQLite, and on both the revisions run
inside that one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import exc
from sqlalchemy.engine import Connection

from orchestrator.core.errors import DatabaseUnavailable, QueueError
from orchestrator.queue.db import (
    READ_ONLY,
    VERSION_TABLE,
    check_sqlite_file,
    database_revision,
    describe_error,
    make_engine,
    parse_url,
    redact_url,
    sqlite_path,
)

_LOCK_KEY = 0x7265636970  # "recip"


def _script_location() -> str:
    import migrations

    return str(Path(next(iter(migrations.__path__))).resolve())


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    """An Alembic Config for `url`; with `connection`, revisions run on it."""
    cfg = Config()
    cfg.set_main_option("script_location", _script_location())
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite:///unused.db"))


def head() -> str:
    """The newest revision this code knows."""
    heads = _script().get_heads()
    if len(heads) != 1:
        raise QueueError(f"the migrations tree has {len(heads)} heads {heads}; merge them")
    return heads[0]


def known_revisions() -> frozenset[str]:
    """Every revision id in the migrations tree."""
    return frozenset(r.revision for r in _script().walk_revisions())


def current(url: str) -> str | None:
    """The revision the database at `url` is at; None for an empty (or missing) database."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and not sqlite_path(parsed).exists():
        check_sqlite_file(sqlite_path(parsed), url, must_exist=False)
        return None
    engine = make_engine(url, check_schema=False)
    try:
        with engine.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                return database_revision(conn)
    except exc.DBAPIError as e:
        raise DatabaseUnavailable(f"cannot read {redact_url(url)}: {describe_error(e)}") from e
    finally:
        engine.dispose()


RECIP_TABLES = frozenset({VERSION_TABLE, "studies", "runs", "attempts", "events", "metrics",
                          "workers"})


def refuse_foreign_sqlite(url: str) -> None:
    """QueueError when an existing SQLite file without a recip schema already holds other
    tables: `recip db upgrade` must not add recip's tables to another application's
    database. Read through a read-only connection, so the file is not touched at all (recip's
    engine would switch it to WAL): call it before anything opens the file with make_engine."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    path = sqlite_path(parsed)
    if not path.is_file():
        return
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error:
        return  # not readable as SQLite: make_engine reports it
    foreign = sorted(n for n in names - RECIP_TABLES if not n.startswith("sqlite_"))
    if foreign and VERSION_TABLE not in names:
        shown = ", ".join(foreign[:5]) + (f" (+{len(foreign) - 5} more)" if len(foreign) > 5 else "")
        raise QueueError(
            f"{redact_url(url)} holds another application's tables ({shown}) and no recip "
            "schema: recip keeps its queue in a file of its own; pass another --db")


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`, under the migration lock."""
    _run(url, lambda cfg: command.upgrade(cfg, revision))


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (`base` drops every table)."""
    _run(url, lambda cfg: command.downgrade(cfg, revision))


def _run(url: str, action: Callable[[Config], None]) -> None:
    from alembic.util import CommandError

    refuse_foreign_sqlite(url)
    engine = make_engine(url, check_schema=False)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            action(alembic_config(url, conn))
    except CommandError as e:
        raise QueueError(f"cannot migrate {redact_url(url)}: {e}") from e
    except exc.DBAPIError as e:
        raise DatabaseUnavailable(f"cannot migrate {redact_url(url)}: {describe_error(e)}") from e
    finally:
        engine.dispose()
