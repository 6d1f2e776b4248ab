"""The warm runner: a spare interpreter (workers/spare.py) that preloaded torch becomes the
next attempt, a real `workers.run_attempt` on kjv/byte; a dead spare falls back to a fresh
process; a spare left without work exits; nothing is left behind."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.workers.train.conftest import run_config
from workers.runner import SubprocessRunner
from workers.train import artifacts

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def _runner(data_root: Path) -> SubprocessRunner:
    env = {**os.environ, "RECIP_DATA_DIR": str(data_root), "RECIP_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    return SubprocessRunner(cwd=ROOT, env=env, warm=True, spare_delay_s=0.0)


def _attempt_dir(tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    out.mkdir()
    cfg = run_config(budget={"seconds": None, "iters": 3, "tokens": None}, eval_every=1000, log_every=1)
    (out / artifacts.CONFIG).write_text(json.dumps(cfg))
    return out


def _wait(proc, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while (rc := proc.poll()) is None:
        assert time.monotonic() < deadline, "attempt did not finish"
        time.sleep(0.05)
    return rc


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_ready_spare_becomes_the_attempt_and_a_new_spare_waits(kjv_byte, data_root, tmp_path):
    runner = _runner(data_root)
    try:
        runner._start_spare(wandb=False)
        assert runner.spare_ready(timeout=120)
        spare_pid = runner._spare.pid
        out = _attempt_dir(tmp_path, "a1")
        proc = runner.spawn(out, resume_from=None)
        assert proc.pid == spare_pid
        assert _wait(proc) == 0, (out / artifacts.LOG).read_text()
        result = json.loads((out / artifacts.RESULT).read_text())
        assert result["status"] == "succeeded" and result["iters"] == 3 and result["pid"] == spare_pid
        assert result["precision"]["threads"] == 1
        assert result["flops_per_token"] > 0 and result["mfu"] is None and result["peak_flops"] is None
        assert "attempt succeeded (exit 0)" in (out / artifacts.LOG).read_text()
        nxt = runner._spare
        assert nxt is not None and nxt.pid != spare_pid
    finally:
        runner.close()
    assert _gone(nxt.pid)


def test_a_dead_spare_falls_back_to_a_fresh_process(kjv_byte, data_root, tmp_path):
    runner = _runner(data_root)
    try:
        runner._start_spare(wandb=False)
        dead = runner._spare
        dead.kill()
        dead.wait()
        out = _attempt_dir(tmp_path, "a1")
        proc = runner.spawn(out, resume_from=None)
        assert proc.pid != dead.pid
        assert _wait(proc) == 0, (out / artifacts.LOG).read_text()
        assert json.loads((out / artifacts.RESULT).read_text())["status"] == "succeeded"
    finally:
        runner.close()


def test_a_spare_without_work_exits_when_its_runner_closes(data_root):
    runner = _runner(data_root)
    runner._start_spare(wandb=False)
    pid = runner._spare.pid
    runner.close()
    assert _gone(pid) and runner._spare is None and not runner.spare_ready()


def test_only_the_real_trainer_gets_a_spare():
    assert not SubprocessRunner(["python", "-c", "pass"], warm=True).warm
    assert SubprocessRunner(warm=True).warm and not SubprocessRunner().warm
