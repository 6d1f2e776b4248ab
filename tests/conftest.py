"""Shared fixtures: real databases (a SQLite file, a PostgreSQL database per test), a fake
clock, and a StudyPlan factory.

PostgreSQL comes from RECIP_TEST_PG_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/
postgres). Unset, the postgres cases skip with a reason; with RECIP_REQUIRE_PG=1 (CI) a
missing or unreachable server fails them instead. Each session migrates one template
database `recip_tmpl_<uuid>`; each test gets `CREATE DATABASE test_<uuid> TEMPLATE ...`,
dropped WITH (FORCE) afterwards, so parallel sessions of several people never collide.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import pytest

from orchestrator.core import ids
from orchestrator.core.plan import RunPlan, StudyPlan

PG_ENV = "RECIP_TEST_PG_URL"
REQUIRE_PG_ENV = "RECIP_REQUIRE_PG"
EPOCH = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


# -- caches -------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _own_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`recip status` caches decision lines (orchestrator/cli/decision_cache.py): the suite
    and the processes it starts write theirs into a folder of the session, never ~/.cache."""
    old = os.environ.get("RECIP_CACHE_DIR")
    os.environ["RECIP_CACHE_DIR"] = str(tmp_path_factory.mktemp("recip-cache"))
    yield
    if old is None:
        os.environ.pop("RECIP_CACHE_DIR", None)
    else:
        os.environ["RECIP_CACHE_DIR"] = old


# -- clock --------------------------------------------------------------------------------


@dataclass
class FakeClock:
    """A clock tests move by hand: `now()` is aware UTC, `advance(seconds)` moves it."""

    t: datetime = EPOCH

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> datetime:
        self.t = self.t + timedelta(seconds=seconds)
        return self.t


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


# -- plans --------------------------------------------------------------------------------


PlanFactory = Callable[..., StudyPlan]


@pytest.fixture
def plan_factory() -> PlanFactory:
    """`plan_factory(steps=("V0", "V1"), seeds=(1,), name="study", **options)` -> StudyPlan.

    Each step's config is a small dict {"study", "step", "seed", "model": {...}, "train":
    {...}}; `configs={"V1": {"lr": 1e-3}}` merges extra keys into a step's `train` (and so
    changes its hash). Other options: parents {step: parent}, priority, max_attempts,
    budget_seconds, description, code_policy, pinned_sha, source."""

    def make(
        steps: Sequence[str] = ("V0", "V1"),
        seeds: Sequence[int] = (1,),
        *,
        name: str = "study",
        configs: dict[str, dict[str, Any]] | None = None,
        parents: dict[str, str] | None = None,
        priority: int | dict[str, int] = 0,
        max_attempts: int = 3,
        budget_seconds: float | None = 60.0,
        description: str = "a test study",
        code_policy: str = "head",
        pinned_sha: str | None = None,
        source: str | None = None,
    ) -> StudyPlan:
        configs = configs or {}
        parents = parents or {}
        runs = []
        for step in steps:
            for seed in seeds:
                config = {
                    "study": name, "step": step, "seed": seed,
                    "model": {"preset": "tiny", "n_layer": 1, "n_embd": 32, "attn": "causal",
                              "mlp": "gelu"},
                    "train": {"budget": {"seconds": budget_seconds}, "lr": 6e-4,
                              **configs.get(step, {})},
                }
                runs.append(RunPlan(
                    step=step, seed=seed, config=config, config_hash=ids.config_hash(config),
                    parent=parents.get(step), description=f"step {step}",
                    priority=priority.get(step, 0) if isinstance(priority, dict) else priority,
                    max_attempts=max_attempts, budget_seconds=budget_seconds,
                ))
        spec = {"study": name, "description": description,
                "steps": {s: {"parent": parents.get(s), **configs.get(s, {})} for s in steps}}
        return StudyPlan(
            name=name, description=description,
            spec_hash=ids.spec_hash(spec), spec=spec, runs=tuple(runs), source=source,
            code_policy=code_policy, pinned_sha=pinned_sha,
        )

    return make


# -- SQLite -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session."""
    from orchestrator.queue import migrate

    path = tmp_path_factory.mktemp("sqlite_template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite file of this test's own."""
    path = tmp_path / "recip.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


# -- PostgreSQL ---------------------------------------------------------------------------


def _pg_missing(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_PG_ENV) == "1":
        pytest.fail(f"{reason} and {REQUIRE_PG_ENV}=1")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The admin URL of the test server (skips or fails when there is none)."""
    url = os.environ.get(PG_ENV)
    if not url:
        _pg_missing(f"PostgreSQL tests need {PG_ENV}")
    import sqlalchemy as sa

    from orchestrator.queue.db import parse_url

    engine = sa.create_engine(parse_url(url), poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as e:
        _pg_missing(f"PostgreSQL at {PG_ENV} is unreachable ({str(e.orig).splitlines()[0]})")
    finally:
        engine.dispose()
    yield url


class PgAdmin:
    """CREATE/DROP DATABASE on the test server (autocommit, no pooled connections)."""

    def __init__(self, server_url: str) -> None:
        import sqlalchemy as sa

        from orchestrator.queue.db import parse_url

        self.base = parse_url(server_url)
        self.engine = sa.create_engine(self.base, poolclass=sa.NullPool,
                                       isolation_level="AUTOCOMMIT")

    def url(self, name: str) -> str:
        return self.base.set(database=name).render_as_string(hide_password=False)

    def execute(self, sql: str) -> None:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            conn.execute(sa.text(sql))

    def create(self, name: str, template: str | None = None) -> str:
        suffix = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)

    def drop(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_admin(pg_server: str) -> Iterator[PgAdmin]:
    admin = PgAdmin(pg_server)
    yield admin
    admin.engine.dispose()


@pytest.fixture(scope="session")
def pg_template(pg_admin: PgAdmin) -> Iterator[str]:
    """A database migrated to head once per session; its engine is disposed, as CREATE
    DATABASE ... TEMPLATE needs it idle."""
    from orchestrator.queue import migrate

    name = f"recip_tmpl_{uuid.uuid4().hex[:12]}"
    url = pg_admin.create(name)
    try:
        migrate.upgrade(url)
        yield name
    finally:
        pg_admin.drop(name)


@pytest.fixture
def pg_url(pg_admin: PgAdmin, pg_template: str) -> Iterator[str]:
    """A migrated PostgreSQL database of this test's own."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = pg_admin.create(name, template=pg_template)
    try:
        yield url
    finally:
        pg_admin.drop(name)


@pytest.fixture
def empty_pg_url(pg_admin: PgAdmin) -> Iterator[str]:
    """An empty PostgreSQL database (no schema) of this test's own."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = pg_admin.create(name)
    try:
        yield url
    finally:
        pg_admin.drop(name)


# -- both ---------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of this test's own, on each backend."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def repo(db_url: str) -> Iterator[Any]:
    """A QueueRepo on `db_url`."""
    from orchestrator.queue.repo import QueueRepo

    r = QueueRepo.open(db_url)
    try:
        yield r
    finally:
        r.close()
