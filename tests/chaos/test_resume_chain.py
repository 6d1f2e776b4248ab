"""The links that make mid-step resume lossless and exclusive (no database): the next
attempt finds the newest checkpoint along the chain of attempts, carries the run's metrics
up to that checkpoint into its own metrics.jsonl, and first stops a predecessor process
that is still alive on this host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workers.attempt_dir import latest_checkpoint_dir
from workers.clock import SystemClock
from workers.run_attempt import carry_metrics
from workers.runner import attempt_pid, stop_predecessor


def _attempt(root: Path, n: int, resume_from: Path | None, checkpoint: bool) -> Path:
    d = root / f"attempt{n}"
    d.mkdir()
    (d / "attempt.json").write_text(json.dumps({"resume_from": str(resume_from)
                                                if resume_from else None}))
    if checkpoint:
        (d / "checkpoint.pt").write_bytes(b"x")
    return d


def test_latest_checkpoint_follows_the_chain(tmp_path: Path) -> None:
    a1 = _attempt(tmp_path, 1, None, checkpoint=True)
    a2 = _attempt(tmp_path, 2, a1, checkpoint=False)   # killed before it copied a1's
    a3 = _attempt(tmp_path, 3, a2, checkpoint=False)   # and again
    assert latest_checkpoint_dir(a3) == a1
    a4 = _attempt(tmp_path, 4, a3, checkpoint=True)
    assert latest_checkpoint_dir(a4) == a4
    lonely = _attempt(tmp_path, 5, None, checkpoint=False)
    assert latest_checkpoint_dir(lonely) is None
    assert latest_checkpoint_dir(tmp_path / "missing") is None
    loop = _attempt(tmp_path, 6, tmp_path / "attempt7", checkpoint=False)
    _attempt(tmp_path, 7, loop, checkpoint=False)
    assert latest_checkpoint_dir(loop) is None


def test_carry_metrics_up_to_the_checkpoint(tmp_path: Path) -> None:
    src = tmp_path / "metrics.jsonl"
    records = [{"iter": i, "tokens": 128 * i, "train_s": 0.1 * i, "values": {"loss": 5.0 - i / 10}}
               for i in range(2, 21, 2)]
    src.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"iter": 22, "val')
    dst = tmp_path / "new" / "metrics.jsonl"
    dst.parent.mkdir()
    assert carry_metrics(src, dst, 10) == 5
    assert [json.loads(line)["iter"] for line in dst.read_text().splitlines()] == [2, 4, 6, 8, 10]
    # never over an existing file (an attempt resumed in place keeps its own)
    assert carry_metrics(src, dst, 20) == 0
    assert carry_metrics(tmp_path / "none.jsonl", tmp_path / "other.jsonl", 10) == 0
    assert not (tmp_path / "other.jsonl").exists()


def _fake_attempt(outdir: Path, *, ignore_sigterm: bool, spare: bool) -> subprocess.Popen[bytes]:
    """A process that has written its pid to OUTDIR/progress.json, as an orphaned trainer
    has, and looks like `... workers.run_attempt CONFIG OUTDIR`, or (`spare`) like a warm
    spare interpreter running the attempt: another command line, stdout to OUTDIR's log."""
    outdir.mkdir(parents=True)
    body = ("import signal, time\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_sigterm else "")
            + "time.sleep(120)\n")
    argv = [sys.executable, "-c", body]
    if not spare:
        argv += ["workers.run_attempt", str(outdir / "config.json"), str(outdir)]
    with open(outdir / "stdout.log", "ab") as log:
        proc = subprocess.Popen(argv, start_new_session=True,
                                stdout=log if spare else subprocess.DEVNULL)
    (outdir / "progress.json").write_text(json.dumps({"pid": proc.pid, "iter": 7}))
    return proc


def _ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        mask = next(line.split()[1] for line in f if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("spare", [False, True], ids=["fresh", "spare"])
@pytest.mark.parametrize("ignore_sigterm", [False, True])
def test_next_attempt_stops_a_live_predecessor(tmp_path: Path, ignore_sigterm: bool,
                                               spare: bool) -> None:
    previous = tmp_path / "attempt1"
    proc = _fake_attempt(previous, ignore_sigterm=ignore_sigterm, spare=spare)
    try:
        deadline = time.monotonic() + 10
        while attempt_pid(previous) != proc.pid or (ignore_sigterm and not _ignores_sigterm(proc.pid)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        stop_predecessor(previous, SystemClock(), kill_after_s=1.0)
        took = time.monotonic() - started
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (-signal.SIGKILL if ignore_sigterm else -signal.SIGTERM)
    assert took < (3.0 if ignore_sigterm else 1.0)
    assert attempt_pid(previous) is None
    # a pid that is not that attempt's process is left alone
    (previous / "progress.json").write_text(json.dumps({"pid": os.getpid()}))
    assert attempt_pid(previous) is None
