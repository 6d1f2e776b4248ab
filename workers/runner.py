"""How a WorkerLoop starts one attempt: a fresh `python -m workers.run_attempt` process.

The process gets its own session (so SIGTERM/SIGKILL reach its whole process group), its
stdout and stderr go to OUTDIR/stdout.log, it inherits the worker's environment (Ray's
CUDA_VISIBLE_DEVICES included), and on Linux it receives SIGTERM if the worker dies, so a
SIGKILLed worker leaves no orphan training behind (the trainer checkpoints and exits).

With `warm=True` (the Ray workers' runner) a spare interpreter that has already imported
torch (workers/spare.py) becomes the next attempt, which takes the imports off the time
between the claim and the first training step; `close()` ends the spare.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from workers.train import artifacts

if TYPE_CHECKING:
    from workers.clock import Clock

logger = logging.getLogger(__name__)

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
    there); `cwd` and `env` default to the worker's own. `warm` keeps a spare interpreter
    (workers/spare.py) for the next attempt; it is started `spare_delay_s` after each spawn
    and preloads wandb when the last attempt used W&B.
    """

    def __init__(self, command: Sequence[str] | None = None, *, cwd: Path | None = None,
                 env: dict[str, str] | None = None, warm: bool = False,
                 spare_delay_s: float = 2.0) -> None:
        self.command = list(command) if command else [sys.executable, *RUN_ATTEMPT]
        self.cwd = cwd
        self.env = env
        self.warm = warm and command is None
        self.spare_delay_s = spare_delay_s
        self._spare: subprocess.Popen[bytes] | None = None
        self._spare_ready = False

    def _env(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def spawn(self, outdir: Path, *, resume_from: Path | None) -> AttemptProcess:
        argv = [str(outdir / artifacts.CONFIG), str(outdir)]
        if resume_from is not None:
            argv += ["--resume-from", str(resume_from)]
        popen = self._hand_to_spare(argv, outdir / artifacts.LOG)
        if popen is None:
            with open(outdir / artifacts.LOG, "ab") as log:
                popen = subprocess.Popen(
                    [*self.command, *argv], stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, cwd=self.cwd, env=self._env(),
                    start_new_session=True, preexec_fn=_PREEXEC,
                )
        if self.warm:
            self._start_spare(wandb=_uses_wandb(outdir / artifacts.CONFIG))
        return SubprocessAttempt(popen)

    def _hand_to_spare(self, argv: list[str], log: Path) -> subprocess.Popen[bytes] | None:
        spare, self._spare, self._spare_ready = self._spare, None, False
        if spare is None or spare.stdin is None:
            return None
        job = {"argv": argv, "log": str(log), "env": self._env(),
               "cwd": str(self.cwd) if self.cwd is not None else os.getcwd()}
        try:
            if spare.poll() is not None:
                raise OSError("the spare exited")
            spare.stdin.write(json.dumps(job).encode() + b"\n")
            spare.stdin.close()
        except OSError:
            _end(spare)
            return None
        if spare.stdout is not None:
            spare.stdout.close()
        return spare

    def _start_spare(self, *, wandb: bool) -> None:
        argv = [sys.executable, "-m", "workers.spare", "--delay", str(self.spare_delay_s)]
        try:
            self._spare = subprocess.Popen(
                [*argv, *(["--wandb"] if wandb else [])], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=self.cwd,
                env=self._env(), start_new_session=True, preexec_fn=_PREEXEC,
            )
        except OSError:
            self._spare = None

    def spare_ready(self, timeout: float = 0.0) -> bool:
        """True once the spare has preloaded (waits up to `timeout` seconds for it)."""
        spare = self._spare
        if spare is None or spare.stdout is None or spare.poll() is not None:
            return False
        if not self._spare_ready and select.select([spare.stdout], [], [], timeout)[0]:
            self._spare_ready = spare.stdout.readline().strip() == b"ready"
        return self._spare_ready

    def close(self) -> None:
        """End the spare, if any (a running attempt is not touched)."""
        spare, self._spare, self._spare_ready = self._spare, None, False
        if spare is not None:
            _end(spare)


def _end(spare: subprocess.Popen[bytes]) -> None:
    for stream in (spare.stdin, spare.stdout):
        if stream is not None:
            stream.close()
    if spare.poll() is None:
        try:
            os.killpg(spare.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        spare.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _uses_wandb(config: Path) -> bool:
    try:
        mode = json.loads(config.read_text()).get("wandb", {}).get("mode", "offline")
    except (OSError, ValueError, AttributeError):
        return False
    return mode in ("offline", "online")


# --- the processes of attempts this worker did not start ---------------------------------


def attempt_pid(outdir: Path) -> int | None:
    """The pid of a live attempt process of OUTDIR on this host: the pid the trainer writes
    into progress.json, if that process writes its stdout to OUTDIR/stdout.log (a fresh or a
    warm spare interpreter) or runs `workers.run_attempt CONFIG OUTDIR`."""
    info = artifacts.read_json(outdir / artifacts.PROGRESS)
    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or pid == os.getpid():
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        argv = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    try:  # fd 1: psutil lists regular files only for writable fds it can see
        log = os.path.realpath(outdir / artifacts.LOG)
        if any(f.fd == 1 and f.path == log for f in proc.open_files()):
            return pid
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    module = RUN_ATTEMPT[-1]
    i = argv.index(module) if module in argv else -1
    return pid if i >= 0 and len(argv) > i + 2 and argv[i + 2] == str(outdir) else None


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to `pid`'s process group (or to `pid` alone when it leads none)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_predecessor(previous: Path, clock: Clock, kill_after_s: float) -> None:
    """Before a run's next attempt starts, make sure its previous attempt's process is gone
    on this host: an orphan of a dead worker got SIGTERM and checkpoints; one that is still
    alive after `kill_after_s` is killed, so two attempts never train at once."""
    pid = attempt_pid(previous)
    if pid is None:
        return
    logger.warning("previous attempt %s still running as pid %s: stopping it", previous, pid,
                   extra={"action": "predecessor_stopped", "pid": pid})
    signal_group(pid, signal.SIGTERM)
    deadline = clock.monotonic() + kill_after_s
    while attempt_pid(previous) == pid and clock.monotonic() < deadline:
        clock.sleep(0.1)
    if attempt_pid(previous) == pid:
        signal_group(pid, signal.SIGKILL)
        while attempt_pid(previous) == pid and clock.monotonic() < deadline + 10:
            clock.sleep(0.1)
