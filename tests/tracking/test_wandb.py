"""W&B offline runs of a REAL attempt, read back by wandb's own tooling, and `recip wandb sync`.

The attempt is `python -m workers.run_attempt` on a tiny CPU config with wandb offline
(tests/tracking/offline_attempt.py). wandb's CLI (`wandb sync --dry-run`) must find its run file,
and wandb's protobuf `Record` must decode the config, the tags and the logged val_loss.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli.app import run
from tests.tracking.offline_attempt import (
    CODE_SHA,
    SEED,
    STEP,
    STUDY,
    OfflineAttempt,
    make_offline_attempt,
    offline_env,
    queue_with_attempt,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def attempt(tmp_path_factory: pytest.TempPathFactory) -> OfflineAttempt:
    return make_offline_attempt(tmp_path_factory)


@pytest.fixture
def no_wandb_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, no wandb settings
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _run_dir(attempt: OfflineAttempt) -> Path:
    dirs = sorted((attempt.outdir / "wandb").glob("offline-run-*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_wandb_cli_dry_run_finds_the_run_file(attempt: OfflineAttempt) -> None:
    from orchestrator.core import ids
    from workers.run_attempt import config_hash

    run_dir = _run_dir(attempt)
    run_id = ids.wandb_run_id(db_identity=f"dir:{attempt.outdir.resolve()}", study=STUDY,
                              step=STEP, seed=SEED, config_hash=config_hash(attempt.config),
                              attempt_no=1)
    assert run_dir.name.endswith(f"-{run_id}")        # one deterministic run per attempt
    proc = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(run_dir)],
                          capture_output=True, text=True, timeout=120, env=offline_env(),
                          check=False)
    out = proc.stdout + proc.stderr
    print(f"attempt took {attempt.seconds:.1f} s; wandb sync --dry-run said: {out.strip()}")
    assert proc.returncode == 0, out
    assert "Would sync 1 run(s)" in out and f"run-{run_id}.wandb" in out


def test_wandb_records_hold_config_tags_and_val_loss(attempt: OfflineAttempt) -> None:
    from orchestrator.core.ids import config_hash
    from orchestrator.tracking.runfile import find_run_file, read_offline_run, records

    run_file = find_run_file(attempt.outdir)
    kinds = [r.WhichOneof("record_type") for r in records(run_file)]
    assert kinds[0] == "header" and "run" in kinds and "history" in kinds and kinds[-1] == "exit"

    run = read_offline_run(attempt.outdir)
    assert run.project == STUDY and run.state == "finished"
    cfg = {k: v for k, v in run.config.items()}
    assert cfg == attempt.config                                   # the resolved config itself
    assert set(run.tags) >= {f"study:{STUDY}", f"step:{STEP}", f"seed:{SEED}", "attempt:1",
                             f"config:{config_hash(attempt.config)[:12]}",
                             f"commit:{CODE_SHA[:12]}"}
    assert run.commit == CODE_SHA[:12]

    logged = {}
    for line in (attempt.outdir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["values"].get("val_loss") is not None:
            logged[rec["iter"]] = rec["values"]["val_loss"]
    in_wandb = {row["_step"]: row["val_loss"] for row in run.history if "val_loss" in row}
    assert sorted(in_wandb) == sorted(logged) == [0, 10, 20]
    for it, v in logged.items():
        assert in_wandb[it] == pytest.approx(v, rel=1e-6)
    assert run.summary["val_loss"] == pytest.approx(logged[20], rel=1e-6)


def test_recip_wandb_sync_dry_run_lists_each_attempt(attempt, sqlite_url, fake_clock, capsys,
                                                     no_wandb_key) -> None:
    attempt_id = queue_with_attempt(sqlite_url, attempt, fake_clock)
    assert run(["wandb", "sync", STUDY, "--dry-run", "--db", sqlite_url, "--json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [(r["step"], r["seed"], r["attempt_id"], r["status"]) for r in rows] == [
        (STEP, SEED, attempt_id, "would sync")]
    assert Path(rows[0]["run_dir"]) == _run_dir(attempt)
    assert err.strip() == f"study {STUDY}: 1 would sync (--dry-run: nothing uploaded)"

    assert run(["wandb", "sync", STUDY, "--dry-run", "--db", sqlite_url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["step", "seed", "att", "run", "id"]
    assert table[1].split()[:4] == [STEP, str(SEED), "1", rows[0]["run_id"]]


def test_sync_without_an_api_key_is_one_line(attempt, sqlite_url, fake_clock, capsys,
                                             no_wandb_key) -> None:
    queue_with_attempt(sqlite_url, attempt, fake_clock)
    assert run(["wandb", "sync", STUDY, "--db", sqlite_url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        f"error: no W&B API key: set WANDB_API_KEY or run `wandb login`; 1 offline run(s) of "
        f"{STUDY} stay on disk"]


def test_sync_with_no_network_is_one_line(attempt, sqlite_url, fake_clock, capsys,
                                          no_wandb_key, monkeypatch) -> None:
    queue_with_attempt(sqlite_url, attempt, fake_clock)
    port = closed_port()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    assert run(["wandb", "sync", STUDY, "--db", sqlite_url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot reach W&B at http://127.0.0.1:{port}")
    assert not any(_run_dir(attempt).glob("*.synced"))


def test_synced_runs_are_skipped(attempt, tmp_path, sqlite_url, fake_clock, capsys,
                                 no_wandb_key) -> None:
    copy = OfflineAttempt(outdir=tmp_path / "attempt1", config=attempt.config,
                          attempt_id=attempt.attempt_id, seconds=0.0)
    shutil.copytree(attempt.outdir, copy.outdir)
    run_file = next((copy.outdir / "wandb").glob("offline-run-*/*.wandb"))
    run_file.with_name(run_file.name + ".synced").write_text("")   # what `wandb sync` leaves
    queue_with_attempt(sqlite_url, copy, fake_clock)
    assert run(["wandb", "sync", STUDY, "--db", sqlite_url, "--json"]) == 0  # no key needed
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == ["already synced"]


def test_unknown_study_is_one_line(sqlite_url, capsys) -> None:
    assert run(["wandb", "sync", "nope", "--db", sqlite_url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no study 'nope'")
