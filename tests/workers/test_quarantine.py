"""A bad box is set aside: three same-kind box failures in a row quarantine its worker, the
failed runs' retries go to another worker, a restart of the same host:slot inherits the
quarantine, and release lets it claim again. Real queue (SQLite file, PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.queue.repo import QueueRepo
from tests.workers.conftest import plan
from tests.workers.fakes import FakeRunner, Script
from tests.workers.test_loop import make_loop, states
from workers.clock import FakeClock
from workers.loop import WorkerLoop
from workers.quarantine import Streak

BAD, RESTARTED = "testhost:gpu0-111", "testhost:gpu0-222"


class StopWhenIdleAndQuarantined:
    """The real repo; stops the loop at its first idle heartbeat after a quarantine."""

    def __init__(self, repo: QueueRepo) -> None:
        self.repo = repo
        self.loop: WorkerLoop | None = None
        self.idle_while_quarantined = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    def worker_heartbeat(self, worker_id: str, now: Any, current_attempt: int | None = None,
                         **kw: Any) -> None:
        self.repo.worker_heartbeat(worker_id, now, current_attempt, **kw)
        if current_attempt is None and self.loop and self.loop.quarantine.reason:
            self.idle_while_quarantined += 1
            self.loop.stop()


def test_streak_counts_only_the_same_box_failure_in_a_row() -> None:
    s = Streak(3)
    assert [s.add(k) for k in ("crashed", "crashed", "oom", "oom")] == [None] * 4
    assert s.add(None) is None and s.count == 0
    assert [s.add("exception") for _ in range(5)] == [None] * 5  # code, not the box
    assert [s.add("spawn") for _ in range(3)][-1] == "3 spawn failures in a row"
    assert Streak(0).add("crashed") is None


def test_three_crashes_in_a_row_quarantine_the_worker_and_its_work_goes_elsewhere(
        repo: QueueRepo, tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(steps=("V0", "V1", "V2", "V3")), clock.now())
    queue = StopWhenIdleAndQuarantined(repo)
    bad_runner = FakeRunner(clock, default=Script(iters=1, status=None, exit_code=1))
    bad = make_loop(queue, tmp_path / "bad", clock, bad_runner, worker_id=BAD)
    queue.loop = bad
    report = bad.run()
    assert [(o.state, o.failure_kind) for o in report.outcomes] == [("failed", "crashed")] * 3
    assert bad.quarantine.reason == "3 crashed failures in a row"
    assert queue.idle_while_quarantined == 1 and len(bad_runner.spawns) == 3
    [view] = [w for w in repo.snapshot(clock.now()).workers if w.id == BAD]
    assert view.quarantined == "3 crashed failures in a row"

    # the same box restarted: same host and slot, new pid -> still set aside, claims nothing
    again = StopWhenIdleAndQuarantined(repo)
    restarted = make_loop(again, tmp_path / "bad", clock, bad_runner, worker_id=RESTARTED)
    again.loop = restarted
    assert restarted.run().outcomes == () and len(bad_runner.spawns) == 3
    assert repo.worker_quarantine(RESTARTED) == "3 crashed failures in a row"

    good_runner = FakeRunner(clock, default=Script(iters=2))
    done = make_loop(repo, tmp_path / "good", clock, good_runner, worker_id="other:gpu0-1",
                     until_empty=True).run()
    assert all(o.state == "succeeded" for o in done.outcomes) and len(done.outcomes) == 4
    assert {v[0] for v in states(repo, clock).values()} == {"succeeded"}

    assert repo.release_workers(clock.now(), worker="testhost:gpu0") == [BAD, RESTARTED]
    assert repo.worker_quarantine(RESTARTED) is None
    assert repo.release_workers(clock.now() + timedelta(seconds=1)) == []


@pytest.mark.parametrize("kinds", [("crashed", "oom", "crashed"), ("crashed", "exception")])
def test_mixed_failures_do_not_quarantine(repo: QueueRepo, tmp_path: Path,
                                          kinds: tuple[str, ...]) -> None:
    scripts = {"crashed": Script(iters=1, status=None, exit_code=1),
               "oom": Script(iters=1, status="oom", exit_code=1),
               "exception": Script(iters=1, status="failed", exit_code=1)}
    clock = FakeClock()
    steps = tuple(f"V{i}" for i in range(len(kinds)))
    repo.submit(plan(steps=steps, max_attempts=1), clock.now())
    runner = FakeRunner(clock, scripts={s: scripts[k] for s, k in zip(steps, kinds, strict=True)})
    loop = make_loop(repo, tmp_path, clock, runner, worker_id=BAD, until_empty=True)
    report = loop.run()
    assert [o.failure_kind for o in report.outcomes] == list(kinds)
    assert loop.quarantine.reason is None and repo.worker_quarantine(BAD) is None
