"""A full-scale study scaled down trains (issue 13 #3): `--preset tiny --dataset kjv --time 40`
of rmlp_prune (written for gpt2-124m: grad_accum 8, 200 eval batches) gets the tiny run scale,
so each run trains >= 20 iterations and its evals fit the budget. Short: two steps, one seed,
one worker (both cores for each run). Needs a box that is not oversubscribed: at tiny with the
GPT-2 vocabulary a step is ~0.6 s on 2 idle cores, but 4-5 s at load 9."""

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


def test_rmlp_prune_at_tiny_trains_at_least_20_iterations_per_run(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "ablations", tmp_path / "ablations")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECIP_DB_URL", "RECIP_DATA"))}
    env["RECIP_DATA_DIR"] = str(tmp_path / "data")

    def recip(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli.app", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=540)

    run = recip("run", "ablations/rmlp_prune.yaml", "--preset", "tiny", "--dataset", "kjv",
                "--time", "40", "--steps", "V0,V3", "--seeds", "1", "--cpu-workers", "1",
                "--no-report")
    assert run.returncode == 0, run.stderr
    status = json.loads(recip("status", "rmlp_prune", "--json").stdout)
    runs = [r for s in status["studies"] for r in s["runs"]]
    assert len(runs) == 2 and all(r["state"] == "succeeded" for r in runs), runs
    assert all(r["iter"] >= 20 for r in runs), [(r["step"], r["iter"]) for r in runs]
    for r in runs:  # the evaluation of 4 batches, not 200, and grad_accum 1
        config = json.loads(next((tmp_path / "runs").glob(f"rmlp_prune/{r['step']}/seed1/*/attempt1/config.json")).read_text())
        assert (config["train"]["eval_batches"], config["train"]["grad_accum"]) == (4, 1)
