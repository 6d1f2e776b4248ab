"""LR schedule (warmup + budget-aware cosine, or upstream max_iters) and coupling warmup."""

from __future__ import annotations

import math

import pytest

from workers.train.budget import Budget
from workers.train.schedule import CouplingWarmup, LRSchedule


def test_warmup_starts_at_zero_and_reaches_lr():
    s = LRSchedule(lr=6e-4, min_lr=6e-5, warmup=20)
    assert s(0, 0.0) == 0.0
    assert s(10, 0.0) == pytest.approx(3e-4)
    assert s(20, 0.0) == pytest.approx(6e-4)


def test_budget_horizon_anneals_to_min_lr_with_time():
    s = LRSchedule(lr=6e-4, min_lr=6e-5, warmup=20, horizon="budget")
    b = Budget(max_train_s=30.0)
    # a time-budgeted run that only reached iteration 300 of a 10000 horizon
    lrs = [s(300, b.progress(300, 0, t, horizon_iters=10000), 0.0) for t in (0.0, 15.0, 29.0, 30.0)]
    assert lrs[0] == pytest.approx(6e-4, rel=0.01)   # it/max_iters = 0.03
    assert lrs[1] == pytest.approx(6e-5 + 0.5 * (6e-4 - 6e-5))  # time wins: 0.5
    assert abs(lrs[2] - 6e-5) / 6e-5 < 0.10
    assert lrs[3] == pytest.approx(6e-5)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_budget_horizon_with_iteration_budget_ends_at_min_lr():
    s = LRSchedule(lr=1e-3, min_lr=1e-4, warmup=10, horizon="budget")
    b = Budget(max_iters=200)
    assert s(200, b.progress(200, 0, 0.0)) == pytest.approx(1e-4)
    assert s(199, b.progress(199, 0, 0.0)) == pytest.approx(1e-4, rel=0.01)


def test_max_iters_horizon_reproduces_upstream():
    s = LRSchedule(lr=6e-4, min_lr=6e-5, warmup=200, horizon="max_iters", max_iters=10000)
    # progress is ignored: a 2-hour budget at ~2060 iterations is still near peak (§17 #24)
    assert s(2060, 1.0) > 5.4e-4
    mid = 200 + (10000 - 200) // 2
    assert s(mid, 0.0) == pytest.approx(6e-5 + 0.5 * (6e-4 - 6e-5), rel=1e-3)
    assert s(10000, 0.0) == pytest.approx(6e-5)
    assert s(20000, 0.0) == pytest.approx(6e-5)
    ratio = (1000 - 200) / (10000 - 200)
    assert s(1000, 0.0) == pytest.approx(6e-5 + 0.5 * (1 + math.cos(math.pi * ratio)) * (6e-4 - 6e-5))


def test_coupling_warmup_fraction_steps_and_off():
    assert CouplingWarmup(fraction=0.0)(0, 0.0) == 1.0          # fraction 0 = always coupled
    cw = CouplingWarmup(fraction=0.1)
    assert cw(0, 0.0) == 0.0
    assert cw(5, 0.05) == pytest.approx(0.5)
    assert cw(50, 0.5) == 1.0
    steps = CouplingWarmup(fraction=0.1, steps=200)               # explicit steps win
    assert steps(0, 0.9) == 0.0
    assert steps(100, 0.9) == pytest.approx(0.5)
    assert steps(400, 0.0) == 1.0
    # iteration budget: warm = 0.1 * total steps, cs = step / warm (§9)
    b = Budget(max_iters=1000)
    assert cw(50, b.progress(50, 0, 0.0)) == pytest.approx(0.5)


def test_budget_horizon_peaks_at_exactly_lr_then_cosine_from_lr():
    """§1.3: warm up to lr, then cosine from lr. At the seeds' pace (2,060 iterations in
    7,200 s, warmup 200) the old warm(it) * cosine(progress) peaked at 5.875e-4."""
    s = LRSchedule(lr=6e-4, min_lr=6e-5, warmup=200, horizon="budget", max_iters=10000)
    b = Budget(max_train_s=7200.0)
    per_it = 7200.0 / 2060
    prog = [b.progress(it, 0, it * per_it, horizon_iters=10000) for it in range(2061)]
    pw = prog[200]
    lrs = [s(it, prog[it], pw) for it in range(2061)]
    assert lrs[200] == 6e-4
    assert max(lrs) == 6e-4
    assert lrs[199] == pytest.approx(6e-4 * 199 / 200)
    assert lrs[2060] == pytest.approx(6e-5)
    assert all(a >= b for a, b in zip(lrs[200:], lrs[201:], strict=False))
    # without a recorded warmup point the default p_w = warmup / max_iters keeps the peak
    assert s(200, 200 / 10000) == 6e-4
