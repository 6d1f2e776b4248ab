"""Two GPU boxes on one Ray cluster (ray.cluster_utils.Cluster: a head and two nodes that
declare one GPU each; training runs on the CPU), one PostgreSQL, checkpoint storage both
boxes can read. This is the walk of docs/cluster.md: each box runs its own
`recip workers up --address ... --gpus all --storage ...` from its own checkout directory
with its own runs and data dirs.

Box A is killed mid-study (its node removed, its driver and attempt process SIGKILLed, its
disk deleted). Then: every run succeeds, the interrupted run resumes on box B from the
stored checkpoint (iteration > 0), no run ever has two live attempts, the loss is reaped
within two lease periods, and `recip workers down` stops box B in under 30 s."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestrator.cli.queue_cmd import build_plan
from orchestrator.queue.repo import QueueRepo
from tests.cluster.conftest import LEASE, ROOT, attempt_row, box_of, workers_up
from tests.e2e.helpers import write_spec

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(420)]

def test_a_box_dies_mid_study_and_the_other_box_finishes_it(
        cluster: tuple[Any, list[Any]], pg_url: str, tmp_path: Path) -> None:
    c, boxes = cluster
    spec = write_spec(tmp_path, steps=("V0", "V2"), iters=None, seconds=12.0,
                      checkpoint_every=10)
    storage = tmp_path / "shared-storage"
    dirs = [tmp_path / "boxA", tmp_path / "boxB"]
    for d in dirs:
        d.mkdir()
    repo = QueueRepo.open(pg_url)
    repo.submit(build_plan(spec), datetime.now(UTC))
    drivers = [workers_up(c.address, node, pg_url, d, storage) for node, d in zip(
        boxes, dirs, strict=True)]
    try:
        # both boxes run one attempt each, every worker on its own box
        deadline = time.monotonic() + 150
        victim = None
        while victim is None:
            assert time.monotonic() < deadline, "both boxes never ran an attempt with a " \
                "stored checkpoint: " + (dirs[0] / "workers-up.log").read_text()[-2000:]
            time.sleep(0.5)
            snap = repo.snapshot(datetime.now(UTC), "e2e")
            live = {w.id: w for w in snap.workers if w.stopped_at is None}
            placed = {w.id: box_of(w.pid, boxes) for w in live.values()}
            running = [r for r in snap.studies[0].runs if r.state == "running"]
            on_box = {placed.get(r.worker or "") for r in running}
            if len(running) < 2 or on_box != {0, 1}:
                continue
            [mine] = [r for r in running if placed.get(r.worker or "") == 0]
            if any(e["kind"] == "checkpoint" for e in repo.events(mine.attempt_id)):
                victim = mine
        assert sorted(placed.values()) == [0, 1], placed  # one GPU worker per box, on it

        # box A dies, everything on it at once: its worker processes first (a worker that
        # outlived its attempt by a moment would record the attempt `failed` instead of
        # leaving it to be reaped, which a dead box never does), its driver, its Ray node,
        # its attempt process, its disk
        attempt = attempt_row(pg_url, victim.attempt_id)
        for w in live.values():
            if placed.get(w.id) == 0 and w.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
        os.killpg(drivers[0].pid, signal.SIGKILL)
        c.remove_node(boxes[0], allow_graceful=False)
        if attempt.pid and psutil.pid_exists(attempt.pid):
            os.kill(attempt.pid, signal.SIGKILL)
        killed_at = datetime.now(UTC)
        drivers[0].wait(30)
        time.sleep(1.0)
        shutil.rmtree(dirs[0] / "runs")

        deadline = time.monotonic() + 180
        while True:
            assert time.monotonic() < deadline, "box B did not finish the study: " + \
                (dirs[1] / "workers-up.log").read_text()[-2000:]
            results = repo.study_results("e2e")
            for run_id in {a.run_id for a in results.attempts}:
                live_attempts = [a for a in results.attempts if a.run_id == run_id
                                 and a.state in ("claimed", "running")]
                assert len(live_attempts) <= 1, live_attempts
            if all(r.state == "succeeded" for r in repo.snapshot(
                    datetime.now(UTC), "e2e").studies[0].runs):
                break
            time.sleep(0.5)

        lost = repo.attempt(victim.attempt_id)
        assert lost.state == "lost" and lost.finished_at is not None
        assert lost.finished_at - killed_at <= timedelta(seconds=2 * LEASE)
        [resumed] = [a for a in repo.study_results("e2e").attempts
                     if a.run_id == lost.run_id and a.state == "succeeded"]
        assert resumed.attempt_no == lost.attempt_no + 1
        assert (resumed.result.get("resumed_from_iter") or 0) > 0
        assert str(attempt_row(pg_url, resumed.attempt_id).artifact_dir).startswith(str(dirs[1]))

        # `recip workers down` on box B
        t0 = time.monotonic()
        down = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli.app", "workers", "down", "--runs-dir",
             str(dirs[1] / "runs"), "--timeout", "60"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=90, check=False)
        assert down.returncode == 0, down.stderr
        assert drivers[1].wait(30) == 0
        assert time.monotonic() - t0 < 30
    finally:
        for d in drivers:
            if d.poll() is None:
                os.killpg(d.pid, signal.SIGKILL)
                d.wait(30)
        repo.close()
