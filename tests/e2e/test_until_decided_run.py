"""End to end: `recip run --until-decided` on a real local Ray with the real trainer (SQLite):
the design is declared at submit, each round's workers run until the queue is empty, the
loop says why it stopped, and whatever seeds it added are recorded looks; nothing is left
running."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.cli import app as cli
from orchestrator.queue.repo import QueueRepo
from tests.e2e.helpers import ProcessWatcher, write_spec

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(600)]


def test_until_decided_declares_the_design_runs_rounds_and_says_why_it_stopped(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECIP_DATA_DIR", str(tmp_path / "data"))
    spec = write_spec(tmp_path, steps=("V0", "V2"), seeds=(1, 2))
    with ProcessWatcher() as watcher:
        rc = cli.run(["run", str(spec), "--db", sqlite_url, "--runs-dir", str(tmp_path / "runs"),
                      "--cpu-workers", "2", "--lease", "15", "--interval", "0.5",
                      "--until-decided", "--max-seeds", "3", "--no-report"])
    err = capsys.readouterr().err
    assert rc == 0, err
    stopped = re.search(r"--until-decided stopped after (\d+) added rounds?: (.+)", err)
    assert stopped, err
    rounds = int(stopped.group(1))
    assert watcher.leftovers() == set()
    with QueueRepo.open(sqlite_url) as repo:
        results = repo.study_results("e2e")
    design, *added = results.looks
    assert design.seeds == () and design.max_seeds == 3 and set(design.steps) == {"V0", "V2"}
    assert len({lk.at for lk in added}) == rounds
    seeds = {s: sorted(a.seed for a in results.attempts if a.step == s) for s in ("V0", "V2")}
    assert all(2 <= len(v) <= 3 for v in seeds.values())
    assert all(a.state == "succeeded" for a in results.attempts)
    if rounds:
        assert "round 2: " in err and any(len(v) == 3 for v in seeds.values())
    else:
        assert seeds == {"V0": [1, 2], "V2": [1, 2]}
