"""The loose values of issue 15 point 8, honoured or refused with one line: read-only SQLite
URLs open read-only, `recip db upgrade` leaves another application's SQLite file alone, unknown
SQLite URL options are refused, `recip run`'s workers claim only its study, and a worker whose
process is gone is no longer shown running."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.app import run
from orchestrator.queue.repo import QueueRepo
from tests.cli.test_bad_input import stored
from tests.e2e.helpers import write_spec

LEASE = timedelta(seconds=30)


def test_a_read_only_sqlite_url_reads_and_refuses_every_write(
        sqlite_url: str, plan_factory: Any, tmp_path: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    with QueueRepo.open(sqlite_url) as repo:
        repo.submit(plan_factory(steps=("V0",)), datetime.now(UTC))
    before = stored(sqlite_url)
    ro = sqlite_url + "?mode=ro"
    assert run(["status", "--json", "--db", ro]) == 0
    assert '"study"' in capfd.readouterr().out
    assert run(["show", "study", "V0", "--db", ro]) == 0
    with QueueRepo.open(ro) as repo:
        assert repo.read_only and repo.reap_expired(datetime.now(UTC)) == []
    assert stored(sqlite_url) == before


def test_writes_through_a_read_only_url_fail_with_one_line(
        sqlite_url: str, plan_factory: Any, tmp_path: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    with QueueRepo.open(sqlite_url) as repo:
        repo.submit(plan_factory(steps=("V0",)), datetime.now(UTC))
    before = stored(sqlite_url)
    ro = sqlite_url + "?mode=ro"
    spec = write_spec(tmp_path, study="other")
    for argv in (["queue", "cancel", "study"], ["queue", "submit", str(spec), "--no-check"]):
        rc = run([*argv, "--db", ro])
        out, err = capfd.readouterr()
        assert rc == 1, (argv, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "read-only" in err or "readonly" in err, err
    with QueueRepo.open(ro) as repo, pytest.raises(Exception) as e:
        repo.claim("w", datetime.now(UTC), LEASE)
    assert "is open read-only (?mode=ro) and this command writes: drop ?mode=ro" in str(e.value)
    assert stored(sqlite_url) == before


@pytest.mark.parametrize(("suffix", "message"), [
    ("?mode=memory", "unsupported SQLite URL option mode='memory'"),
    ("?cache=shared", "unsupported SQLite URL option cache='shared'"),
    ("?timeout=0", "unsupported SQLite URL option timeout='0'"),
])
def test_unknown_sqlite_options_are_refused(suffix: str, message: str, sqlite_url: str,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "--db", sqlite_url + suffix]) == 1
    err = capfd.readouterr().err
    assert err.startswith(f"error: {message} in ") and len(err.splitlines()) == 1


def test_a_missing_file_is_not_created_by_a_read_only_url(tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]):
    assert run(["status", "--db", f"sqlite:///{tmp_path}/none.db?mode=ro"]) == 1
    assert "no database at" in capfd.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_db_upgrade_leaves_another_applications_sqlite_file_alone(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    data = path.read_bytes()
    assert run(["db", "upgrade", "--db", f"sqlite:///{path}"]) == 1
    out, err = capfd.readouterr()
    assert err == (f"error: sqlite:///{path} holds another application's tables (orders, "
                   "users) and no recip schema: recip keeps its queue in a file of its own; "
                   "pass another --db\n")
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"users", "orders"} and path.read_bytes() == data


def test_an_empty_sqlite_file_is_upgraded(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    assert run(["db", "upgrade", "--db", f"sqlite:///{path}"]) == 0
    assert "schema none -> " in capfd.readouterr().err


def test_run_workers_claim_only_their_study(repo: QueueRepo, plan_factory: Any,
                                           fake_clock: Any) -> None:
    repo.submit(plan_factory(steps=("V0",), name="other"), fake_clock.now())
    repo.submit(plan_factory(steps=("V0",), name="mine"), fake_clock.now())
    claimed = repo.claim("w", fake_clock.now(), LEASE, study="mine")
    assert claimed is not None and claimed.study == "mine"
    assert repo.claim("w2", fake_clock.now(), LEASE, study="mine") is None
    anyone = repo.claim("w3", fake_clock.now(), LEASE)
    assert anyone is not None and anyone.study == "other"


def test_run_has_an_option_for_other_studies() -> None:
    from typer.testing import CliRunner

    from orchestrator.cli.app import app

    text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    assert "--other-studies" in text


def test_a_worker_whose_process_is_gone_is_not_shown_running(
        sqlite_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        now = datetime.now(UTC)
        with QueueRepo.open(sqlite_url) as repo:
            repo.register_worker("dead-1", now, host=socket.gethostname(), gpu=None,
                                 pid=gone.pid)
            repo.register_worker("live-1", now, host=socket.gethostname(), gpu=None,
                                 pid=alive.pid)
            repo.register_worker("far-1", now, host="another-box", gpu=None, pid=gone.pid)
        assert run(["status", "--json", "--db", sqlite_url]) == 0
        out, err = capfd.readouterr()
        assert err == "worker dead-1 gone (process not running): marked stopped\n"
        with QueueRepo.open(sqlite_url) as repo:
            workers = {w.id: w for w in repo.snapshot(datetime.now(UTC)).workers}
        assert workers["dead-1"].stopped_at is not None
        assert workers["live-1"].stopped_at is None and workers["far-1"].stopped_at is None
        assert run(["workers", "ls", "--db", sqlite_url]) == 0
        listing = capfd.readouterr().out
        assert "live-1" in listing and "dead-1" not in listing
        assert run(["workers", "ls", "--all", "--db", sqlite_url]) == 0
        line = next(ln for ln in capfd.readouterr().out.splitlines() if "dead-1" in ln)
        assert "stopped" in line
    finally:
        alive.kill()
        alive.wait()


def test_a_worker_of_one_study_leaves_other_studies_queued(repo: QueueRepo,
                                                          tmp_path: Path) -> None:
    """What `recip run FILE` starts: workers with `study` set claim only that study."""
    from tests.workers.conftest import plan
    from tests.workers.fakes import FakeRunner
    from tests.workers.test_loop import make_loop, states
    from workers.clock import FakeClock

    clock = FakeClock()
    repo.submit(plan(study="other"), clock.now())
    repo.submit(plan(study="mine", steps=("V0", "V1")), clock.now())
    report = make_loop(repo, tmp_path, clock, FakeRunner(clock), until_empty=True,
                       study="mine").run()
    assert [(o.study, o.state) for o in report.outcomes] == [("mine", "succeeded")] * 2
    assert report.reason == "empty"
    assert states(repo, clock, "other")[("V0", 1)] == ("queued", 1, None)
