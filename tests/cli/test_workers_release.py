"""`recip workers ls` shows a quarantined worker and the command that lets it back;
`recip workers release` clears it (and refuses, changing nothing, when nothing matches)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from orchestrator.cli.app import run
from orchestrator.queue.repo import QueueRepo

WORKER = "boxa:gpu0-4242"


def test_ls_shows_the_quarantine_and_release_clears_it(
        db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with QueueRepo.open(db_url) as repo:
        now = datetime.now(UTC)
        repo.register_worker(WORKER, now, host="boxa", gpu="H100", pid=4242)
        repo.register_worker("boxb:gpu0-7", now, host="boxb", gpu="H100", pid=7)
        repo.quarantine_worker(WORKER, now, reason="3 oom failures in a row")

    assert run(["workers", "ls", "--db", db_url]) == 0
    out, err = capsys.readouterr()
    assert (f"quarantined: {WORKER} (3 oom failures in a row); it claims nothing until "
            f"`recip workers release {WORKER}`") in err
    assert run(["workers", "ls", "--db", db_url, "--json"]) == 0
    rows = {r["id"]: r["quarantined"] for r in json.loads(capsys.readouterr().out)}
    assert rows == {WORKER: "3 oom failures in a row", "boxb:gpu0-7": None}

    assert run(["workers", "release", "--db", db_url]) == 1
    assert "name a WORKER, --host HOST or --all" in capsys.readouterr().err
    assert run(["workers", "release", "--host", "boxb", "--db", db_url]) == 1
    assert "no quarantined worker matches host boxb" in capsys.readouterr().err
    with QueueRepo.open(db_url) as repo:
        assert repo.worker_quarantine(WORKER) == "3 oom failures in a row"

    assert run(["workers", "release", "boxa:gpu0", "--db", db_url]) == 0
    assert f"released 1 worker(s): {WORKER}" in capsys.readouterr().err
    with QueueRepo.open(db_url) as repo:
        assert repo.worker_quarantine(WORKER) is None
