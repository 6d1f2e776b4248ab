"""Kill test: SIGKILL a worker's actor process mid-attempt on a real local Ray. The attempt
becomes `lost` within two lease periods, the next attempt resumes from its checkpoint, and
the killed worker's late writes change nothing."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.cli.queue_cmd import build_plan
from orchestrator.core.errors import LeaseLost
from orchestrator.core.states import AttemptState
from orchestrator.queue.repo import QueueRepo
from tests.e2e.helpers import ProcessWatcher, write_spec
from workers.pool import PoolConfig, WorkerPool

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(240)]

LEASE = 3.0


def test_sigkill_of_a_worker_mid_attempt(sqlite_url: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECIP_DATA_DIR", str(tmp_path / "data"))
    spec = write_spec(tmp_path, steps=("V0",), iters=None, seconds=10.0, checkpoint_every=20)
    repo = QueueRepo.open(sqlite_url)
    repo.submit(build_plan(spec), datetime.now(UTC))
    run = build_plan(spec).runs[0]
    first_dir = tmp_path / "runs" / "e2e" / "V0" / "seed1" / f"{run.config_hash[:12]}-run1" / "attempt1"
    config = PoolConfig(db_url=sqlite_url, runs_dir=tmp_path / "runs", cpu_workers=2,
                        lease_s=LEASE, poll_s=0.25, idle_poll_s=0.5, until_empty=True,
                        study="e2e", env={"RECIP_DATA_DIR": str(tmp_path / "data")})
    pool = WorkerPool(config)
    with ProcessWatcher() as watcher:
        try:
            pool.start()
            deadline = time.monotonic() + 90
            victim = None
            while victim is None:
                assert time.monotonic() < deadline, "the attempt never checkpointed"
                pool.wait(0.25)
                if not (first_dir / "checkpoint.pt").exists():
                    continue
                snap = repo.snapshot(datetime.now(UTC))
                [run] = snap.studies[0].runs
                owners = [w for w in snap.workers if w.id == run.worker and w.pid]
                if run.state == "running" and owners:
                    victim = (run.attempt_id, owners[0])
            attempt_id, worker = victim
            os.kill(worker.pid, signal.SIGKILL)
            killed_at = datetime.now(UTC)
            assert pool.join(120), "the pool did not finish the study"
        finally:
            pool.shutdown()
    assert watcher.leftovers() == set()

    lost = repo.attempt(attempt_id)
    assert lost.state == "lost"
    assert lost.finished_at is not None
    assert lost.finished_at - killed_at <= timedelta(seconds=2 * LEASE)
    attempts = sorted(repo.study_results("e2e").attempts, key=lambda a: a.attempt_no)
    assert [(a.attempt_no, a.state) for a in attempts] == [(1, "lost"), (2, "succeeded")]
    current = attempts[1]
    assert (current.result.get("resumed_from_iter") or 0) > 0
    assert pool.deaths == ["cpu0"] or pool.deaths == ["cpu1"]

    before = repo.metric_series([attempt_id])[attempt_id]
    now = datetime.now(UTC)
    with pytest.raises(LeaseLost):
        repo.heartbeat(attempt_id, worker.id, now, timedelta(seconds=LEASE), {"iter": 10**6})
    with pytest.raises(LeaseLost):
        repo.record_metrics(attempt_id, worker.id, [("loss", 10**6, 0.0)])
    with pytest.raises(LeaseLost):
        repo.finish(attempt_id, worker.id, now, AttemptState.SUCCEEDED,
                    result={"status": "succeeded"})
    assert repo.metric_series([attempt_id])[attempt_id] == before
    assert repo.attempt(attempt_id).state == "lost"
    assert repo.attempt(current.attempt_id).state == "succeeded"
    repo.close()
