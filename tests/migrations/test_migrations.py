"""The migrations tree, on both backends: up and down cleanly, equal to the schema module,
stale databases refused with the fix, stored old files upgraded."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from orchestrator.core.errors import SchemaOutOfDate
from orchestrator.queue import migrate
from orchestrator.queue.db import VERSION_TABLE, make_engine
from orchestrator.queue.repo import QueueRepo
from orchestrator.queue.schema import metadata

ASSETS = Path(__file__).parent / "assets"
MIGRATIONS = Path(migrate._script_location())
TABLES = {"studies", "runs", "attempts", "workers", "events", "metrics"}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/empty.db"
    else:
        yield str(request.getfixturevalue("empty_pg_url"))


def tables(url: str) -> set[str]:
    engine = make_engine(url, check_schema=False)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def diff(url: str, target: sa.MetaData) -> list[object]:
    engine = make_engine(url, check_schema=False)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
            return list(compare_metadata(ctx, target))
    finally:
        engine.dispose()


def stamp(url: str, revision: str) -> None:
    engine = make_engine(url, check_schema=False)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


def test_the_tree_has_one_head_and_its_own_version_table():
    assert migrate.head() == "0002"
    assert {"0001", "0002"} <= migrate.known_revisions()


def test_base_head_base_head(empty_url):
    assert migrate.current(empty_url) is None
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == migrate.head()
    assert tables(empty_url) == TABLES | {VERSION_TABLE}
    migrate.downgrade(empty_url, "base")
    assert migrate.current(empty_url) is None
    assert tables(empty_url) <= {VERSION_TABLE}
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == migrate.head()
    assert diff(empty_url, metadata) == []


def test_autogenerate_finds_no_difference(db_url):
    assert diff(db_url, metadata) == []


def test_the_comparison_would_see_a_difference(db_url):
    """Guards the test above: a schema change the migrations lack is found."""
    changed = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["attempts"].append_column(sa.Column("extra", sa.Integer()))
    sa.Table("new_table", changed, sa.Column("id", sa.Integer, primary_key=True))
    kinds = {d[0] for d in diff(db_url, changed) if isinstance(d, tuple)}
    assert {"add_column", "add_table"} <= kinds


def test_a_database_behind_head_names_recip_db_upgrade(empty_url):
    with pytest.raises(SchemaOutOfDate, match="recip db upgrade"):
        QueueRepo.open(empty_url)
    migrate.upgrade(empty_url)
    migrate.downgrade(empty_url, "base")
    with pytest.raises(SchemaOutOfDate, match=r"no recip schema: run `recip db upgrade"):
        QueueRepo.open(empty_url)


def test_a_database_ahead_of_head_says_recip_is_older(db_url):
    stamp(db_url, "9999")
    with pytest.raises(SchemaOutOfDate, match="9999, newer than this recip knows") as e:
        QueueRepo.open(db_url)
    assert "upgrade recip" in str(e.value)
    QueueRepo.open(db_url, check_schema=False).close()  # `recip db current` still works
    assert migrate.current(db_url) == "9999"


def test_concurrent_upgrades_run_the_revisions_once(empty_url):
    errors: list[BaseException] = []

    def up() -> None:
        try:
            migrate.upgrade(empty_url)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=up) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert migrate.current(empty_url) == migrate.head()


@pytest.mark.parametrize("asset", sorted(p.name for p in ASSETS.glob("*.db")))
def test_stored_old_databases_upgrade(asset, tmp_path, fake_clock):
    path = tmp_path / asset
    shutil.copyfile(ASSETS / asset, path)
    url = f"sqlite:///{path}"
    assert migrate.current(url) == asset.removesuffix(".db")
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head()
    assert diff(url, metadata) == []
    with QueueRepo.open(url) as repo:
        (study,) = repo.snapshot(fake_clock.now()).studies
        assert study.counts == {"succeeded": 1, "queued": 1}
        done = next(r for r in study.runs if r.state == "succeeded")
        assert done.best_val_loss == 4.1 and done.heartbeat_at is not None
        assert len(repo.metric_series([done.attempt_id])[done.attempt_id]["loss"]) == 10
        claimed = repo.claim("new-worker", fake_clock.now(), timedelta(seconds=60))
        assert claimed is not None and claimed.step == "V1"


def test_migrations_never_import_the_live_schema():
    for path in [MIGRATIONS / "env.py", *MIGRATIONS.glob("versions/*.py")]:
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported |= {f"{node.module}.{a.name}" for a in node.names} | {node.module or ""}
        assert not {m for m in imported if m.startswith(("orchestrator.queue.schema",
                                                         "orchestrator.queue.repo"))}, path
    code = ("import sys, orchestrator.queue.migrate, orchestrator.queue.db; "
            "print('orchestrator.queue.schema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
