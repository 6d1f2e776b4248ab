"""The reaper race (the one that shipped double execution in River and solid_queue): an
attempt finishes while its expired lease is being reaped. Two QueueRepos on one database
(two processes' worth of engines), a delay injected inside one side's transaction while the
other side runs. On both backends: exactly one outcome per attempt, never a `finished` and a
`lost` for the same attempt, and a successor only when the attempt was lost."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.core.errors import LeaseLost
from orchestrator.core.states import AttemptState
from orchestrator.queue.repo import QueueRepo

LEASE = timedelta(seconds=5)
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
DELAY_S = 0.6


def delay_inside(repo: QueueRepo, kind: str, entered: threading.Event) -> None:
    """Sleep inside `repo`'s transaction right after its guarded UPDATE (at its `kind`
    event), holding the row (PostgreSQL) or the write lock (SQLite)."""
    original = repo._event

    def slow(conn: Any, ids: Any, now: datetime, k: str, payload: Any = None) -> None:
        original(conn, ids, now, k, payload)
        if k == kind:
            entered.set()
            time.sleep(DELAY_S)

    repo._event = slow  # type: ignore[method-assign]


@pytest.mark.parametrize("slow_side", ["reaper", "finisher"])
def test_finish_during_reap_has_exactly_one_outcome(db_url: str, plan_factory: Any,
                                                    slow_side: str) -> None:
    setup = QueueRepo.open(db_url)
    reaper, finisher = QueueRepo.open(db_url), QueueRepo.open(db_url)
    try:
        setup.submit(plan_factory(steps=("V0",), seeds=(1,)), T0)
        claimed = setup.claim("w1", T0, LEASE)
        assert claimed is not None
        setup.start(claimed.attempt_id, "w1", T0, LEASE, artifact_dir="runs/x", code_sha=None,
                    code_dirty=None, diff_hash=None, host="h", gpu=None, pid=1, env={})
        late = T0 + LEASE + timedelta(seconds=1)  # the lease has expired: reapable
        entered = threading.Event()
        slow = reaper if slow_side == "reaper" else finisher
        delay_inside(slow, "lost" if slow_side == "reaper" else "finished", entered)
        outcome: dict[str, Any] = {}

        def reap() -> None:
            outcome["reaped"] = reaper.reap_expired(late)

        def finish() -> None:
            try:
                finisher.finish(claimed.attempt_id, "w1", late, AttemptState.SUCCEEDED,
                                result={"status": "succeeded"})
                outcome["finished"] = True
            except LeaseLost:
                outcome["finished"] = False

        first, second = (reap, finish) if slow_side == "reaper" else (finish, reap)
        t1 = threading.Thread(target=first)
        t1.start()
        assert entered.wait(10)
        t2 = threading.Thread(target=second)  # runs while the first holds its transaction
        t2.start()
        t1.join(30)
        t2.join(30)

        kinds = [e["kind"] for e in setup.events(claimed.attempt_id)]
        attempts = setup.study_results(claimed.study).attempts
        if slow_side == "reaper":  # the reaper won: the late finish is refused
            assert outcome == {"reaped": [claimed.attempt_id], "finished": False}
            assert setup.attempt(claimed.attempt_id).state == "lost"
            assert sorted((a.attempt_no, a.state) for a in attempts) == [(1, "lost"),
                                                                        (2, "queued")]
        else:  # the finish won: nothing is reaped, no successor
            assert outcome == {"reaped": [], "finished": True}
            assert setup.attempt(claimed.attempt_id).state == "succeeded"
            assert [(a.attempt_no, a.state) for a in attempts] == [(1, "succeeded")]
        assert ("lost" in kinds) != ("finished" in kinds)
        assert kinds.count("lost") + kinds.count("finished") == 1
    finally:
        for r in (setup, reaper, finisher):
            r.close()
