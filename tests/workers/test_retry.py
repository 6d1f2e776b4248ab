"""workers.retry: one policy. Fenced writes end OK, LOST or OUTAGE; an outage past 5/6 of
the lease is LOST; the Retrier retries outages only and gives up when told to stop."""

from __future__ import annotations

import threading

import pytest

from orchestrator.core.errors import DatabaseUnavailable, LeaseLost
from workers.clock import FakeClock
from workers.retry import Backoff, FencedWriter, GaveUp, Retrier, Write


class Flaky:
    def __init__(self, fails: int, error: Exception | None = None) -> None:
        self.fails = fails
        self.calls = 0
        self.error = error or DatabaseUnavailable("down")

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.fails:
            raise self.error
        return "ok"


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(0.5, 3.0)
    assert [b(n) for n in range(6)] == [0.5, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_fenced_write_outcomes() -> None:
    clock = FakeClock()
    w = FencedWriter(clock, 6.0, Backoff(0.5, 1.0), clock.monotonic(), 7)
    assert w.write(Flaky(0)) is Write.OK
    assert w.write(Flaky(1)) is Write.OUTAGE and w.failures == 1
    assert w.write(Flaky(1, LeaseLost("gone"))) is Write.LOST
    assert w.write(Flaky(3), until_fenced=True) is Write.OK and w.failures == 0
    with pytest.raises(KeyError):
        w.write(Flaky(1, KeyError("bug")))


def test_fenced_write_gives_up_at_five_sixths_of_the_lease() -> None:
    clock = FakeClock()
    w = FencedWriter(clock, 6.0, Backoff(0.5, 1.0), clock.monotonic(), 7)
    t0 = clock.monotonic()
    assert w.write(Flaky(10**6), until_fenced=True) is Write.LOST
    assert 5.0 <= clock.monotonic() - t0 < 6.0
    assert w.expired


def test_retrier_retries_outages_and_stops_when_asked() -> None:
    clock, stop = FakeClock(), threading.Event()
    r = Retrier(clock, Backoff(0.5, 1.0), stop, fence_s=3.0)
    assert r.call("x", Flaky(4)) == "ok"
    with pytest.raises(GaveUp):
        r.call("x", Flaky(10**6), fence=True)
    with pytest.raises(LeaseLost):
        r.call("x", Flaky(1, LeaseLost("gone")))
    stop.set()
    with pytest.raises(GaveUp):
        r.call("x", Flaky(1))
    assert r.call("finish", Flaky(2), while_stopping=True) == "ok"
    r.best_effort(Flaky(1))
    with pytest.raises(KeyError):
        r.best_effort(Flaky(1, KeyError("bug")))
