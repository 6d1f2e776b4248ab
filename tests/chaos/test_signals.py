"""A stop signal that reaches an attempt process while it is still starting (importing torch,
preparing data, building the model) ends it at once with `interrupted` (exit 3), so an
attempt orphaned by a SIGKILLed worker never outlives the worker's lease."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cli.queue_cmd import build_plan
from tests.e2e.helpers import write_spec

pytestmark = [pytest.mark.chaos]


def _catches_sigterm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


def test_sigterm_while_starting_stops_at_once(tmp_path: Path) -> None:
    plan = build_plan(write_spec(tmp_path, steps=("V0",), iters=50))
    outdir = tmp_path / "attempt1"
    outdir.mkdir()
    (outdir / "config.json").write_text(json.dumps(plan.runs[0].config))
    env = {**os.environ, "RECIP_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "workers.run_attempt",
                             str(outdir / "config.json"), str(outdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not _catches_sigterm(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        rc = proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert rc == 3, output
    assert "before training started: stopping now" in output
    result = json.loads((outdir / "result.json").read_text())
    assert result["status"] == "interrupted" and result["iters"] is None
    assert not (outdir / "checkpoint.pt").exists()
    assert took < 5.0, f"took {took:.1f}s to stop"
