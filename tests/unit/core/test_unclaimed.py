"""orchestrator.core.unclaimed: why queued attempts wait, from a Snapshot alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.core.unclaimed import quarantined, reasons
from orchestrator.core.views import RunView, Snapshot, StudyView, WorkerView

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def study(queued: int = 2, running: int = 0, pinned: str | None = None) -> StudyView:
    runs = [RunView(study="s", step="V0", seed=i, run_id=i, config_hash="h", state="queued")
            for i in range(queued)]
    runs += [RunView(study="s", step="V1", seed=i, run_id=100 + i, config_hash="h",
                     state="running") for i in range(running)]
    return StudyView(name="s", description="", created_at=NOW, counts={}, runs=tuple(runs),
                     pinned_sha=pinned)


def worker(wid: str = "box:gpu0-1", *, age_s: float = 1.0, busy: bool = False,
           quarantine: str | None = None, sha: str | None = "abc123def",
           stopped: bool = False) -> WorkerView:
    return WorkerView(id=wid, host="box", gpu="H100", pid=1, started_at=NOW,
                      last_heartbeat=NOW - timedelta(seconds=age_s),
                      stopped_at=NOW if stopped else None,
                      current_attempt=7 if busy else None, quarantined=quarantine,
                      code_sha=sha)


def why(s: StudyView, *workers: WorkerView) -> list[str]:
    return reasons(Snapshot(taken_at=NOW, db="db", studies=(s,), workers=workers), NOW)


def test_no_queued_work_or_an_idle_usable_worker_says_nothing() -> None:
    assert why(study(queued=0)) == []
    assert why(study(), worker()) == []


@pytest.mark.parametrize("workers", [(), (worker(age_s=600),), (worker(stopped=True),)])
def test_no_live_worker(workers: tuple[WorkerView, ...]) -> None:
    assert why(study(), *workers) == [
        "s: 2 queued attempts not claimed: no live worker; start one with `recip workers up`"]


def test_every_live_worker_quarantined() -> None:
    [line] = why(study(queued=1), worker(quarantine="3 oom failures in a row"))
    assert line.startswith("s: 1 queued attempt not claimed: every live worker is quarantined")
    assert "recip workers release" in line


def test_commit_pin_nobody_runs() -> None:
    [line] = why(study(pinned="f00d"), worker(sha="abc123"), worker("b:gpu1-2", sha=None))
    assert "pinned to commit f00d and no live worker runs it" in line
    assert why(study(pinned="abc1"), worker(sha="abc123")) == []


def test_all_usable_workers_busy_ignores_the_quarantined_idle_one() -> None:
    lines = why(study(running=1), worker(busy=True),
                worker("b:gpu1-2", quarantine="3 crashed failures in a row"))
    assert lines == ["s: 2 queued attempts not claimed: all 1 usable workers are busy; "
                     "they claim when done"]


def test_quarantine_lines_name_the_release_command() -> None:
    snap = Snapshot(taken_at=NOW, db="db", workers=(worker(quarantine="3 spawn failures"),
                                                    worker("x:cpu0-3")))
    assert quarantined(snap) == ["quarantined: box:gpu0-1 (3 spawn failures); it claims "
                                 "nothing until `recip workers release box:gpu0-1`"]
