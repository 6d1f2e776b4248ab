"""The worker's clock: wall time for the database, monotonic time for deadlines, sleep."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall time (what the queue stores)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (what deadlines use)."""

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        """Sleep `seconds`, or until `wake` is set."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        if seconds <= 0:
            return
        if wake is None:
            time.sleep(seconds)
        else:
            wake.wait(seconds)


class FakeClock:
    """A clock that only moves when slept on (or `advance`d): deterministic tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._t = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._start + timedelta(seconds=self._t)

    def monotonic(self) -> float:
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._t += max(0.0, seconds)

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        self.advance(seconds)
