"""Write tests/migrations/assets/<revision>.db: a small populated SQLite queue at the current
head. Run it once when a release adds a revision (`python -m tests.migrations.make_assets`),
commit the file, and never regenerate an old one: test_migrations upgrades each stored file
with the code of the day."""

from __future__ import annotations

import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orchestrator.core.plan import RunPlan, StudyPlan
from orchestrator.core.states import AttemptState
from orchestrator.queue import migrate
from orchestrator.queue.repo import QueueRepo

ASSETS = Path(__file__).parent / "assets"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def populate(url: str) -> None:
    runs = tuple(
        RunPlan(step=step, seed=1, config={"step": step, "seed": 1}, config_hash=f"hash-{step}",
                parent="V0" if step != "V0" else None, budget_seconds=60.0)
        for step in ("V0", "V1")
    )
    plan = StudyPlan(name="asset", description="stored at an old revision", spec_hash="spec",
                     spec={"steps": {"V0": {}, "V1": {"parent": "V0"}}}, runs=runs)
    lease = timedelta(seconds=60)
    with QueueRepo.open(url) as repo:
        repo.submit(plan, T0)
        repo.register_worker("box:0", T0, host="box", gpu="0", pid=1)
        c = repo.claim("box:0", T0, lease)
        assert c is not None and c.step == "V0"
        repo.start(c.attempt_id, "box:0", T0, lease, artifact_dir="/runs/asset/V0/1",
                   code_sha="abc", code_dirty=False, diff_hash=None, host="box", gpu="0",
                   pid=2, env={"torch": "2.13.0"})
        repo.heartbeat(c.attempt_id, "box:0", T0 + lease / 2, lease, {"iter": 10, "loss": 4.0})
        repo.record_metrics(c.attempt_id, "box:0", [("loss", i, 5.0 - i / 10) for i in range(10)])
        repo.finish(c.attempt_id, "box:0", T0 + lease, AttemptState.SUCCEEDED, exit_code=0,
                    result={"status": "succeeded", "best_val_loss": 4.1})
        repo.worker_stopped("box:0", T0 + lease)


def main() -> None:
    path = ASSETS / f"{migrate.head()}.db"
    if path.exists():
        sys.exit(f"{path} exists; stored assets are never regenerated")
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    populate(url)
    with sqlite3.connect(path) as conn:  # one self-contained file, no -wal beside it
        conn.execute("PRAGMA journal_mode=DELETE")
    print(path)


if __name__ == "__main__":
    main()
