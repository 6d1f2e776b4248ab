"""The claim path's round trips: PostgreSQL claims in one statement, reaping is amortised
(at most once per REAP_EVERY of the clock a claim is given, and always on an empty queue),
and the claim still returns everything the worker needs."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import event

LEASE = timedelta(seconds=60)


def _statements(repo):
    seen: list[str] = []

    def before(conn, cursor, statement, *args):
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(repo.engine, "before_cursor_execute", before)
    return seen, lambda: event.remove(repo.engine, "before_cursor_execute", before)


def test_a_claim_without_a_due_reap_is_one_statement_on_postgres(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0", "V1")), fake_clock.now())
    assert repo.claim("w1", fake_clock.now(), LEASE) is not None  # the first claim reaps
    seen, stop = _statements(repo)
    try:
        got = repo.claim("w2", fake_clock.now(), LEASE)
    finally:
        stop()
    assert got is not None and got.step == "V1" and got.config["step"] == "V1"
    assert got.study == "study" and got.previous_artifact_dir is None
    work = [s for s in seen if s not in ("BEGIN", "COMMIT")]
    if repo.dialect == "postgresql":
        assert work == ["WITH"], seen   # pick + lease + event + run info: one CTE
    else:
        assert work == ["UPDATE", "SELECT", "INSERT"], seen
    with repo.engine.connect() as conn:
        kinds = conn.execute(sa.text(
            "SELECT kind FROM events WHERE attempt_id = :a ORDER BY id"), {"a": got.attempt_id}
        ).scalars().all()
    assert kinds == ["queued", "claimed"]


def test_reaping_is_amortised_but_an_empty_queue_always_reaps(repo, plan_factory, fake_clock):
    repo.REAP_EVERY = timedelta(minutes=10)
    repo.submit(plan_factory(steps=("V0", "V1"), max_attempts=2), fake_clock.now())
    a = repo.claim("w1", fake_clock.now(), LEASE)
    fake_clock.advance(61)  # a's lease expired; no reap is due yet
    b = repo.claim("w2", fake_clock.now(), LEASE)
    assert b is not None and b.step == "V1"
    assert repo.snapshot(fake_clock.now()).studies[0].runs[0].state == "claimed"  # not reaped
    c = repo.claim("w3", fake_clock.now(), LEASE)  # queue empty: reap, then claim the retry
    assert c is not None and c.run_id == a.run_id and c.attempt_no == 2
    assert [e["kind"] for e in repo.events(a.attempt_id)] == ["queued", "claimed", "lost"]


def test_a_due_reap_runs_before_the_claim(repo, plan_factory, fake_clock):
    repo.submit(plan_factory(steps=("V0", "V1"), max_attempts=2), fake_clock.now())
    a = repo.claim("w1", fake_clock.now(), LEASE)
    fake_clock.advance(61)  # > REAP_EVERY (1 s): this claim reaps first
    repo.claim("w2", fake_clock.now(), LEASE)
    assert [e["kind"] for e in repo.events(a.attempt_id)] == ["queued", "claimed", "lost"]
