"""The bad-input corpus, tried as a new user would: each case gives one clear line on stderr
and exit 1 (2 for usage errors, which click reports), never a traceback unless --debug, never
a password from a database URL, and changes nothing stored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.cli.app import run
from orchestrator.queue.repo import QueueRepo
from tests.cli.test_bad_specs import CORPUS as BAD_SPECS
from tests.cli.test_bad_specs import EXPECTED as BAD_SPEC_ERRORS
from tests.e2e.helpers import write_spec

SECRET = "s3cret-pw"
TABLES = ("studies", "runs", "attempts", "events", "metrics", "workers")


def stored(url: str) -> dict[str, Any]:
    """Everything a command could change: row counts and the latest ids, per table."""
    engine = sa.create_engine(url.replace("sqlite:///", "sqlite:///file:", 1) + "?mode=ro&uri=true"
                              if url.startswith("sqlite") else url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            out: dict[str, Any] = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                                   for t in TABLES}
            out["attempt_states"] = conn.execute(sa.text(
                "SELECT id, state FROM attempts ORDER BY id")).all()
            out["version"] = conn.execute(sa.text(
                "SELECT version_num FROM recip_alembic_version")).all()
            return out
    finally:
        engine.dispose()


@dataclass
class World:
    tmp: Path
    db: str
    spec: Path

    def fill(self, text: str) -> str:
        return text.format(db=self.db, tmp=self.tmp, spec=self.spec, secret=SECRET)


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str, plan_factory: Any) -> Iterator[World]:
    with QueueRepo.open(sqlite_url) as repo:
        repo.submit(plan_factory(steps=("V0", "V1")), datetime.now(UTC))
    yield World(tmp=tmp_path, db=sqlite_url, spec=write_spec(tmp_path, study="ok"))


Setup = Callable[[World], str]
"""Prepares a case (a file, a database) and returns the --db URL to use."""


def _newer_schema(w: World) -> str:
    path = w.tmp / "newer.db"
    shutil.copyfile(w.db.removeprefix("sqlite:///"), path)
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE recip_alembic_version SET version_num = '9999'"))
    engine.dispose()
    return url


def _missing_dataset(w: World) -> str:
    spec = w.tmp / "missing_data.yaml"
    spec.write_text(w.spec.read_text().replace(str(w.tmp / "corpus.txt"),
                                               str(w.tmp / "nowhere.txt")))
    return w.db


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    message: str
    """The whole stderr (one line) for exit 1; the `Error:` line click prints for exit 2."""
    code: int = 1
    setup: Setup | None = None


CASES: dict[str, Case] = {
    # wrong CLI arguments (click: exit 2)
    "unknown-command": Case(("frobnicate",), "Error: No such command 'frobnicate'.", 2),
    "unknown-option": Case(("status", "--bogus"), "Error: No such option: --bogus", 2),
    "missing-argument": Case(("show", "study"), "Error: Missing argument 'step'.", 2),
    "not-an-int": Case(("show", "study", "V0", "--seed", "one", "--db", "{db}"),
                       "Error: Invalid value for '--seed': Input should be a valid integer, "
                       "unable to parse string as an integer", 2),
    "bad-choice": Case(("resume", "study", "--code", "latest", "--db", "{db}"),
                       "Error: Invalid value for '--code': Value error, 'latest' is not one of 'head', "
                       "'pinned'.", 2),
    "rerun-without-steps": Case(("rerun", "study", "--db", "{db}"),
                                "Error: Missing option '--steps'.", 2),
    "json-and-watch": Case(("status", "--json", "--watch", "--db", "{db}"),
                           "Error: Invalid value for --json: --json prints one snapshot; drop "
                           "--watch", 2),
    "bad-seeds": Case(("queue", "submit", "{spec}", "--seeds", "1,two", "--db", "{db}"),
                      "error: --seeds: expected comma-separated integers, e.g. --seeds 1,2, got "
                      "'1,two'"),
    "missing-spec": Case(("queue", "submit", "{tmp}/nope.yaml", "--db", "{db}"),
                         "error: {tmp}/nope.yaml: no such file"),
    # databases
    "db-missing-directory": Case(("status", "--db", "sqlite:///{tmp}/no/such/dir/recip.db"),
                                 "error: cannot open SQLite database {tmp}/no/such/dir/recip.db: "
                                 "directory {tmp}/no/such/dir does not exist; create it or pass "
                                 "another --db"),
    "db-missing-file": Case(("status", "--db", "sqlite:///{tmp}/absent.db"),
                            "error: no database at {tmp}/absent.db: run `recip db upgrade --db "
                            "sqlite:///{tmp}/absent.db` to create it"),
    "db-newer-schema": Case(("status", "--db", "sqlite:///{tmp}/newer.db"),
                            "error: database sqlite:///{tmp}/newer.db is at schema 9999, newer "
                            "than this recip knows (head 0007): upgrade recip (`git pull` and "
                            "reinstall) on this machine", setup=_newer_schema),
    "db-bad-url": Case(("status", "--db", "not a url"),
                       "error: invalid database URL 'not a url': expected sqlite:///PATH.db or "
                       "postgresql+psycopg://USER@HOST:PORT/DB"),
    "db-unsupported-url": Case(("status", "--db", "mysql://root:{secret}@db/recip"),
                               "error: unsupported database 'mysql' in 'mysql://root:***@db/"
                               "recip': expected sqlite:///PATH.db or postgresql+psycopg://USER@"
                               "HOST:PORT/DB"),
    "pg-unreachable": Case(("status", "--db", "postgresql+psycopg://recip:{secret}@127.0.0.1:1/q"),
                           "error: cannot connect to postgresql+psycopg://recip:***@127.0.0.1:1/q:"
                           " connection failed: connection to server at \"127.0.0.1\", port 1 "
                           "failed: Connection refused"),
    "pg-unreachable-submit": Case(
        ("queue", "submit", "{spec}", "--no-check", "--db",
         "postgresql://recip:{secret}@127.0.0.1:1/q"),
        "error: cannot connect to postgresql://recip:***@127.0.0.1:1/q: connection failed: "
        "connection to server at \"127.0.0.1\", port 1 failed: Connection refused"),
    # data
    "missing-dataset": Case(("queue", "submit", "{tmp}/missing_data.yaml", "--db", "{db}"),
                            "error: {tmp}/missing_data.yaml: defaults.data.dataset: dataset "
                            "'text:{tmp}/nowhere.txt': no such file {tmp}/nowhere.txt; fix the "
                            "path (or pass --no-check when only the workers have it)",
                            setup=_missing_dataset),
    "unknown-dataset": Case(("data", "prepare", "--dataset", "imagenet"),
                            "error: unknown dataset 'imagenet' (use kjv, text:PATH or hf:NAME)"),
    # names
    "unknown-study-status": Case(("status", "nope", "--db", "{db}"),
                                 "error: no study 'nope' in {db} (studies: study)"),
    "unknown-study-report": Case(("report", "nope", "--db", "{db}"),
                                 "error: no study 'nope' in {db} (studies: study)"),
    "unknown-study-resume": Case(("resume", "nope", "--db", "{db}"),
                                 "error: no study 'nope' in {db} (studies: study)"),
    "unknown-study-show": Case(("show", "nope", "V0", "--db", "{db}"),
                               "error: no study 'nope' in {db} (studies: study)"),
    "unknown-study-cancel": Case(("queue", "cancel", "nope", "--db", "{db}"),
                                 "error: no study 'nope' in {db} (studies: study)"),
    "unknown-step-show": Case(("show", "study", "V9", "--db", "{db}"),
                              "error: no step 'V9' in study 'study' (steps: V0, V1)"),
    "unknown-step-resume": Case(("resume", "study", "--steps", "V1,V9", "--db", "{db}"),
                                "error: no step 'V9' in study 'study' (steps: V0, V1)"),
    "unknown-step-rerun": Case(("rerun", "study", "--steps", "V9", "--db", "{db}"),
                               "error: no step 'V9' in study 'study' (steps: V0, V1)"),
    "unknown-step-cancel": Case(("queue", "cancel", "study", "--steps", "V9", "--db", "{db}"),
                                "error: no step 'V9' in study 'study' (steps: V0, V1)"),
    "unknown-seed-show": Case(("show", "study", "V0", "--seed", "5", "--db", "{db}"),
                              "error: step 'V0' of study 'study' has no seed 5 (seeds: 1)"),
}


def _check(case: Case, w: World, capfd: pytest.CaptureFixture[str], *,
           debug: bool = False) -> tuple[str, str]:
    if case.setup is not None:
        case.setup(w)
    argv = [w.fill(a) for a in case.argv]
    before = stored(w.db)
    rc = run((["--debug"] if debug else []) + argv)
    out, err = capfd.readouterr()
    assert rc == case.code, err
    assert out == ""
    assert SECRET not in err
    assert stored(w.db) == before
    return out, err


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str, world: World, capfd: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    _, err = _check(case, world, capfd)
    expected = world.fill(case.message)
    if case.code == 1:
        assert err == expected + "\n"
    else:
        assert expected in err.splitlines(), err
        assert err.startswith("Usage: recip")
    assert "Traceback" not in err
    assert not (world.tmp / "no").exists()
    assert not (world.tmp / "absent.db").exists()


@pytest.mark.parametrize("name", ["pg-unreachable", "db-newer-schema", "unknown-step-resume",
                                  "missing-dataset"])
def test_debug_shows_the_traceback(name: str, world: World,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    _, err = _check(case, world, capfd, debug=True)
    assert err.startswith("Traceback (most recent call last)")  # with its causes, if chained
    assert err.rstrip("\n").splitlines()[-1] == world.fill(case.message)


@pytest.mark.parametrize("name", sorted(BAD_SPEC_ERRORS))
def test_broken_specs_through_recip_run(name: str, world: World,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    """The broken-spec corpus fails `recip run` the same way, before any worker starts."""
    path = BAD_SPECS / name
    before = stored(world.db)
    rc = run(["run", str(path), "--db", world.db, "--runs-dir", str(world.tmp / "runs")])
    out, err = capfd.readouterr()
    assert (rc, out, err) == (1, "", f"error: {path}: {BAD_SPEC_ERRORS[name]}\n")
    assert stored(world.db) == before
    assert not (world.tmp / "runs").exists()


def _immutable(path: Path) -> Callable[[], None]:
    """Make `path` unwritable, even for root (chattr +i); returns the undo."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return lambda: path.chmod(0o644)
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without a working chattr: cannot make a file read-only")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_database_file(world: World, capfd: pytest.CaptureFixture[str]) -> None:
    path = Path(world.db.removeprefix("sqlite:///"))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    data = path.read_bytes()
    undo = _immutable(path)
    try:
        for argv in (["status"], ["queue", "submit", str(world.spec), "--no-check"],
                     ["resume", "study"]):
            rc = run([*argv, "--db", world.db])
            out, err = capfd.readouterr()
            assert (rc, out) == (1, "")
            assert err == (f"error: cannot write SQLite database {path}: the file is read-only; "
                           "fix its permissions or pass another --db\n")
        assert path.read_bytes() == data
    finally:
        undo()


def test_secrets_never_reach_logs(world: World, capfd: pytest.CaptureFixture[str],
                                  caplog: pytest.LogCaptureFixture) -> None:
    """A password in --db is masked in errors and in every log record recip writes."""
    caplog.set_level("DEBUG")
    url = f"postgresql+psycopg://recip:{SECRET}@127.0.0.1:1/q"
    for argv in (["status"], ["queue", "ls"], ["resume", "x"], ["show", "x", "V0"],
                 ["workers", "ls"], ["report", "x"], ["db", "current"]):
        rc = run([*argv, "--db", url])
        out, err = capfd.readouterr()
        assert rc == 1 and SECRET not in out + err, (argv, err)
        assert "recip:***@127.0.0.1:1/q" in err
    assert SECRET not in caplog.text


@pytest.mark.slow
def test_corrupt_checkpoint(tmp_path: Path, world: World) -> None:
    """An attempt resumed from a previous attempt's corrupt checkpoint (and no readable one
    before it) starts from scratch instead of failing for good: it never copies the corrupt
    file, says so in its log and in result.json, and leaves the corrupt file as it was."""
    from orchestrator.cli.queue_cmd import build_plan

    plan = build_plan(world.spec)
    outdir = tmp_path / "attempt2"
    outdir.mkdir()
    (outdir / "config.json").write_text(json.dumps(plan.runs[0].config))
    previous = tmp_path / "attempt1"
    previous.mkdir()
    junk = b"PK\x03\x04 this is not a checkpoint"
    (previous / "checkpoint.pt").write_bytes(junk)
    env = {**os.environ, "RECIP_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-m", "workers.run_attempt",
                           str(outdir / "config.json"), str(outdir), "--resume-from",
                           str(previous)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    result = json.loads((outdir / "result.json").read_text())
    assert result["status"] == "succeeded" and result["resumed_from_iter"] is None
    fallback = result["checkpoint_fallback"]
    assert fallback["fresh_start"] is True
    [skipped] = fallback["skipped"]
    assert skipped["path"] == str(previous / "checkpoint.pt")
    assert skipped["error"].startswith(f"checkpoint {previous / 'checkpoint.pt'} cannot be read (")
    assert "\n" not in skipped["error"]
    assert "falling back to a fresh start" in proc.stdout
    assert (previous / "checkpoint.pt").read_bytes() == junk
    assert (outdir / "checkpoint.pt").read_bytes() != junk
