"""One retry policy for the worker's database writes.

    Backoff          exponential wait between tries (backoff_s * 2^(n-1), at most backoff_max_s)
    FencedWriter     a running attempt's writes -> Write.OK | Write.LOST | Write.OUTAGE
    Retrier          the worker's other calls (register, claim, finish of an unstarted attempt)

Fencing: a write that the queue refuses (LeaseLost, StaleTransition) is LOST. A database
outage is retried; once `lease_s * 5/6` has passed since the last write that worked, the
lease must be about to expire, so the attempt is LOST too and its process is killed: two
processes never train the same attempt. Only outages are retried; any other error raises.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from orchestrator.core.errors import DatabaseUnavailable, LeaseLost, QueueError, StaleTransition
from workers.clock import Clock

logger = logging.getLogger(__name__)

T = TypeVar("T")

FENCE_FRACTION = 5 / 6
"""The share of a lease after which an unconfirmed attempt is treated as lost."""

_OUTAGE_NAMES = frozenset({"OperationalError", "InterfaceError", "DisconnectionError",
                           "TimeoutError", "ConnectionError"})


def is_outage(e: BaseException) -> bool:
    """A database that is down or unreachable (retry), not a bug (raise)."""
    if isinstance(e, DatabaseUnavailable):
        return True
    return bool({cls.__name__ for cls in type(e).__mro__} & _OUTAGE_NAMES)


class Write(enum.Enum):
    OK = "ok"
    LOST = "lost"
    """Fenced out: the attempt is no longer this worker's."""
    OUTAGE = "outage"
    """The database did not answer; try again later."""


class GaveUp(Exception):
    """A Retrier call stopped retrying (the worker is stopping, or the fence passed)."""


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.5
    max_s: float = 15.0

    def __call__(self, failures: int) -> float:
        return float(min(self.max_s, self.base_s * (2 ** max(0, min(failures, 16) - 1))))


class FencedWriter:
    """The writes of one running attempt. `lease_ok_at` is the monotonic time of the last
    write the database confirmed (the claim, at first)."""

    def __init__(self, clock: Clock, lease_s: float, backoff: Backoff, lease_ok_at: float,
                 attempt_id: int) -> None:
        self.clock = clock
        self.lease_s = lease_s
        self.backoff = backoff
        self.lease_ok_at = lease_ok_at
        self.attempt_id = attempt_id
        self.failures = 0

    @property
    def expired(self) -> bool:
        """True once the lease may have expired without a confirmed write."""
        return self.clock.monotonic() - self.lease_ok_at >= self.lease_s * FENCE_FRACTION

    def next_wait(self) -> float:
        return self.backoff(self.failures)

    def write(self, fn: Callable[[], object], *, until_fenced: bool = False) -> Write:
        """Run one fenced write; with `until_fenced`, retry an outage until the fence."""
        extra = {"attempt": self.attempt_id}
        while True:
            before = self.clock.monotonic()
            try:
                fn()
            except (LeaseLost, StaleTransition) as e:
                logger.warning("attempt %s: %s", self.attempt_id, e,
                               extra={"action": "lease_lost", **extra})
                return Write.LOST
            except Exception as e:  # noqa: BLE001 - an outage must never end the worker
                if not is_outage(e):
                    raise
                self.failures += 1
                logger.warning("database unavailable (%s): retrying", e,
                               extra={"action": "db_outage", **extra})
                if not until_fenced:
                    return Write.OUTAGE
                if self.expired:
                    return Write.LOST
                self.clock.sleep(self.backoff(self.failures))
                continue
            self.failures = 0
            self.lease_ok_at = max(self.lease_ok_at, before)
            return Write.OK


class Retrier:
    """The worker's calls outside a running attempt: outages back off until they work."""

    def __init__(self, clock: Clock, backoff: Backoff, stop: threading.Event,
                 fence_s: float) -> None:
        self.clock = clock
        self.backoff = backoff
        self.stop = stop
        self.fence_s = fence_s

    def call(self, what: str, fn: Callable[[], T], *, fence: bool = False,
             while_stopping: bool = False) -> T:
        """`fn()` once it works. Raises GaveUp when the worker stops (unless
        `while_stopping`) or, with `fence`, when refused or after `fence_s` of outage."""
        failures = 0
        first = self.clock.monotonic()
        while True:
            try:
                return fn()
            except (LeaseLost, StaleTransition):
                if fence:
                    raise GaveUp(what) from None
                raise
            except Exception as e:  # noqa: BLE001 - an outage must never end the worker
                if not is_outage(e):
                    raise
                failures += 1
                logger.warning("database unavailable during %s (%s): retry %d", what, e,
                               failures, extra={"action": "db_outage"})
            if self.stop.is_set() and not while_stopping:
                raise GaveUp(what)
            if fence and self.clock.monotonic() - first >= self.fence_s:
                raise GaveUp(what)
            self.clock.sleep(self.backoff(failures), self.stop)

    def best_effort(self, fn: Callable[[], object]) -> None:
        """Bookkeeping: an outage or a refusal is logged and dropped."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - bookkeeping only
            if not is_outage(e) and not isinstance(e, QueueError):
                raise
            logger.debug("best-effort write failed: %s", e)
