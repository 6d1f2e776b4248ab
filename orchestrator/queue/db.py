"""Engines for the queue: a SQLite file or PostgreSQL (the schema check is `migrate.check`).

SQLite: WAL, foreign keys on, a 30 s busy timeout, `BEGIN IMMEDIATE` on every write
transaction (the recipe of SQLAlchemy's SQLite dialect docs), so read-then-write transactions
never fail with SQLITE_BUSY; read-only connections (`read_only()`) begin DEFERRED.
PostgreSQL: psycopg 3, pre-ping. Driver errors become `DatabaseUnavailable` /
`SchemaOutOfDate` with one line that never contains a password.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine

from orchestrator.core.errors import DatabaseUnavailable
from orchestrator.queue.redact import redact_text
from orchestrator.queue.redact import redact_url as redact_url  # re-exported
from orchestrator.queue.types import finite_json

READ_ONLY = "recip_read_only"
_URL_HELP = "expected sqlite:///PATH.db or postgresql+psycopg://USER@HOST:PORT/DB"
def parse_url(url: str) -> URL:
    """The SQLAlchemy URL for `url`; bare `postgresql://` means psycopg 3."""
    try:
        parsed = sa.make_url(url)
    except (exc.ArgumentError, ValueError) as e:
        raise DatabaseUnavailable(f"invalid database URL {redact_url(url)!r}: {_URL_HELP}") from e
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.host and "@" in parsed.host:
        # a raw `@` in the password (`u:p@ss@host`): SQLAlchemy cuts at the first `@`,
        # a user means the last one
        extra, _, host = parsed.host.rpartition("@")
        parsed = parsed.set(password=f"{parsed.password or ''}@{extra}", host=host)
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseUnavailable(
            f"unsupported database {parsed.get_backend_name()!r} in {redact_url(url)!r}: {_URL_HELP}"
        )
    return parsed


def sqlite_path(parsed: URL) -> Path:
    """The file of a SQLite URL; in-memory databases are refused."""
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise DatabaseUnavailable(
            "an in-memory SQLite database cannot be shared by workers: "
            "use a file, e.g. sqlite:///recip.db"
        )
    return Path(database)


SQLITE_OPTIONS = {"mode": ("ro", "rw", "rwc")}


def sqlite_read_only(parsed: URL, url: str) -> bool:
    """Whether a SQLite URL asks for a read-only database (`?mode=ro`); DatabaseUnavailable
    for a query option recip would silently ignore."""
    for key, value in parsed.query.items():
        allowed = SQLITE_OPTIONS.get(key)
        if allowed is None or value not in allowed:
            raise DatabaseUnavailable(
                f"unsupported SQLite URL option {key}={value!r} in {redact_url(url)}: recip "
                "knows ?mode=ro (read-only) and ?mode=rw; drop the option")
    return parsed.query.get("mode") == "ro"


def _json_serializer(value: Any) -> str:
    return json.dumps(finite_json(value), allow_nan=False, default=str)


def make_engine(url: str) -> Engine:
    """An engine for `url`; it only builds the engine (`migrate.check` checks the schema).

    Raises DatabaseUnavailable for a bad URL, a missing directory or a read-only file; an
    unreachable server shows on first connect."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed)
        read_only = sqlite_read_only(parsed, url)
        if read_only:  # SQLite itself refuses every write: opened as a URI with mode=ro
            check_sqlite_readable(path, url)
            target = sa.engine.URL.create("sqlite", database=f"file:{path.resolve()}",
                                          query={"mode": "ro", "uri": "true"})
        else:
            check_sqlite_file(path)
            target = parsed.set(query={})
        engine = sa.create_engine(
            target,
            connect_args={"timeout": 30, "check_same_thread": False},
            json_serializer=_json_serializer,
            pool_size=8,
            max_overflow=32,
        )
        _install_sqlite_hooks(engine, read_only=read_only)
    else:
        engine = sa.create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 10},
            json_serializer=_json_serializer,
            pool_size=8,
            max_overflow=32,
        )
    return engine


def check_sqlite_file(path: Path) -> None:
    """DatabaseUnavailable when SQLite could not open, write or create `path`."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DatabaseUnavailable(
            f"cannot open SQLite database {path}: directory {parent} does not exist; "
            "create it or pass another --db"
        )
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise DatabaseUnavailable(
                f"cannot write SQLite database {path}: the file is read-only; "
                "fix its permissions or pass another --db"
            )
        if not os.access(parent, os.W_OK):
            raise DatabaseUnavailable(
                f"cannot write SQLite database {path}: directory {parent} is read-only "
                "(SQLite needs it for its WAL file); fix its permissions or pass another --db"
            )
    elif not os.access(parent, os.W_OK):
        raise DatabaseUnavailable(
            f"cannot create SQLite database {path}: directory {parent} is read-only; "
            "pass another --db"
        )


def check_sqlite_readable(path: Path, url: str) -> None:
    """DatabaseUnavailable unless `path` is an existing, readable SQLite file (?mode=ro)."""
    if not path.is_file():
        raise DatabaseUnavailable(
            f"no database at {path} to open read-only (?mode=ro): check the path, or drop "
            "?mode=ro and run `recip db upgrade` to create it")
    if not os.access(path, os.R_OK):
        raise DatabaseUnavailable(f"cannot read SQLite database {path}: fix its permissions")


def is_read_only(engine: Engine) -> bool:
    """Whether `engine` was opened from a read-only SQLite URL (`?mode=ro`)."""
    return engine.dialect.name == "sqlite" and engine.url.query.get("mode") == "ro"


def _install_sqlite_hooks(engine: Engine, *, read_only: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not read_only:  # changing the journal mode is a write
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if read_only or conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def describe_error(e: BaseException) -> str:
    """The first line of a driver error, without SQL or parameters."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return redact_text(text[0] if text else type(orig).__name__)
