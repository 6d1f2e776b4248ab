"""`recip workers ls` shows a quarantined worker and the command that lets it back;
`recip workers release` clears it (and refuses, changing nothing, when nothing matches)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

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


def test_status_says_why_queued_attempts_wait(db_url: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "waits.yaml"
    spec.write_text("study: waits\ndefaults:\n  model: {preset: tiny}\n"
                    "  data: {tokenizer: byte}\n  train: {budget: {seconds: 60}}\n"
                    "steps:\n  V0: {description: baseline}\n")
    assert run(["queue", "submit", str(spec), "--no-check", "--db", db_url]) == 0
    capsys.readouterr()
    assert run(["status", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert ("waits: 1 queued attempt not claimed: no live worker; start one with "
            "`recip workers up`") in out
    with QueueRepo.open(db_url) as repo:
        now = datetime.now(UTC)
        repo.register_worker(WORKER, now, host="boxa", gpu="H100", pid=4242)
        repo.quarantine_worker(WORKER, now, reason="3 crashed failures in a row")
    assert run(["status", "--db", db_url]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the terminal may wrap long lines
    assert f"quarantined: {WORKER} (3 crashed failures in a row)" in out
    assert "waits: 1 queued attempt not claimed: every live worker is quarantined (1)" in out
