"""Fixtures for the worker tests: a migrated queue on SQLite (a file) and on PostgreSQL."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.plan import RunPlan, StudyPlan
from orchestrator.queue import migrate
from orchestrator.queue.repo import QueueRepo

PG_ENV = "RECIP_TEST_PG_URL"


def _pg_or_skip() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("RECIP_REQUIRE_PG") == "1":
            pytest.fail(f"{PG_ENV} is unset but RECIP_REQUIRE_PG=1")
        pytest.skip(f"{PG_ENV} is unset: no PostgreSQL to test against")
    return url


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("workers-template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _pg_template() -> Iterator[tuple[str, str]]:
    import sqlalchemy as sa

    base = _pg_or_skip()
    name = f"recip_wtpl_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(base).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    try:
        yield base, name
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _pg_database(base: str, template: str) -> tuple[str, Any]:
    import sqlalchemy as sa

    name = f"recip_w_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    url = sa.make_url(base).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(params=["sqlite", "postgres"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty queue database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "queue.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    base, template = request.getfixturevalue("_pg_template")
    url, drop = _pg_database(base, template)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def repo(queue_url: str) -> Iterator[QueueRepo]:
    r = QueueRepo.open(queue_url)
    try:
        yield r
    finally:
        r.close()


def plan(study: str = "wt", steps: tuple[str, ...] = ("V0",), seeds: tuple[int, ...] = (1,),
         budget_s: float | None = 30.0, max_attempts: int = 3) -> StudyPlan:
    """A small study whose configs the fake runner reads (train.log_every, budget)."""
    runs = []
    for step in steps:
        for seed in seeds:
            config = {"study": study, "step": step, "seed": seed,
                      "train": {"log_every": 10, "budget": {"seconds": budget_s},
                                "max_iters": 1000}}
            runs.append(RunPlan(step=step, seed=seed, config=config,
                                config_hash=f"{step}-{seed}-{budget_s}",
                                budget_seconds=budget_s, max_attempts=max_attempts))
    return StudyPlan(name=study, description="worker tests", spec_hash="s" * 16,
                     spec={"study": study}, runs=tuple(runs))


def utc(seconds: float = 0.0) -> datetime:
    from datetime import timedelta

    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
