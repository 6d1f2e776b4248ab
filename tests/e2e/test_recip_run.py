"""End to end: `recip run` on a real local Ray with 2 CPU workers and the real trainer, on a
SQLite file and on PostgreSQL; a step whose model raises; nothing left running after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import app as cli
from orchestrator.queue.repo import QueueRepo
from tests.e2e.helpers import ProcessWatcher, write_spec

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(240)]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECIP_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_recip_run_three_steps_on_two_cpu_workers(db_url: str, workdir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(workdir)
    with ProcessWatcher() as watcher:
        rc = cli.run(["run", str(spec), "--db", db_url, "--runs-dir", str(workdir / "runs"),
                      "--cpu-workers", "2", "--lease", "15", "--interval", "0.5"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "3/3 runs succeeded" in err
    assert watcher.seen, "no Ray or trainer process was ever seen"
    assert watcher.leftovers() == set()

    with QueueRepo.open(db_url) as repo:
        results = repo.study_results("e2e")
        attempts = {a.step: a for a in results.attempts}
        assert sorted(attempts) == ["V0", "V1", "V2"]
        assert all(a.state == "succeeded" and a.code_sha for a in attempts.values())
        assert len({a.host for a in attempts.values()}) == 1
        series = repo.metric_series([a.attempt_id for a in attempts.values()])
        for a in attempts.values():
            assert len(series[a.attempt_id]["loss"]) >= 5
            assert series[a.attempt_id]["val_loss"]
        workers = repo.snapshot(results_now(repo)).workers
        assert len(workers) == 2 and all(w.stopped_at is not None for w in workers)
    for step in ("V0", "V1", "V2"):
        [d] = (workdir / "runs" / "e2e" / step / "seed1").glob("*-run*/attempt1")
        assert json.loads((d / "result.json").read_text())["status"] == "succeeded"
        assert (d / "stdout.log").stat().st_size > 0

    assert cli.run(["status", "e2e", "--db", db_url]) == 0
    table = capsys.readouterr().out
    assert table.count("succeeded") >= 3

    assert cli.run(["logs", "e2e", "V1", "--db", db_url]) == 0
    assert "attempt succeeded" in capsys.readouterr().out


def results_now(repo: QueueRepo):  # noqa: ANN201
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_a_crashing_step_fails_with_its_error_and_the_others_still_run(
        sqlite_url: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(workdir)
    spec.write_text(spec.read_text().replace("V2: {parent: V0, train: {lr: 1.0e-3}}",
                                             "V2: {parent: V0, mlp: {rmlp: {R_ff: 4096}}}"))
    rc = cli.run(["run", str(spec), "--no-check", "--no-report", "--db", sqlite_url,
                  "--runs-dir", str(workdir / "runs"), "--cpu-workers", "2", "--lease", "15",
                  "--interval", "0.5"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "2/3 runs succeeded" in err and "V2 seed 1: failed (exception)" in err

    with QueueRepo.open(sqlite_url) as repo:
        attempts = {a.step: a for a in repo.study_results("e2e").attempts}
    assert attempts["V0"].state == attempts["V1"].state == "succeeded"
    v2 = attempts["V2"]
    assert (v2.state, v2.failure_kind, v2.error_type) == ("failed", "exception", "ValueError")
    assert "R_ff (4096) must be in (0, D_ff = 128)" in (v2.error_message or "")

    assert cli.run(["status", "e2e", "--db", sqlite_url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    [v2_view] = [r for s in status["studies"] for r in s["runs"] if r["step"] == "V2"]
    assert v2_view["state"] == "failed" and "R_ff (4096)" in (v2_view["error"] or "")
    assert cli.run(["status", "e2e", "--db", sqlite_url]) == 0
    assert "failed:exception" in capsys.readouterr().out
