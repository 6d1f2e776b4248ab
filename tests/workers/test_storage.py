"""Checkpoint storage any box can read, and preemption, with the real queue (SQLite file and
PostgreSQL), a scripted fake trainer and two "boxes" = two WorkerLoops with their own runs
dirs. A box's runs dir is deleted when it goes away, as its disk would be."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.queue.repo import QueueRepo
from tests.workers.conftest import plan
from tests.workers.fakes import FakeRunner, Script
from tests.workers.test_loop import make_loop, states
from workers.clock import FakeClock
from workers.storage import Storage
from workers.train import artifacts


def write_checkpoint(runner: FakeRunner, data: bytes) -> Any:
    def hook() -> None:
        (runner.spawns[-1].outdir / artifacts.CHECKPOINT).write_bytes(data)
    return hook


def uploaded(storage: str, rel: str) -> Any:
    """A hook that waits (real time) for the background upload the fake clock outran."""
    def hook() -> None:
        st = Storage(storage)
        deadline = time.monotonic() + 10
        while not st.fs.exists(f"{st.root}/{rel}/{artifacts.CHECKPOINT}"):
            assert time.monotonic() < deadline, "the checkpoint was never uploaded"
            time.sleep(0.01)
    return hook


@pytest.mark.parametrize("store", ["path", "memory"])
def test_a_lost_attempt_resumes_on_another_box_from_the_stored_checkpoint(
        repo: QueueRepo, tmp_path: Path, store: str) -> None:
    storage = str(tmp_path / "shared") if store == "path" else f"memory://recip-{id(repo)}"
    clock = FakeClock()
    study = plan()
    repo.submit(study, clock.now())
    run = f"wt/V0/seed1/{study.runs[0].config_hash[:12]}-run1"  # ids.attempt_dir's layout
    box_a, box_b = tmp_path / "a", tmp_path / "b"
    runner = FakeRunner(clock)
    # box A checkpoints at 1.5 s (uploaded from the 2 s poll, recorded at the 3 s heartbeat),
    # then stalls past its lease: another process reaps it
    reap = (3.5, lambda: repo.reap_expired(clock.now() + timedelta(seconds=60)))
    runner.default = Script(iters=10, hooks=[(1.5, write_checkpoint(runner, b"iter 15")),
                                             (2.6, uploaded(storage, f"{run}/attempt1")),
                                             reap])
    [lost] = make_loop(repo, box_a, clock, runner, max_attempts=1,
                       storage=storage).run().outcomes
    assert lost.state == "lost"
    shutil.rmtree(box_a)  # box A is gone, and its disk with it

    runner.default = Script(iters=2)
    [done] = make_loop(repo, box_b, clock, runner, worker_id="w2", max_attempts=1,
                       storage=storage).run().outcomes
    assert (done.state, done.attempt_no) == ("succeeded", 2)
    resumed = runner.spawns[1].resume_from
    assert resumed is not None and resumed.is_relative_to(box_b)
    assert (resumed / artifacts.CHECKPOINT).read_bytes() == b"iter 15"
    [event] = [e for e in repo.events(lost.attempt_id) if e["kind"] == "checkpoint"]
    assert event["payload"]["uri"].endswith(f"{run}/attempt1/checkpoint.pt")
    # the finished attempt's artifacts are in storage too
    st = Storage(storage)
    assert st.fs.exists(f"{st.root}/{run}/attempt2/{artifacts.RESULT}")


def test_a_preempted_attempt_costs_no_retry_and_resumes_elsewhere(repo: QueueRepo,
                                                                 tmp_path: Path) -> None:
    storage = str(tmp_path / "shared")
    clock = FakeClock()
    repo.submit(plan(max_attempts=1), clock.now())
    runner = FakeRunner(clock)
    # a spot notice: the attempt's process gets SIGTERM (checkpoints within the window, exits 3)
    notice = (2.5, lambda: runner.spawns[-1].proc.terminate())
    runner.default = Script(iters=10, hooks=[notice])
    [given_back] = make_loop(repo, tmp_path / "a", clock, runner, max_attempts=1,
                             storage=storage).run().outcomes
    assert (given_back.state, given_back.exit_code) == ("queued", 3)
    assert states(repo, clock)[("V0", 1)] == ("queued", 1, None)  # the same attempt row
    [requeued] = [e for e in repo.events(given_back.attempt_id) if e["kind"] == "requeued"]
    assert requeued["payload"]["reason"] == "preempted"
    shutil.rmtree(tmp_path / "a")

    runner.default = Script(iters=2)
    [done] = make_loop(repo, tmp_path / "b", clock, runner, worker_id="w2", max_attempts=1,
                       storage=storage).run().outcomes
    # max_attempts=1 and it still ran: the preemption was not charged
    assert (done.attempt_id, done.attempt_no, done.state) == (
        given_back.attempt_id, 1, "succeeded")
    resumed = runner.spawns[1].resume_from
    assert resumed is not None and (resumed / artifacts.CHECKPOINT).read_bytes() == \
        b"fake checkpoint"


def test_no_storage_configured_keeps_everything_in_the_runs_dir(repo: QueueRepo,
                                                                tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    runner = FakeRunner(clock, default=Script(iters=2))
    [done] = make_loop(repo, tmp_path / "box", clock, runner, max_attempts=1).run().outcomes
    assert done.state == "succeeded"
    assert [e for e in repo.events(done.attempt_id) if e["kind"] == "checkpoint"] == []
    assert [p.name for p in (tmp_path / "box").iterdir()] == ["runs"]


class _Unreachable(Exception):
    pass


def test_unreachable_storage_fails_the_attempt_to_start_not_the_worker(
        repo: QueueRepo, tmp_path: Path) -> None:
    """An object store this box cannot reach (a fake fsspec backend that raises, at the
    network boundary): the resumed attempt fails as `spawn`, a box problem, and the worker
    goes on to the next attempt."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class Unreachable(MemoryFileSystem):
        protocol = "unreachable"

        def exists(self, path: str, **kw: Any) -> bool:
            raise _Unreachable("connection timed out")

    fsspec.register_implementation("unreachable", Unreachable, clobber=True)
    clock = FakeClock()
    repo.submit(plan(steps=("V0", "V1")), clock.now())
    runner = FakeRunner(clock, default=Script(iters=2))
    report = make_loop(repo, tmp_path, clock, runner, max_attempts=2,
                       storage="unreachable://bucket/recip").run()
    assert [(o.state, o.failure_kind) for o in report.outcomes] == [("failed", "spawn")] * 2
    assert "checkpoint storage unreachable://bucket/recip: connection timed out" in (
        report.outcomes[0].error or "")
    assert runner.spawns == []
