"""The worker on a full disk: `failed:disk_full` (never retried automatically) whether the
trainer says so, exits without room for result.json, or the worker itself cannot write the
attempt dir (a real full tmpfs); and no claim at all below the free-space threshold."""

from __future__ import annotations

from pathlib import Path

from orchestrator.core.states import FailureKind
from orchestrator.queue.repo import QueueRepo
from tests.small_fs import fill, small_filesystem
from tests.workers.conftest import plan
from tests.workers.fakes import FakeRunner, Script
from tests.workers.test_loop import make_loop, states
from workers.clock import FakeClock
from workers.train import artifacts


def test_a_trainer_reporting_disk_full_is_failed_disk_full_and_not_retried(
        repo: QueueRepo, tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    runner = FakeRunner(clock, default=Script(
        iters=2, status=artifacts.STATUS_DISK_FULL, exit_code=1,
        error=("DiskFull", "disk full writing /runs/x/.checkpoint.pt.tmp.7 (12 KB free on its "
                           "filesystem): free space there ...")))
    report = make_loop(repo, tmp_path, clock, runner, until_empty=True).run()
    [out] = report.outcomes
    assert (out.state, out.failure_kind) == ("failed", "disk_full")
    attempt = repo.attempt(out.attempt_id)
    assert attempt.error_type == "DiskFull" and "12 KB free" in (attempt.error_message or "")
    assert states(repo, clock)[("V0", 1)] == ("failed", 1, "disk_full")  # nothing requeued
    assert "free space" in FailureKind.DISK_FULL.advice


def test_no_room_for_result_json_is_disk_full_too(repo: QueueRepo, tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    runner = FakeRunner(clock, default=Script(iters=2, status=None,
                                              exit_code=artifacts.EXIT_DISK_FULL))
    [out] = make_loop(repo, tmp_path, clock, runner, max_attempts=1).run().outcomes
    assert (out.state, out.failure_kind, out.exit_code) == ("failed", "disk_full", 4)
    message = repo.attempt(out.attempt_id).error_message or ""
    assert message.startswith(f"disk full writing {out.artifact_dir} (") and "free" in message
    assert states(repo, clock)[("V0", 1)] == ("failed", 1, "disk_full")


def test_the_worker_writing_the_attempt_dir_on_a_full_disk(repo: QueueRepo,
                                                          tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    with small_filesystem(tmp_path / "runs", 64 * 1024) as runs:
        fill(runs)
        runner = FakeRunner(clock)
        [out] = make_loop(repo, tmp_path, clock, runner, max_attempts=1,
                          min_free_bytes=0).run().outcomes
        assert (out.state, out.failure_kind) == ("failed", "disk_full")
        assert runner.spawns == []
        message = repo.attempt(out.attempt_id).error_message or ""
        assert message.startswith(f"disk full writing {runs}") and "free on its" in message
        assert not [p for p in runs.rglob("*") if ".tmp." in p.name]
    assert states(repo, clock)[("V0", 1)] == ("failed", 1, "disk_full")


def test_below_the_threshold_the_worker_claims_nothing_and_says_so(
        repo: QueueRepo, tmp_path: Path, caplog) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    (tmp_path / "runs").mkdir()
    runner = FakeRunner(clock)
    caplog.set_level("WARNING")
    report = make_loop(repo, tmp_path, clock, runner, until_empty=True,
                       min_free_bytes=2**62).run()
    assert (report.outcomes, report.reason, runner.spawns) == ((), "low-disk", [])
    assert states(repo, clock)[("V0", 1)] == ("queued", 1, None)
    assert any("not claiming:" in r.getMessage() and "free in" in r.getMessage()
               for r in caplog.records)


def test_workers_up_refuses_a_runs_dir_below_the_threshold(sqlite_url: str, tmp_path: Path,
                                                           capfd) -> None:
    from orchestrator.cli.app import run

    with small_filesystem(tmp_path / "runs", 64 * 1024) as runs:
        fill(runs)
        rc = run(["workers", "up", "--runs-dir", str(runs), "--db", sqlite_url])
        out, err = capfd.readouterr()
        assert (rc, out) == (1, "")
        assert err.startswith("error: only ") and f"free in {runs}: a worker needs 200.0 MB" in err
        assert "RECIP_MIN_FREE_MB" in err and len(err.splitlines()) == 1


def test_a_step_id_with_a_newline_never_becomes_a_directory(repo: QueueRepo,
                                                           tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(steps=("V0\n",)), clock.now())
    runner = FakeRunner(clock)
    [out] = make_loop(repo, tmp_path, clock, runner, max_attempts=1).run().outcomes
    assert (out.state, out.failure_kind) == ("failed", "spawn")
    assert "unsafe step name 'V0\\n'" in (out.error or "")
    assert runner.spawns == [] and not (tmp_path / "runs" / "wt" / "V0\n").exists()
