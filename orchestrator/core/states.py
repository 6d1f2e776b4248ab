"""Attempt states and the transitions the queue allows.

    queued -> claimed -> running -> succeeded | failed | timed_out | lost | cancelled

`claimed` and `running` hold a lease. `lost` means the lease expired (the worker died);
`failed` means the attempt's process failed (its `failure_kind` says how: exception,
oom, diverged, crashed); `timed_out` means past budget + grace. A worker that is asked to
stop puts its attempt back to `queued` (`interrupted`), which keeps the same attempt row so
that it resumes from its checkpoint.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class AttemptState(enum.StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def holds_lease(self) -> bool:
        return self in LEASED


TERMINAL: frozenset[AttemptState] = frozenset({
    AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.TIMED_OUT,
    AttemptState.LOST, AttemptState.CANCELLED,
})
LEASED: frozenset[AttemptState] = frozenset({AttemptState.CLAIMED, AttemptState.RUNNING})
LIVE: frozenset[AttemptState] = frozenset({AttemptState.QUEUED, *LEASED})


def values(states: Iterable[AttemptState]) -> tuple[str, ...]:
    """The string values of `states` in declaration order, for SQL `IN (...)` and JSON."""
    wanted = frozenset(states)
    return tuple(s.value for s in AttemptState if s in wanted)

ALLOWED: dict[AttemptState, frozenset[AttemptState]] = {
    AttemptState.QUEUED: frozenset({AttemptState.CLAIMED, AttemptState.CANCELLED}),
    AttemptState.CLAIMED: frozenset({
        AttemptState.RUNNING, AttemptState.QUEUED, AttemptState.FAILED,
        AttemptState.LOST, AttemptState.CANCELLED,
    }),
    AttemptState.RUNNING: frozenset({
        AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.TIMED_OUT,
        AttemptState.LOST, AttemptState.CANCELLED, AttemptState.QUEUED,
    }),
    AttemptState.SUCCEEDED: frozenset(),
    AttemptState.FAILED: frozenset(),
    AttemptState.TIMED_OUT: frozenset(),
    AttemptState.LOST: frozenset(),
    AttemptState.CANCELLED: frozenset(),
}


def can_transition(src: AttemptState, dst: AttemptState) -> bool:
    """True when the queue allows an attempt to go from `src` to `dst`."""
    return dst in ALLOWED[src]


class FailureKind(enum.StrEnum):
    """Why a `failed` attempt failed; retries are bounded per kind."""

    EXCEPTION = "exception"      # the trainer raised; result.json has the type and message
    OOM = "oom"                  # CUDA (or host) out of memory
    DIVERGED = "diverged"        # NaN/inf loss
    CRASHED = "crashed"          # the process died without a result (signal, segfault)
    SPAWN = "spawn"              # the process could not be started
    DISK_FULL = "disk_full"      # ENOSPC/EDQUOT in the attempt dir; never retried automatically

    @property
    def advice(self) -> str:
        return _ADVICE[self]


_ADVICE: dict[FailureKind, str] = {
    FailureKind.EXCEPTION: "fix the code, commit, `git pull` on the worker box, then `recip resume STUDY`",
    FailureKind.OOM: "lower train.batch_size (raise train.grad_accum to keep the effective batch), then `recip resume STUDY`",
    FailureKind.DIVERGED: "lower train.lr or raise train.warmup; check gate/alpha statistics in `recip show`",
    FailureKind.CRASHED: "see `recip logs STUDY STEP`; the process died without writing result.json",
    FailureKind.SPAWN: "check the worker's Python environment (`recip doctor`)",
    FailureKind.DISK_FULL: "free space on the worker's disk (the message names the path), or "
                           "give the worker another --runs-dir, then `recip resume STUDY`",
}
