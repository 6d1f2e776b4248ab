"""WorkerLoop against the real queue (SQLite file and PostgreSQL) with a scripted fake trainer
and a fake clock: success, failures, timeouts, fencing, clean stops and database outages."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.errors import DatabaseUnavailable, LeaseLost
from orchestrator.core.states import AttemptState
from orchestrator.queue.repo import QueueRepo
from tests.workers.conftest import plan
from tests.workers.fakes import FakeRunner, Script
from workers.clock import FakeClock
from workers.loop import WorkerLoop, WorkerSettings
from workers.provenance import CodeState, Provenance

CODE = CodeState(sha="c0ffee1234", dirty=True, diff_hash="d1ff")


def make_loop(repo: Any, tmp_path: Path, clock: FakeClock, runner: FakeRunner,
              worker_id: str = "w1", **kw: Any) -> WorkerLoop:
    opts: dict[str, Any] = {"lease_s": 3.0, "poll_s": 0.5, "idle_poll_s": 1.0,
                            "grace_s": 3.0, "kill_after_s": 2.0, "db_label": "test"}
    opts.update(kw)
    settings = WorkerSettings(worker_id=worker_id, runs_dir=tmp_path / "runs", **opts)
    prov = Provenance(code=CODE, host="testhost", gpu=None, versions={"python": "3.11"})
    return WorkerLoop(repo, settings, runner=runner, clock=clock, provenance=prov,
                      code_state=lambda: CODE)


def states(repo: QueueRepo, clock: FakeClock, study: str = "wt") -> dict[tuple[str, int], tuple]:
    snap = repo.snapshot(clock.now(), study)
    return {(r.step, r.seed): (r.state, r.attempt_no, r.failure_kind)
            for s in snap.studies for r in s.runs}


def test_success_records_provenance_metrics_and_files(repo: QueueRepo, tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    runner = FakeRunner(clock, default=Script(iters=5, every=1.0))
    report = make_loop(repo, tmp_path, clock, runner, max_attempts=1).run()

    [out] = report.outcomes
    assert (out.state, out.exit_code) == ("succeeded", 0)
    attempt = repo.attempt(out.attempt_id)
    assert attempt.state == "succeeded"
    assert (attempt.code_sha, attempt.code_dirty, attempt.diff_hash, attempt.host) == (
        "c0ffee1234", True, "d1ff", "testhost")
    assert attempt.result["status"] == "succeeded"
    series = repo.metric_series([out.attempt_id])[out.attempt_id]
    assert [s for s, _ in series["loss"]] == [10, 20, 30, 40, 50]
    assert [s for s, _ in series["val_loss"]] == [20, 40]
    run = plan().runs[0]
    outdir = tmp_path / "runs" / "wt" / "V0" / "seed1" / f"{run.config_hash[:12]}-run{attempt.run_id}" / "attempt1"
    assert out.artifact_dir == str(outdir)
    assert json.loads((outdir / "config.json").read_text())["step"] == "V0"
    info = json.loads((outdir / "attempt.json").read_text())
    assert (info["attempt_id"], info["worker_id"], info["code_sha"]) == (
        out.attempt_id, "w1", "c0ffee1234")
    # about 5 s of fake training at one poll per 0.5 s
    assert 5.0 <= clock.monotonic() <= 6.5


def test_exception_fails_with_type_and_message_and_the_worker_goes_on(
        repo: QueueRepo, tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(steps=("V0", "V1")), clock.now())
    runner = FakeRunner(clock, scripts={
        "V0": Script(iters=2, status="failed", exit_code=1,
                     error=("ValueError", "gate init must be finite")),
    })
    report = make_loop(repo, tmp_path, clock, runner, until_empty=True).run()

    assert [(o.step, o.state, o.failure_kind) for o in report.outcomes] == [
        ("V0", "failed", "exception"), ("V1", "succeeded", None)]
    assert report.reason == "empty"
    failed = repo.attempt(report.outcomes[0].attempt_id)
    assert (failed.failure_kind, failed.error_type, failed.error_message) == (
        "exception", "ValueError", "gate init must be finite")
    assert states(repo, clock)[("V0", 1)] == ("failed", 1, "exception")


def test_crash_without_result_is_failed_crashed_and_requeued(repo: QueueRepo,
                                                             tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    (tmp_path / "runs").mkdir()
    runner = FakeRunner(clock, default=Script(iters=2, status=None, exit_code=-11))
    [out] = make_loop(repo, tmp_path, clock, runner, max_attempts=1).run().outcomes

    assert (out.state, out.failure_kind, out.exit_code) == ("failed", "crashed", -11)
    attempt = repo.attempt(out.attempt_id)
    assert attempt.error_type == "Crashed"
    assert "killed by SIGSEGV without result.json" in (attempt.error_message or "")
    assert states(repo, clock)[("V0", 1)] == ("queued", 2, None)


def test_spawn_failure_fails_the_attempt_not_the_worker(repo: QueueRepo,
                                                        tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(steps=("V0", "V1")), clock.now())
    runner = FakeRunner(clock, fail_spawn=True)
    report = make_loop(repo, tmp_path, clock, runner, max_attempts=2).run()
    assert [(o.state, o.failure_kind) for o in report.outcomes] == [("failed", "spawn")] * 2
    assert "no such file" in (repo.attempt(report.outcomes[0].attempt_id).error_message or "")


def test_existing_artifact_dir_is_never_reused(repo: QueueRepo, tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    # another database gave its run the same id and config: the one way to meet a directory
    run = plan().runs[0]
    taken = tmp_path / "runs" / "wt" / "V0" / "seed1" / f"{run.config_hash[:12]}-run1" / "attempt1"
    taken.mkdir(parents=True)
    (taken / "attempt.json").write_text(json.dumps({"attempt_id": 1, "run_id": 1, "db": "sqlite:////elsewhere.db",
                                                    "config_hash": run.config_hash}))
    (taken / "keep.txt").write_text("someone else's run")
    runner = FakeRunner(clock)
    [out] = make_loop(repo, tmp_path, clock, runner, max_attempts=1).run().outcomes
    assert (out.state, out.failure_kind) == ("failed", "spawn")
    assert f"artifact dir {taken} already exists" in (out.error or "")
    assert "of database sqlite:////elsewhere.db" in (out.error or "")
    assert "give each database its own (`--runs-dir DIR`)" in (out.error or "")
    assert runner.spawns == []
    assert (taken / "keep.txt").read_text() == "someone else's run"


@pytest.mark.parametrize("on_term", ["checkpoint", "ignore"])
def test_hang_is_timed_out_at_budget_plus_grace(repo: QueueRepo, tmp_path: Path,
                                                on_term: str) -> None:
    clock = FakeClock()
    repo.submit(plan(budget_s=5.0), clock.now())
    runner = FakeRunner(clock, default=Script(iters=2, hang=True, on_term=on_term))
    [out] = make_loop(repo, tmp_path, clock, runner, max_attempts=1, grace_s=3.0,
                      kill_after_s=2.0).run().outcomes

    proc = runner.spawns[0].proc
    assert out.state == "timed_out"
    assert 8.0 <= proc.terms[0] <= 8.5  # budget 5 + grace 3, at poll resolution
    if on_term == "ignore":
        assert 10.0 <= proc.kills[0] <= 10.5 and out.exit_code == -9
    else:
        assert proc.kills == [] and out.exit_code == 3
    attempt = repo.attempt(out.attempt_id)
    assert attempt.state == "timed_out" and attempt.error_type == "Timeout"


def test_lease_lost_kills_the_process_group_and_late_writes_change_nothing(
        repo: QueueRepo, tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    reaped: list[int] = []
    # another process reaps the attempt (as if this worker had stalled past its lease)
    hook = (2.2, lambda: reaped.extend(repo.reap_expired(clock.now() + timedelta(seconds=60))))
    runner = FakeRunner(clock, default=Script(iters=10, hooks=[hook]))
    [out] = make_loop(repo, tmp_path, clock, runner, max_attempts=1).run().outcomes

    proc = runner.spawns[0].proc
    assert reaped == [out.attempt_id]
    assert out.state == "lost"
    assert len(proc.kills) == 1 and proc.kills[0] <= 2.2 + 1.0 + 0.5  # next heartbeat
    before = repo.metric_series([out.attempt_id])[out.attempt_id]
    now = clock.now()
    with pytest.raises(LeaseLost):
        repo.heartbeat(out.attempt_id, "w1", now, timedelta(seconds=3), {"iter": 999})
    with pytest.raises(LeaseLost):
        repo.record_metrics(out.attempt_id, "w1", [("loss", 999, 0.0)])
    with pytest.raises(LeaseLost):
        repo.finish(out.attempt_id, "w1", now, AttemptState.SUCCEEDED, result={"status": "x"})
    assert repo.metric_series([out.attempt_id])[out.attempt_id] == before
    assert repo.attempt(out.attempt_id).state == "lost"
    assert states(repo, clock)[("V0", 1)] == ("queued", 2, None)


def test_stop_requeues_the_same_attempt_which_resumes_in_place(repo: QueueRepo,
                                                               tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    holder: list[WorkerLoop] = []
    runner = FakeRunner(clock, default=Script(iters=6, hooks=[(2.5, lambda: holder[0].stop())]))
    loop = make_loop(repo, tmp_path, clock, runner)
    holder.append(loop)
    report = loop.run()

    [out] = report.outcomes
    assert (out.state, out.exit_code, report.reason) == ("queued", 3, "stopped")
    assert states(repo, clock)[("V0", 1)] == ("queued", 1, None)
    first = runner.spawns[0]
    assert first.proc.terms and (first.outdir / "checkpoint.pt").exists()

    runner.default = Script(iters=3)
    [again] = make_loop(repo, tmp_path, clock, runner, worker_id="w2",
                        max_attempts=1).run().outcomes
    assert (again.attempt_id, again.attempt_no, again.state) == (
        out.attempt_id, 1, "succeeded")
    second = runner.spawns[1]
    assert second.outdir == first.outdir and second.resume_from == first.outdir
    assert (first.outdir / "result.json.before-resume").exists()


class OutageQueue:
    """The real repo behind a switch that makes every call fail as an unreachable database
    would (what QueueRepo raises when the connection is refused)."""

    def __init__(self, repo: QueueRepo) -> None:
        self.repo = repo
        self.down = False
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.repo, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.refused += 1
                raise DatabaseUnavailable("database test unavailable: connection refused")
            return target(*args, **kwargs)

        return call


def test_short_outage_is_ridden_out(repo: QueueRepo, tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    q = OutageQueue(repo)

    def down() -> None:
        q.down = True

    def up() -> None:
        q.down = False

    runner = FakeRunner(clock, default=Script(iters=6, hooks=[(1.2, down), (3.5, up)]))
    [out] = make_loop(q, tmp_path, clock, runner, max_attempts=1, lease_s=6.0).run().outcomes
    assert out.state == "succeeded" and q.refused > 0
    series = repo.metric_series([out.attempt_id])[out.attempt_id]
    assert [s for s, _ in series["loss"]] == [10, 20, 30, 40, 50, 60]


def test_long_outage_fences_the_attempt_and_the_worker_survives(repo: QueueRepo,
                                                                tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    q = OutageQueue(repo)
    t_down: list[float] = []

    def down() -> None:
        q.down = True
        t_down.append(clock.monotonic())

    runner = FakeRunner(clock, default=Script(iters=30, hooks=[(1.2, down)]))
    loop = make_loop(q, tmp_path, clock, runner, max_attempts=2, lease_s=6.0,
                     backoff_max_s=2.0)
    # the database comes back 30 s after it went down, while the worker retries its claim
    original_sleep = clock.sleep

    def sleep(seconds: float, wake: Any = None) -> None:
        original_sleep(seconds, wake)
        if q.down and t_down and clock.monotonic() - t_down[0] >= 30.0:
            q.down = False

    clock.sleep = sleep  # type: ignore[method-assign]
    report = loop.run()

    first, second = report.outcomes
    proc = runner.spawns[0].proc
    assert first.state == "lost" and "lease expired" in (first.error or "")
    assert proc.kills and proc.kills[0] <= 1.2 + 6.0  # killed before its lease ran out
    assert second.attempt_no == 2 and second.state == "succeeded"
    assert repo.attempt(first.attempt_id).state == "lost"
