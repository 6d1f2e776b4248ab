"""Budget (stop predicate, progress) and Clock (train time only) with a fake time source."""

from __future__ import annotations

import pytest

from workers.train.budget import Budget, Clock, FakeTime


def test_budget_stops_on_any_limit():
    b = Budget(max_train_s=60.0, max_iters=100, max_tokens=10_000)
    assert not b.exhausted(it=99, tokens=9_999, train_s=59.9)
    assert b.exhausted(it=100, tokens=0, train_s=0.0)
    assert b.exhausted(it=0, tokens=10_000, train_s=0.0)
    assert b.exhausted(it=0, tokens=0, train_s=60.0)


def test_budget_needs_a_limit():
    with pytest.raises(AssertionError):
        Budget()


def test_progress_is_the_max_over_limits_and_clamped():
    b = Budget(max_train_s=100.0)
    assert b.progress(it=10, tokens=0, train_s=25.0) == pytest.approx(0.25)
    # decision 8: max(it / max_iters, train_s / max_train_s), max_iters as a horizon
    assert b.progress(it=600, tokens=0, train_s=25.0, horizon_iters=1000) == pytest.approx(0.6)
    assert b.progress(it=0, tokens=0, train_s=250.0) == 1.0
    assert Budget(max_iters=40).progress(it=10, tokens=0, train_s=999.0) == pytest.approx(0.25)
    assert Budget(max_tokens=1000).progress(it=1, tokens=500, train_s=0.0) == pytest.approx(0.5)


def test_clock_counts_only_running_segments():
    ft = FakeTime()
    c = Clock(time_fn=ft)
    ft.advance(5.0)               # not started: wall only
    assert c.train_s == 0.0
    c.resume()
    ft.advance(2.0)
    assert c.train_s == pytest.approx(2.0)
    with c.paused():              # eval / checkpoint
        ft.advance(10.0)
        assert c.train_s == pytest.approx(2.0)
    ft.advance(1.0)
    assert c.train_s == pytest.approx(3.0)
    c.pause()
    ft.advance(4.0)
    assert c.train_s == pytest.approx(3.0)
    assert c.wall_s == pytest.approx(22.0)


def test_clock_syncs_before_closing_a_segment():
    ft = FakeTime()
    calls = []
    c = Clock(time_fn=ft, sync=lambda: calls.append(ft()))
    c.resume()
    ft.advance(1.0)
    with c.paused():
        pass
    assert len(calls) == 1


def test_compile_warmup_is_booked_separately():
    ft = FakeTime()
    c = Clock(time_fn=ft)
    c.resume()
    ft.advance(7.0)
    c.move_to_compile(6.5)
    ft.advance(1.0)
    assert c.train_s == pytest.approx(1.5)
    assert c.compile_s == pytest.approx(6.5)


def test_clock_state_roundtrip_continues_the_totals():
    ft = FakeTime()
    c = Clock(time_fn=ft)
    c.resume()
    ft.advance(3.0)
    state = c.state_dict()
    ft2 = FakeTime(start=50.0)
    c2 = Clock(time_fn=ft2)
    c2.load_state_dict(state)
    c2.resume()
    ft2.advance(2.0)
    assert c2.train_s == pytest.approx(5.0)
    assert c2.wall_s == pytest.approx(5.0)
