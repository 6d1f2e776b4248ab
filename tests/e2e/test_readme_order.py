"""The README's order on one database and one runs dir (issue 13 #2): the main job
(`recip run ablations/smoke.yaml`, here shortened with --time/--seeds), then the tour's
`recip queue submit ablations/smoke.yaml --time 10 --seeds 1` and `recip workers up
--cpu-workers 1 --until-empty`. The tour's runs are new runs of the same study/step/seed; they
used to land in the main job's `runs/smoke/V0/seed1/attempt1` and fail `spawn`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def recip(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECIP_DB_URL", "RECIP_DATA"))}
    env["RECIP_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run([sys.executable, "-m", "orchestrator.cli.app", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=480)


def test_main_job_then_the_tour_submit_then_workers_all_succeed(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "ablations", tmp_path / "ablations")
    main = recip(tmp_path, "run", "ablations/smoke.yaml", "--time", "3", "--seeds", "1",
                 "--cpu-workers", "1", "--no-report")
    assert main.returncode == 0, main.stderr
    tour = recip(tmp_path, "queue", "submit", "ablations/smoke.yaml", "--time", "10", "--seeds", "1")
    assert tour.returncode == 0, tour.stderr
    assert "2 new runs" in tour.stderr
    up = recip(tmp_path, "workers", "up", "--cpu-workers", "1", "--until-empty")
    assert up.returncode == 0, up.stderr
    assert "2 attempts run, 2 succeeded" in up.stdout + up.stderr
    status = recip(tmp_path, "status", "smoke", "--json")
    runs = [r for s in json.loads(status.stdout)["studies"] for r in s["runs"]]
    # the tour's submit superseded the main job's runs (other config); both sets succeeded
    assert len(runs) == 2 and {r["state"] for r in runs} == {"succeeded"}, runs
    assert "study smoke: 2/2 runs succeeded" in main.stderr
    # four directories of their own under runs/smoke/<step>/seed1/<hash12>-run<id>/attempt1
    dirs = sorted(p.relative_to(tmp_path / "runs") for p in (tmp_path / "runs").glob("smoke/*/seed1/*/attempt1"))
    assert len(dirs) == 4 and len({d.parent.name for d in dirs}) == 4, dirs
