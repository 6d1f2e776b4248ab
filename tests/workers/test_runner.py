"""SubprocessRunner with a real child process (a scripted stand-in for run_attempt):
stdout.log, the process group on SIGTERM and SIGKILL, and exit codes."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from workers.runner import SubprocessRunner

TRAINER = r"""
import json, os, signal, subprocess, sys, time
config, outdir = sys.argv[1], sys.argv[2]
print("args", sys.argv[1:], flush=True)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(os.path.join(outdir, "child.pid"), "w").write(str(child.pid))
def term(*_):
    child.terminate(); child.wait()
    print("terminated", flush=True)
    sys.exit(3)
if json.load(open(config)).get("on_term") == "checkpoint":
    signal.signal(signal.SIGTERM, term)
open(os.path.join(outdir, "ready"), "w").write("1")
time.sleep(120)
"""


def _start(tmp_path: Path, on_term: str) -> tuple[object, Path]:
    outdir = tmp_path / "attempt1"
    outdir.mkdir()
    (outdir / "config.json").write_text(json.dumps({"on_term": on_term}))
    runner = SubprocessRunner([sys.executable, "-c", TRAINER], cwd=tmp_path)
    proc = runner.spawn(outdir, resume_from=tmp_path / "prev")
    deadline = time.monotonic() + 30
    while not (outdir / "ready").exists():
        assert time.monotonic() < deadline, (outdir / "stdout.log").read_text()
        time.sleep(0.05)
    return proc, outdir


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_exit(proc: object, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while (rc := proc.poll()) is None:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return rc


def test_kill_takes_the_whole_process_group(tmp_path: Path) -> None:
    proc, outdir = _start(tmp_path, on_term="ignore")
    child = int((outdir / "child.pid").read_text())
    assert os.getpgid(child) == proc.pid  # type: ignore[attr-defined]
    proc.kill()  # type: ignore[attr-defined]
    assert _wait_exit(proc) == -9
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "grandchild survived SIGKILL of the group"
        time.sleep(0.05)
    log = (outdir / "stdout.log").read_text()
    assert "args" in log and "--resume-from" in log and str(tmp_path / "prev") in log


def test_terminate_lets_the_attempt_exit_cleanly(tmp_path: Path) -> None:
    proc, outdir = _start(tmp_path, on_term="checkpoint")
    proc.terminate()  # type: ignore[attr-defined]
    assert _wait_exit(proc) == 3
    assert "terminated" in (outdir / "stdout.log").read_text()
