"""Prefix reads of metric series: exact prefix matches on both backends, and on SQLite a
key range, so `recip report` reads only the rows it returns (bench/report_bench.py)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from orchestrator.queue import reads
from orchestrator.queue.schema import METRICS

LEASE = timedelta(seconds=60)
NAMES = ("stats/gate.0", "stats/alpha.1", "stats/", "stats0", "statsx", "Stats/gate.0",
         "stats_gate", "stats%gate", "grad/alpha.0", "grad/", "loss", "val_loss", "st")


def _attempt_with_metrics(repo, plan_factory, fake_clock) -> int:
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    c = repo.claim("w1", fake_clock.now(), LEASE)
    repo.start(c.attempt_id, "w1", fake_clock.now(), LEASE, artifact_dir="/tmp/a", code_sha="abc",
               code_dirty=False, diff_hash=None, host="box", gpu=None, pid=1, env={})
    repo.record_metrics(c.attempt_id, "w1", [(n, s, float(i + s)) for i, n in enumerate(NAMES)
                                             for s in (0, 10)])
    return int(c.attempt_id)


def test_prefix_reads_return_exactly_the_names_with_that_prefix(repo, plan_factory, fake_clock):
    a = _attempt_with_metrics(repo, plan_factory, fake_clock)
    for prefix in ("stats/", "grad/", "stats", "stats_", "stats%", "S", "val_", "zzz"):
        got = repo.metric_series([a], prefix=prefix)[a]
        assert sorted(got) == sorted(n for n in NAMES if n.startswith(prefix)), prefix
        for name, points in got.items():
            i = NAMES.index(name)
            assert points == [(0, float(i)), (10, float(i + 10))]
    both = repo.metric_series([a], names=["loss"], prefix="grad/")[a]
    assert sorted(both) == ["grad/", "grad/alpha.0", "loss"]


def test_several_prefixes_and_names_read_each_series_once(repo, plan_factory, fake_clock):
    """`recip report` reads names and three prefixes in one call; a name that is also under
    a prefix ("stats/gate.0"), and prefixes that overlap ("stats", "stats/"), still give
    each series once, steps ascending, on both backends."""
    a = _attempt_with_metrics(repo, plan_factory, fake_clock)
    prefixes = ("stats/", "grad/", "stats")
    got = repo.metric_series([a], names=["loss", "stats/gate.0"], prefix=prefixes)[a]
    want = {n for n in NAMES if n.startswith(prefixes)} | {"loss"}
    assert sorted(got) == sorted(want)
    for name, points in got.items():
        i = NAMES.index(name)
        assert points == [(0, float(i)), (10, float(i + 10))], name
    assert repo.metric_series([a], prefix=())[a] == repo.metric_series([a])[a]


def test_sqlite_prefix_read_narrows_the_metrics_key(sqlite_url):
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            query = (sa.select(METRICS.c.name).where(METRICS.c.attempt_id.in_([1, 2]))
                     .where(reads._name_prefix(conn, "stats/")))
            sql = query.compile(conn, compile_kwargs={"literal_binds": True})
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    finally:
        engine.dispose()
    assert "(attempt_id=? AND name>? AND name<?)" in plan, plan


def test_sqlite_series_read_is_a_covering_index_scan(sqlite_url):
    """The series query (values included) never looks rows up in the table: migration 0002's
    (attempt_id, name, step, value) index covers it."""
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            query = (sa.select(METRICS.c.attempt_id, METRICS.c.name, METRICS.c.step,
                               METRICS.c.value)
                     .where(METRICS.c.attempt_id.in_([1, 2]))
                     .where(sa.or_(METRICS.c.name.in_(["val_loss"]),
                                   reads._name_prefix(conn, "stats/")))
                     .order_by(METRICS.c.attempt_id, METRICS.c.name, METRICS.c.step))
            sql = query.compile(conn, compile_kwargs={"literal_binds": True})
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    finally:
        engine.dispose()
    assert "COVERING INDEX ix_metrics_series" in plan, plan


def test_postgres_prefix_read_is_a_range_of_the_series_index(pg_url):
    """Migration 0007: on PostgreSQL `ix_metrics_series` compares names bytewise, so a name
    prefix (a LIKE) is an index condition, not a filter over every row of the table. The
    planner is told to avoid a sequential scan: the question is whether the index CAN serve
    the prefix, which with the collation's operator class it cannot."""
    from orchestrator.queue.db import make_engine

    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            query = (sa.select(METRICS.c.name).where(METRICS.c.attempt_id.in_([1, 2]))
                     .where(reads._name_prefix(conn, "stats/")))
            sql = query.compile(conn, compile_kwargs={"literal_binds": True})
            plan = "\n".join(str(r[0]) for r in conn.exec_driver_sql(f"EXPLAIN {sql}"))
    finally:
        engine.dispose()
    assert "ix_metrics_series" in plan and "~>=~ 'stats/'" in plan, plan
