"""Two emulated GPU boxes (tests/cluster/conftest.py), one PostgreSQL, shared storage.

Box A's disk is broken (it cannot create attempt directories): its worker fails three
attempts in a row the same way (`spawn`), is quarantined and claims nothing more; the rest
of the queued work runs on box B (the three failed runs wait for `recip resume`). Meanwhile one of box B's attempts gets a spot notice (SIGTERM to its
process): it checkpoints, is given back as `preempted` on the same attempt row (no retry
used) and resumes from that checkpoint (iteration > 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.queue_cmd import build_plan
from orchestrator.queue.repo import QueueRepo
from tests.cluster.conftest import ROOT, attempt_row, workers_up
from tests.e2e.helpers import write_spec

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(420)]


def test_a_bad_box_is_quarantined_and_a_preempted_attempt_costs_nothing(
        cluster: tuple[Any, list[Any]], pg_url: str, tmp_path: Path) -> None:
    c, boxes = cluster
    spec = write_spec(tmp_path, steps=("V0", "V1", "V2", "V3", "V4"), iters=None, seconds=5.0,
                      checkpoint_every=10)
    dirs = [tmp_path / "boxA", tmp_path / "boxB"]
    for d in dirs:
        (d / "runs").mkdir(parents=True)
    (dirs[0] / "runs" / "e2e").write_text("not a directory: box A's disk is broken")
    repo = QueueRepo.open(pg_url)
    repo.submit(build_plan(spec), datetime.now(UTC))
    storage = tmp_path / "shared-storage"
    drivers = [workers_up(c.address, node, pg_url, d, storage)
               for node, d in zip(boxes, dirs, strict=True)]
    preempted: int | None = None
    try:
        deadline = time.monotonic() + 240
        while True:
            time.sleep(0.5)
            snap = repo.snapshot(datetime.now(UTC), "e2e")
            runs = snap.studies[0].runs
            assert time.monotonic() < deadline, f"the study did not finish: {runs}"
            if all(r.state in ("succeeded", "failed") for r in runs):
                break
            if preempted is None:  # a spot notice to a box-B attempt that has checkpointed
                for r in runs:
                    if r.state == "running" and r.attempt_id and any(
                            e["kind"] == "checkpoint" for e in repo.events(r.attempt_id)):
                        pid = attempt_row(pg_url, r.attempt_id).pid
                        os.kill(pid, signal.SIGTERM)
                        preempted = r.attempt_id
                        break
        assert preempted is not None, "no attempt was running long enough to preempt"

        workers = {w.id: w for w in repo.snapshot(datetime.now(UTC)).workers}
        attempts = repo.study_results("e2e").attempts
        bad = [a for a in attempts if a.state == "failed"]
        assert len(bad) == 3 and {a.failure_kind for a in bad} == {"spawn"}
        [bad_worker] = {w.id for w in workers.values() if w.quarantined}
        assert workers[bad_worker].quarantined == "3 spawn failures in a row"
        assert sorted(r.state for r in repo.snapshot(datetime.now(UTC), "e2e").studies[0].runs
                      ) == ["failed"] * 3 + ["succeeded"] * 2
        # every succeeded attempt ran on box B, none on the quarantined worker
        for a in attempts:
            if a.state == "succeeded":
                assert str(attempt_row(pg_url, a.attempt_id).artifact_dir).startswith(
                    str(dirs[1]))

        spot = repo.attempt(preempted)
        assert (spot.state, spot.attempt_no) == ("succeeded", 1)
        kinds = [(e["kind"], e["payload"].get("reason")) for e in repo.events(preempted)]
        assert ("requeued", "preempted") in kinds
        assert (spot.result.get("resumed_from_iter") or 0) > 0

        ls = subprocess.run([sys.executable, "-m", "orchestrator.cli.app", "workers", "ls",
                             "--db", pg_url], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
                            check=False)
        assert f"quarantined: {bad_worker} (3 spawn failures in a row)" in ls.stderr
    finally:
        for d in drivers:
            if d.poll() is None:
                d.send_signal(signal.SIGTERM)
        for d in drivers:
            try:
                d.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(d.pid, signal.SIGKILL)
                d.wait(10)
        repo.close()
