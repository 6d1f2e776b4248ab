"""How an attempt ended: a pure classifier from what the process left behind to a verdict.

    classify(Facts(result.json, exit code, why the worker ended it, ...)) -> Verdict

No I/O and no database: the loop reads the files, calls `classify`, and writes the verdict.
The rules run in order and the first that matches decides; a new failure kind is one more
entry in `STATUS_KIND` (a trainer status) or one more rule in `RULES`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.states import AttemptState, FailureKind
from workers.train import artifacts

if TYPE_CHECKING:
    from orchestrator.queue.types import ClaimedAttempt

STATUS_KIND: dict[str, FailureKind] = {
    artifacts.STATUS_FAILED: FailureKind.EXCEPTION,
    artifacts.STATUS_DIVERGED: FailureKind.DIVERGED,
    artifacts.STATUS_OOM: FailureKind.OOM,
    artifacts.STATUS_DISK_FULL: FailureKind.DISK_FULL,
}
"""A trainer-reported result.json status -> the failure kind of the attempt."""

STOP = "stop"
"""`why`: the worker was asked to stop (a clean stop, a drain or a spot notice)."""
TIMEOUT = "timeout"
"""`why`: the worker terminated the attempt past budget + grace."""


@dataclass(frozen=True)
class Facts:
    result: dict[str, Any] | None
    """result.json, if the process wrote one."""
    rc: int
    """Exit code; negative = killed by that signal."""
    why: str | None = None
    """Why the worker ended the process (STOP, TIMEOUT), or None when it ended by itself."""
    budget_s: float | None = None
    grace_s: float = 0.0
    log_tail: str = ""
    """The last line of stdout.log, for a crash message."""
    disk_full: str | None = None
    """Set by the loop when the process exited EXIT_DISK_FULL (no room even for result.json)
    or the attempt's disk has no free space left: what is full, with the free space."""

    @property
    def status(self) -> str | None:
        status = self.result.get("status") if self.result else None
        return str(status) if status is not None else None


@dataclass(frozen=True)
class Verdict:
    state: AttemptState
    """The attempt's next state; QUEUED = given back (the same attempt resumes, no retry)."""
    kind: FailureKind | None = None
    error_type: str | None = None
    message: str | None = None

    @property
    def requeue(self) -> bool:
        return self.state is AttemptState.QUEUED


@dataclass(frozen=True)
class AttemptOutcome:
    attempt_id: int
    study: str
    step: str
    seed: int
    attempt_no: int
    state: str
    """succeeded, failed, timed_out, lost (fenced out), or queued (requeued on stop)."""
    failure_kind: str | None = None
    exit_code: int | None = None
    error: str | None = None
    artifact_dir: str | None = None

    @classmethod
    def of(cls, claimed: ClaimedAttempt, state: str, kind: str | None, rc: int | None,
           error: str | None, outdir: Path | None) -> AttemptOutcome:
        return cls(attempt_id=claimed.attempt_id, study=claimed.study, step=claimed.step,
                   seed=claimed.seed, attempt_no=claimed.attempt_no, state=state,
                   failure_kind=kind, exit_code=rc, error=error,
                   artifact_dir=str(outdir) if outdir else None)


@dataclass(frozen=True)
class WorkerReport:
    worker_id: str
    outcomes: tuple[AttemptOutcome, ...] = ()
    reason: str = ""
    """Why the loop ended: stopped, max-attempts, empty, low-disk (too little free space to
    claim; the warning logged says how much)."""

    @property
    def succeeded(self) -> int:
        return sum(o.state == AttemptState.SUCCEEDED.value for o in self.outcomes)


Rule = Callable[[Facts], Verdict | None]


def _succeeded(f: Facts) -> Verdict | None:
    if f.status == artifacts.STATUS_SUCCEEDED and f.rc == artifacts.EXIT_OK:
        return Verdict(AttemptState.SUCCEEDED)
    return None


def _reported_failure(f: Facts) -> Verdict | None:
    if f.result is None or f.status not in STATUS_KIND:
        return None
    etype = f.result.get("error_type") or f.status
    emsg = f.result.get("error_message") or f"the trainer reported {f.status}"
    return Verdict(AttemptState.FAILED, STATUS_KIND[f.status], str(etype), str(emsg))


def _timed_out(f: Facts) -> Verdict | None:
    if f.why != TIMEOUT:
        return None
    msg = (f"no result after budget {f.budget_s or 0:.0f}s + grace {f.grace_s:.0f}s: "
           f"terminated (exit {f.rc})")
    return Verdict(AttemptState.TIMED_OUT, None, "Timeout", msg)


def _stopped(f: Facts) -> Verdict | None:
    if (f.why == STOP or f.rc == artifacts.EXIT_INTERRUPTED
            or f.status == artifacts.STATUS_INTERRUPTED):
        return Verdict(AttemptState.QUEUED, None, None, "stopped by the worker")
    return None


def _disk_full(f: Facts) -> Verdict | None:
    if f.disk_full is None:
        return None
    return Verdict(AttemptState.FAILED, FailureKind.DISK_FULL, "DiskFull", f.disk_full)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _crashed(f: Facts) -> Verdict:
    if f.rc < 0:
        how = f"killed by {_signal_name(f.rc)}"
        if f.rc == -9:
            how += " (out of host memory?)"
    else:
        how = f"exited {f.rc}"
    msg = f"process {how} without result.json" + (
        f"; last log line: {f.log_tail}" if f.log_tail else "")
    return Verdict(AttemptState.FAILED, FailureKind.CRASHED, "Crashed", msg[:2000])


RULES: tuple[Rule, ...] = (_succeeded, _reported_failure, _timed_out, _stopped, _disk_full)
"""Tried in order; the first verdict wins; none = crashed."""


def classify(facts: Facts) -> Verdict:
    """The verdict for an attempt whose process has ended."""
    for rule in RULES:
        verdict = rule(facts)
        if verdict is not None:
            return verdict
    return _crashed(facts)
