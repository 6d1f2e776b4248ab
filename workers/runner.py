"""How a WorkerLoop starts one attempt: a fresh `python -m workers.run_attempt` process.

The process gets its own session (so SIGTERM/SIGKILL reach its whole process group), its
stdout and stderr go to OUTDIR/stdout.log, it inherits the worker's environment (Ray's
CUDA_VISIBLE_DEVICES included), and on Linux it receives SIGTERM if the worker dies, so a
SIGKILLed worker leaves no orphan training behind (the trainer checkpoints and exits).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from workers.train import artifacts

RUN_ATTEMPT: tuple[str, ...] = ("-m", "workers.run_attempt")


class AttemptProcess(Protocol):
    """A started attempt, as the loop sees it."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """The exit code once the process has ended (negative = killed by that signal)."""

    def terminate(self) -> None:
        """Ask the attempt to stop (SIGTERM to its process group): it checkpoints, exits 3."""

    def kill(self) -> None:
        """SIGKILL the attempt's whole process group."""


class Runner(Protocol):
    def spawn(self, outdir: Path, *, resume_from: Path | None) -> AttemptProcess:
        """Start the attempt whose config.json is in `outdir`; raise OSError if it cannot."""


def _parent_death_signal() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def _preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return _preexec


_PREEXEC = _parent_death_signal()


class SubprocessAttempt:
    """A Popen in its own session; signals go to the process group."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    @property
    def pid(self) -> int:
        return self._popen.pid

    def poll(self) -> int | None:
        return self._popen.poll()

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self._popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)
        if self._popen.poll() is None:
            try:
                self._popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


class SubprocessRunner:
    """The real runner: `python -m workers.run_attempt OUTDIR/config.json OUTDIR`.

    `command` replaces `python -m workers.run_attempt` (tests put a scripted fake trainer
    there); `cwd` and `env` default to the worker's own.
    """

    def __init__(self, command: Sequence[str] | None = None, *, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.command = list(command) if command else [sys.executable, *RUN_ATTEMPT]
        self.cwd = cwd
        self.env = env

    def spawn(self, outdir: Path, *, resume_from: Path | None) -> AttemptProcess:
        argv = [*self.command, str(outdir / artifacts.CONFIG), str(outdir)]
        if resume_from is not None:
            argv += ["--resume-from", str(resume_from)]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(outdir / artifacts.LOG, "ab") as log:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.cwd, env=env, start_new_session=True, preexec_fn=_PREEXEC,
            )
        return SubprocessAttempt(popen)
