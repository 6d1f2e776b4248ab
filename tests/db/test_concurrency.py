"""Many claimers against one queue, on both backends: every attempt is claimed exactly once."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.queue.repo import QueueRepo
from tests.db.claimers import NOW, claim_until_empty

N_ATTEMPTS = 500


def _fill(repo: QueueRepo, plan_factory) -> None:
    plan = plan_factory(steps=[f"S{i:02d}" for i in range(50)], seeds=range(10))
    assert repo.submit(plan, NOW).queued_attempts == N_ATTEMPTS


def _check(repo: QueueRepo, per_worker: dict[str, list[int]]) -> None:
    claimed = [a for ids in per_worker.values() for a in ids]
    assert len(claimed) == len(set(claimed)) == N_ATTEMPTS
    with repo.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, state, worker_id FROM attempts")).all()
    assert {r.id for r in rows} == set(claimed)
    assert all(r.state == "claimed" for r in rows)
    owner = {a: w for w, ids in per_worker.items() for a in ids}
    assert all(owner[r.id] == r.worker_id for r in rows)


def test_16_threads_claim_each_attempt_exactly_once(repo, db_url, plan_factory):
    _fill(repo, plan_factory)
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def work(name: str) -> None:
        try:
            results[name] = claim_until_empty(db_url, name, barrier)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    _check(repo, results)
    assert sum(1 for ids in results.values() if ids) > 1  # they really competed


@pytest.mark.slow
def test_4_processes_claim_each_attempt_exactly_once(repo, db_url, plan_factory):
    _fill(repo, plan_factory)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        barrier = manager.Barrier(4)
        futures = {f"p{i}": pool.submit(claim_until_empty, db_url, f"p{i}", barrier)
                   for i in range(4)}
        results = {name: f.result(timeout=120) for name, f in futures.items()}
    _check(repo, results)
    assert sum(1 for ids in results.values() if ids) > 1


def _together(n: int, fn) -> list:
    barrier = threading.Barrier(n)
    out: list = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return out


def test_concurrent_submits_of_one_plan_write_it_once(repo, db_url, plan_factory):
    plan = plan_factory(steps=[f"S{i}" for i in range(20)], seeds=(1, 2))

    def submit():
        with QueueRepo.open(db_url) as r:
            return r.submit(plan, NOW)

    results = _together(4, submit)
    assert sum(r.study_created for r in results) == 1
    assert sum(r.queued_attempts for r in results) == 40
    with repo.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM attempts")).scalar_one() == 40


def test_concurrent_resumes_queue_each_run_once(repo, db_url, plan_factory):
    from orchestrator.core.states import AttemptState, FailureKind

    repo.submit(plan_factory(steps=[f"S{i}" for i in range(10)]), NOW)
    lease = timedelta(minutes=5)
    while (c := repo.claim("w", NOW, lease)) is not None:
        repo.start(c.attempt_id, "w", NOW, lease, artifact_dir="/a", code_sha=None,
                   code_dirty=None, diff_hash=None, host="h", gpu=None, pid=None, env={})
        repo.finish(c.attempt_id, "w", NOW, AttemptState.FAILED,
                    failure_kind=FailureKind.EXCEPTION)

    def resume():
        with QueueRepo.open(db_url) as r:
            return r.new_attempts("study", NOW)

    created = [x for batch in _together(4, resume) for x in batch]
    assert sorted(created) == [(f"S{i}", 1, 2) for i in range(10)]
