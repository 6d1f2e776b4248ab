"""make_engine, the schema gate (`migrate.check`) and the repo's error mapping: every bad
database is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.core.errors import DatabaseUnavailable, SchemaOutOfDate
from orchestrator.queue import migrate
from orchestrator.queue.db import make_engine, redact_url
from orchestrator.queue.repo import QueueRepo


def test_redact_url_hides_passwords_only():
    assert redact_url("postgresql+psycopg://bob:s3cr3t@db:5432/recip") == (
        "postgresql+psycopg://bob:***@db:5432/recip")
    assert redact_url("postgresql://bob@db/recip") == "postgresql://bob@db/recip"
    assert redact_url("sqlite:///recip.db") == "sqlite:///recip.db"


def test_sqlite_engine_uses_wal_foreign_keys_and_immediate_transactions(sqlite_url):
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        # A write transaction holds the write lock from BEGIN: a second writer waits, so a
        # read-then-write transaction never fails with SQLITE_BUSY half way.
        with engine.begin() as conn:
            other = sa.create_engine(sqlite_url, connect_args={"timeout": 0.05})
            try:
                with pytest.raises(sa.exc.OperationalError, match="locked"), other.connect() as c2:
                    c2.exec_driver_sql("BEGIN IMMEDIATE")
            finally:
                other.dispose()
    finally:
        engine.dispose()


@pytest.mark.parametrize("url, match", [
    ("nonsense", "invalid database URL 'nonsense'"),
    ("mysql://u:pw@host/db", "unsupported database 'mysql'"),
    ("sqlite://", "in-memory"),
    ("sqlite:///:memory:", "in-memory"),
])
def test_bad_urls_are_one_line(url, match):
    with pytest.raises(DatabaseUnavailable, match=match) as e:
        make_engine(url)
    assert "\n" not in str(e.value) and "pw" not in str(e.value)


def test_a_missing_directory_is_named_and_nothing_is_created(tmp_path):
    url = f"sqlite:///{tmp_path}/nowhere/recip.db"
    with pytest.raises(DatabaseUnavailable, match="nowhere does not exist"):
        make_engine(url)
    assert not (tmp_path / "nowhere").exists()


def test_a_missing_file_names_the_upgrade_command_and_is_not_created(tmp_path):
    path = tmp_path / "recip.db"
    with pytest.raises(SchemaOutOfDate, match="recip db upgrade"):
        QueueRepo.open(f"sqlite:///{path}")
    assert not path.exists()
    with pytest.raises(SchemaOutOfDate, match=f"no database at {path}"):
        migrate.check(make_engine(f"sqlite:///{path}"), f"sqlite:///{path}")
    assert not path.exists()


def test_a_known_older_schema_names_both_revisions(sqlite_url, monkeypatch):
    """A database at an older revision this code knows: the message says which it expects."""
    monkeypatch.setattr(migrate, "REVISIONS", (*migrate.REVISIONS, "9000"))
    monkeypatch.setattr(migrate, "HEAD", "9000")
    engine = make_engine(sqlite_url)
    try:
        with pytest.raises(SchemaOutOfDate, match=rf"at schema {migrate.REVISIONS[-2]}, this "
                                                  r"recip expects 9000: run `recip db upgrade"):
            migrate.check(engine, sqlite_url)
    finally:
        engine.dispose()


def test_the_schema_gate_imports_no_alembic():
    """`recip status` passes the gate in every fresh process: it must not pay for Alembic."""
    code = ("import sys, orchestrator.queue.repo; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_file_is_refused(sqlite_url):
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    path.chmod(0o444)
    with pytest.raises(DatabaseUnavailable, match="read-only"):
        make_engine(sqlite_url)


def test_an_unreachable_server_is_one_line_without_the_password():
    url = "postgresql+psycopg://bob:s3cr3t@127.0.0.1:1/recip"
    make_engine(url).dispose()  # building an engine never connects
    with pytest.raises(DatabaseUnavailable) as e:
        QueueRepo.open(url)
    text = str(e.value)
    assert "cannot connect to postgresql+psycopg://bob:***@127.0.0.1:1/recip" in text
    assert "s3cr3t" not in text and "\n" not in text
    repo = QueueRepo.open(url, check_schema=False)
    with pytest.raises(DatabaseUnavailable) as e:
        repo.study_names()
    assert "s3cr3t" not in str(e.value)
    repo.close()


def test_a_bare_postgresql_url_means_psycopg(pg_url):
    bare = pg_url.replace("postgresql+psycopg://", "postgresql://")
    repo = QueueRepo.open(bare)
    try:
        assert repo.study_names() == []
        assert repo.engine.dialect.driver == "psycopg"
    finally:
        repo.close()


def test_a_database_without_tables_names_the_upgrade_command(tmp_path, fake_clock):
    repo = QueueRepo.open(f"sqlite:///{tmp_path}/empty.db", check_schema=False)
    try:
        with pytest.raises(SchemaOutOfDate, match="recip db upgrade"):
            repo.snapshot(fake_clock.now())
    finally:
        repo.close()


def test_dropped_server_connections_are_replaced(pg_url, pg_admin, plan_factory, fake_clock):
    """A PostgreSQL restart kills every session; the pool's pre-ping reconnects."""
    with QueueRepo.open(pg_url) as repo:
        repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
        name = sa.make_url(pg_url).database
        pg_admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        assert repo.claim("w1", fake_clock.now(), timedelta(seconds=60)) is not None
        assert repo.study_names() == ["study"]
