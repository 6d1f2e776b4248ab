"""`recip status` on a real database, with attempts driven through the real QueueRepo."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.cli.app import run
from orchestrator.cli.status_cmd import snapshot_json
from orchestrator.queue.repo import QueueRepo

SPEC = """\
study: watchme
defaults:
  model: {preset: tiny}
  data: {tokenizer: byte}
  train: {budget: {seconds: 600}}
steps:
  V0: {description: baseline}
  V1: {parent: V0, mlp: {rmlp: {R_ff: 64}}}
"""
LEASE = timedelta(seconds=60)


@pytest.fixture
def study(tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> Iterator[str]:
    spec = tmp_path / "watchme.yaml"
    spec.write_text(SPEC)
    assert run(["queue", "submit", str(spec), "--no-check", "--db", db_url]) == 0
    capsys.readouterr()
    yield db_url


def now() -> datetime:
    return datetime.now(UTC)


def table(out: str) -> list[list[str]]:
    """The rows under the column header (the header line above may wrap on long URLs)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["step", "seed"])
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_status_of_a_queued_study(study: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "--db", study]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("watchme  2 queued   ")
    assert [row[:4] for row in table(out)] == [["V0", "1", "1", "queued"],
                                               ["V1", "1", "1", "queued"]]
    assert err == ""


def test_status_shows_progress_and_reaps_expired_leases(
        study: str, capsys: pytest.CaptureFixture[str]) -> None:
    with QueueRepo.open(study) as repo:
        repo.register_worker("gpu-a:0", now(), host="gpu-a", gpu="0", pid=11)
        repo.register_worker("gpu-a:1", now(), host="gpu-a", gpu="1", pid=12)
        live = repo.claim("gpu-a:0", now(), LEASE)
        assert live is not None
        repo.start(live.attempt_id, "gpu-a:0", now(), LEASE, artifact_dir="runs/x",
                   code_sha="abc", code_dirty=False, diff_hash=None, host="gpu-a", gpu="0",
                   pid=101, env={})
        repo.heartbeat(live.attempt_id, "gpu-a:0", now(), LEASE,
                       {"iter": 2210, "train_s": 270.0, "val_loss": 3.588, "phase": "eval",
                        "eval_s": 30.0})
        dead = repo.claim("gpu-a:1", now() - timedelta(minutes=10), LEASE)
        assert dead is not None
    assert run(["status", "watchme", "--db", study]) == 0
    out, err = capsys.readouterr()
    assert err == "reaped 1 expired lease\n"
    rows = {row[0]: row for row in table(out)}
    assert rows["V0"][:11] == ["V0", "1", "1", "running", "eval", "gpu-a:0", "2210",
                               "4.5/10.0m", "30s", "–", "3.588"]  # no train loss in it
    assert rows["V0"][12] in ("0s", "1s", "2s")
    # (330 s of V0's budget left + V1's 600 s) x (270 + 30) / 270, over 2 workers: 517 s
    assert ("budget 4.5m/20m used (+30s eval) · ETA ~8.6m incl. eval at 2 in parallel"
            in " ".join(out.split()))
    assert rows["V1"][:4] == ["V1", "1", "2", "queued"]   # lost, then its next attempt
    assert "workers" in out and "gpu-a:1" in out
    # the second look reaps nothing
    assert run(["status", "--db", study]) == 0
    assert capsys.readouterr().err == ""


def test_status_json(study: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "watchme", "--json", "--db", study]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["db"] == study
    (s,) = data["studies"]
    assert s["name"] == "watchme" and s["counts"] == {"queued": 2}
    assert [(r["step"], r["seed"], r["state"], r["budget_s"]) for r in s["runs"]] == [
        ("V0", 1, "queued", 600.0), ("V1", 1, "queued", 600.0)]
    datetime.fromisoformat(data["taken_at"])
    with QueueRepo.open(study) as repo:
        assert snapshot_json(repo.snapshot(now(), "watchme"))["studies"][0]["runs"][0][
            "config_hash"] == s["runs"][0]["config_hash"]


def test_unknown_study_and_empty_db(sqlite_url: str, study: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "nope", "--db", study]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: no study 'nope' in ")
    assert err.rstrip().endswith("(studies: watchme)")
    if sqlite_url != study:
        assert run(["status", "--db", sqlite_url]) == 0
        assert capsys.readouterr() == ("", f"no studies in {sqlite_url}; submit one with "
                                           "`recip queue submit FILE`\n")


def test_watch_stops_when_the_study_is_done(study: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["queue", "cancel", "watchme", "--db", study]) == 0
    capsys.readouterr()
    assert run(["status", "watchme", "--watch", "--db", study]) == 0
    out = capsys.readouterr().out
    assert "watchme  2 cancelled" in out


def test_watch_redraws(study: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "--watch", "--interval", "0", "--frames", "3", "--db", study]) == 0
    assert "watchme  2 queued" in capsys.readouterr().out


def test_json_and_watch_do_not_combine(study: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "--json", "--watch", "--db", study]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--json prints one snapshot; drop --watch" in err


def test_status_on_an_unmigrated_database(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "--db", f"sqlite:///{tmp_path}/none.db"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "recip db upgrade" in err


def test_status_and_unchecked_plan_never_import_torch(sqlite_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    spec = tmp_path / "watchme.yaml"
    spec.write_text(SPEC)
    code = (
        "import sys\n"
        "from orchestrator.cli.app import run\n"
        f"assert run(['status', '--db', {sqlite_url!r}]) == 0\n"
        f"assert run(['queue', 'submit', {str(spec)!r}, '--plan', '--no-check']) == 0\n"
        "print(sorted(m for m in ('torch', 'ray', 'workers.check') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_status_shows_the_reports_flags(study: str, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.core.states import AttemptState, FailureKind

    with QueueRepo.open(study) as repo:
        repo.register_worker("w", now(), host="h", gpu=None, pid=1)
        for tokens_per_s, state, kind in ((1000.0, AttemptState.SUCCEEDED, None),
                                          (800.0, AttemptState.FAILED, FailureKind.DIVERGED)):
            claimed = repo.claim("w", now(), LEASE)
            assert claimed is not None
            repo.start(claimed.attempt_id, "w", now(), LEASE, artifact_dir=f"runs/{claimed.step}",
                       code_sha="abc", code_dirty=False, diff_hash=None, host="h", gpu=None,
                       pid=2, env={})
            repo.finish(claimed.attempt_id, "w", now(), state, failure_kind=kind,
                        result={"status": "succeeded" if kind is None else "diverged",
                                "tokens_per_s": tokens_per_s, "best_val_loss": 3.0})
    assert run(["status", "--db", study]) == 0
    rows = {row[0]: " ".join(row) for row in table(capsys.readouterr().out)}
    assert "diverged" in rows["V1"]
    assert "diverged" not in rows["V0"]
    assert run(["status", "--json", "--db", study]) == 0
    runs = {r["step"]: r for r in json.loads(capsys.readouterr().out)["studies"][0]["runs"]}
    assert any("diverged" in f for f in runs["V1"]["flags"]) and runs["V0"]["flags"] == []


def test_status_json_equals_the_dataclass_tree(tmp_path):
    """snapshot_json's field walk gives exactly what dataclasses.asdict + ISO dates gave."""
    import dataclasses
    from datetime import UTC, datetime

    from orchestrator.core.views import RunView, Snapshot, StudyView, WorkerView

    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    snap = Snapshot(taken_at=t, db="sqlite:///x.db", studies=(StudyView(
        name="s", description="d", created_at=t, counts={"queued": 1},
        runs=(RunView(study="s", step="V0", seed=1, run_id=1, config_hash="h", heartbeat_at=t,
                      flags=("retried", "code_dirty"), loss=1.5),)),),
        workers=(WorkerView(id="w", host="h", gpu=None, pid=1, started_at=t,
                            last_heartbeat=t, stopped_at=None),))

    def iso(v):
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, dict):
            return {k: iso(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [iso(x) for x in v]
        return v

    assert snapshot_json(snap) == iso(dataclasses.asdict(snap))
