"""An attempt that writes metrics before the worker looks (a warm spare writes its eval at
iteration 0 within a second of the hand-off): every record still reaches the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.queue.repo import QueueRepo
from tests.workers.conftest import plan
from tests.workers.fakes import FakeProcess, FakeRunner, Script
from tests.workers.test_loop import make_loop
from workers.clock import FakeClock
from workers.train import artifacts


class EagerRunner(FakeRunner):
    """Writes the eval record of iteration 0 before spawn() returns."""

    def spawn(self, outdir: Path, *, resume_from: Path | None) -> FakeProcess:
        proc = super().spawn(outdir, resume_from=resume_from)
        record: dict[str, Any] = {"iter": 0, "tokens": 0, "train_s": 0.0,
                                  "values": {"val_loss": 5.75, "train_loss": 5.8}}
        with open(outdir / artifacts.METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
        return proc


def test_records_written_before_supervision_are_kept(repo: QueueRepo, tmp_path: Path) -> None:
    clock = FakeClock()
    repo.submit(plan(), clock.now())
    runner = EagerRunner(clock, default=Script(iters=5, every=1.0))
    [out] = make_loop(repo, tmp_path, clock, runner, max_attempts=1).run().outcomes
    assert out.state == "succeeded"
    series = repo.metric_series([out.attempt_id])[out.attempt_id]
    assert series["val_loss"][0] == (0, 5.75)
    assert [s for s, _ in series["loss"]] == [10, 20, 30, 40, 50]
