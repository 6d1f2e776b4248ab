"""Schema migrations and the schema gate: all knowledge of schema versions lives here.

`recip db upgrade` is the only migrator. The Alembic config is built here (script_location =
the `migrations` package, version table `recip_alembic_version`); no alembic.ini. Upgrades
and downgrades hold a lock so that two processes racing to migrate run the revisions once:
`pg_advisory_xact_lock` on PostgreSQL, `BEGIN IMMEDIATE` (the engine's write transaction) on
SQLite, and on both the revisions run inside that one transaction.

`check(engine, url)` is the gate every command that opens the queue passes (as optuna's
`_VersionManager`): it reads the revision stored in the database and compares it with
`HEAD`, a constant, so the check neither imports Alembic nor parses the migration scripts
(`recip status` stays fast in a fresh process). `tests/migrations/test_migrations.py` checks
`REVISIONS` against the scripts in `migrations/versions/`: a new migration must be added there.

The dependency runs migrate -> db only: `db.make_engine` builds engines and knows nothing of
revisions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

from orchestrator.core.errors import DatabaseUnavailable, QueueError, SchemaOutOfDate
from orchestrator.queue.db import (
    READ_ONLY,
    check_sqlite_file,
    describe_error,
    make_engine,
    parse_url,
    redact_url,
    sqlite_path,
)

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "recip_alembic_version"
# Every revision in migrations/versions/, oldest first; the last is the head this code runs.
REVISIONS: tuple[str, ...] = ("0001", "0002", "0003", "0004", "0005", "0006", "0007")
HEAD = REVISIONS[-1]

_LOCK_KEY = 0x7265636970  # "recip"


def head() -> str:
    """The newest revision this code knows."""
    return HEAD


def known_revisions() -> frozenset[str]:
    """Every revision id this code knows."""
    return frozenset(REVISIONS)


def database_revision(conn: Connection) -> str | None:
    """The Alembic revision stored in the database, or None when it has none."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:
        raise SchemaOutOfDate(f"the database has several schema heads {sorted(rows)}")
    return rows[0] if rows else None


def check(engine: Engine, url: str) -> None:
    """Raise SchemaOutOfDate unless the database behind `engine` is at `HEAD`.

    A missing SQLite file is SchemaOutOfDate too (never created here); an unreachable
    server is DatabaseUnavailable. Every message names the fix."""
    fix = f"run `recip db upgrade --db {redact_url(url)}`"
    if engine.dialect.name == "sqlite":  # the URL as given (a ?mode=ro engine's is file:...)
        path = sqlite_path(parse_url(url))
        if not path.exists():
            raise SchemaOutOfDate(f"no database at {path}: {fix} to create it")
    try:
        with engine.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                stored = database_revision(conn)
    except exc.DBAPIError as e:
        raise DatabaseUnavailable(
            f"cannot connect to {redact_url(url)}: {describe_error(e)}"
        ) from e
    if stored == HEAD:
        return
    if stored is None:
        raise SchemaOutOfDate(f"database {redact_url(url)} has no recip schema: {fix}")
    if stored in REVISIONS:
        raise SchemaOutOfDate(
            f"database {redact_url(url)} is at schema {stored}, this recip expects {HEAD}: {fix}"
        )
    raise SchemaOutOfDate(
        f"database {redact_url(url)} is at schema {stored}, newer than this recip knows "
        f"(head {HEAD}): upgrade recip (`git pull` and reinstall) on this machine"
    )


def open_checked(url: str) -> Engine:
    """An engine for `url` that passed `check` (disposed again when the check fails)."""
    engine = make_engine(url)
    try:
        check(engine, url)
    except BaseException:
        engine.dispose()
        raise
    return engine


def current(url: str) -> str | None:
    """The revision the database at `url` is at; None for an empty (or missing) database."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and not sqlite_path(parsed).exists():
        check_sqlite_file(sqlite_path(parsed))
        return None
    engine = make_engine(url)
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
                          "workers", "study_events"})


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


# --- Alembic: imported only by the commands that migrate -----------------------------------


def _script_location() -> str:
    import migrations

    return str(Path(next(iter(migrations.__path__))).resolve())


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    """An Alembic Config for `url`; with `connection`, revisions run on it."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", _script_location())
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_revisions() -> tuple[str, ...]:
    """The revisions of the scripts in migrations/versions/, oldest first (parses them all;
    `REVISIONS` must equal this)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db"))
    heads = script.get_heads()
    if len(heads) != 1:
        raise QueueError(f"the migrations tree has {len(heads)} heads {heads}; merge them")
    return tuple(reversed([r.revision for r in script.walk_revisions()]))


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` (`head` = `HEAD`), under the lock."""
    from alembic import command

    target = HEAD if revision == "head" else revision
    _run(url, lambda cfg: command.upgrade(cfg, target))


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (`base` drops every table)."""
    from alembic import command

    _run(url, lambda cfg: command.downgrade(cfg, revision))


def _run(url: str, action: Callable[[Config], None]) -> None:
    from alembic.util import CommandError

    refuse_foreign_sqlite(url)
    engine = make_engine(url)
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
