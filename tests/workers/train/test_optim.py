"""AdamWSPAM (mechanisms.md §14.1, decision 12): the five parts, one counter, state."""

from __future__ import annotations

import io
import math

import pytest
import torch

from workers.train.optim import AdamWSPAM

B1, B2 = 0.9, 0.999


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(8, 4, generator=g)), torch.nn.Parameter(torch.randn(4, generator=g))]


def _grads(step: int, params, scale: float = 1.0) -> None:
    g = torch.Generator().manual_seed(1000 + step)
    for p in params:
        p.grad = scale * (1.0 + 0.1 * torch.randn(p.shape, generator=g))


def test_all_parts_off_equals_torch_adamw_amsgrad():
    ours_p, ref_p = _params(), _params()
    ours = AdamWSPAM([{"params": ours_p, "weight_decay": 0.1}], lr=1e-2, grad_clip=0.0)
    ref = torch.optim.AdamW([{"params": ref_p, "weight_decay": 0.1}], lr=1e-2, amsgrad=True)
    for step in range(10):
        _grads(step, ours_p)
        _grads(step, ref_p)
        ours.step()
        ref.step()
    for a, b in zip(ours_p, ref_p, strict=False):
        assert torch.equal(a, b)
    assert ours.spikes == ours.resets == ours.clipped == 0


def test_element_clip_bounds_gradients_by_the_second_moment():
    params = _params()
    opt = AdamWSPAM(params, lr=1e-3, grad_clip=0.0, spike_clip_theta=50.0)
    _grads(0, params)
    opt.step()                          # first step: no state yet, nothing clipped
    assert opt.clipped == 0
    v = [opt.state[p]["exp_avg_sq"].clone() for p in params]
    _grads(1, params)
    params[0].grad[0, 0] = 1e4          # a planted outlier entry
    small = params[1].grad.clone()
    opt.step()
    thr = [(50.0 * (vi + 1e-12)).sqrt() for vi in v]
    for p, t in zip(params, thr, strict=False):
        assert (p.grad.abs() <= t * (1 + 1e-6)).all()
    assert params[0].grad[0, 0].item() == pytest.approx(thr[0][0, 0].item(), rel=1e-6)
    assert opt.clipped >= 1
    # entries below the bound are untouched
    keep = small.abs() <= thr[1]
    assert torch.equal(params[1].grad[keep], small[keep])


def test_planted_spike_triggers_the_soft_reset():
    params = _params()
    opt = AdamWSPAM(params, lr=1e-3, grad_clip=0.0, spike_z=2.0)
    for step in range(15):
        _grads(step, params)
        opt.step()
    assert opt.spikes == 0
    m_prev = [opt.state[p]["exp_avg"].clone() for p in params]
    v_prev = [opt.state[p]["exp_avg_sq"].clone() for p in params]
    _grads(15, params, scale=100.0)     # grad norm ~100x the history
    g = [p.grad.clone() for p in params]
    opt.step()
    assert opt.spikes == 1
    for p, m, v, gi in zip(params, m_prev, v_prev, g, strict=False):
        # soft reset (m *= 0.5, v *= 0.9) happens before this step's moment update
        torch.testing.assert_close(opt.state[p]["exp_avg"], B1 * 0.5 * m + (1 - B1) * gi)
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], B2 * 0.9 * v + (1 - B2) * gi * gi)
    # a normal step afterwards is no spike
    _grads(16, params)
    opt.step()
    assert opt.spikes == 1


@pytest.mark.parametrize("legacy, expected", [(False, [6, 12, 18]), (True, [3, 6, 9, 12, 15, 18])])
def test_periodic_reset_every_reset_interval_optimizer_steps(legacy: bool, expected: list[int]):
    params = _params()
    opt = AdamWSPAM(params, lr=1e-3, grad_clip=0.0, reset_interval=6, legacy_double_count=legacy)
    reset_steps = []
    for step in range(1, 21):
        _grads(step, params)
        before = opt.resets
        opt.step()
        if opt.resets > before:
            reset_steps.append(step)
    # default: every reset_interval optimizer steps; legacy (upstream bug): every interval/2
    assert reset_steps == expected
    assert opt.counter == (40 if legacy else 20)
    # right after a reset the first moment holds only that step's gradient
    opt.step()  # no new grads: same grads, step 21
    _grads(24, params)
    for _ in range(3):
        opt.step()                      # steps 22..24; 24 is a reset step without legacy
    if not legacy:
        torch.testing.assert_close(opt.state[params[0]]["exp_avg"], (1 - B1) * params[0].grad)


def test_lr_rewarm_after_a_periodic_reset_and_scheduled_lr_is_restored():
    params = _params()
    opt = AdamWSPAM(params, lr=1e-3, grad_clip=0.0, reset_interval=5, rewarm_steps=4)
    factors = []
    for step in range(1, 11):
        _grads(step, params)
        opt.step()
        factors.append(opt.last_lr_factor)
        assert opt.param_groups[0]["lr"] == 1e-3
    assert factors[:4] == [1.0] * 4
    assert factors[4] == pytest.approx(1e-3)                                  # reset step
    assert factors[5] == pytest.approx(0.5 * (1 - math.cos(math.pi * 0.25)))  # t = 1/4
    assert factors[8] == 1.0                                                  # window over


def test_global_clip_and_non_finite_norm_skips_the_update():
    params = _params()
    opt = AdamWSPAM(params, lr=1e-3, grad_clip=1.0)
    _grads(0, params, scale=10.0)
    opt.step()
    assert opt.last_grad_norm > 1.0
    assert math.sqrt(sum(float((p.grad ** 2).sum()) for p in params)) == pytest.approx(1.0, rel=1e-4)
    before = [p.detach().clone() for p in params]
    _grads(1, params)
    params[0].grad[0, 0] = float("nan")
    opt.step()
    assert opt.skipped == 1 and not math.isfinite(opt.last_grad_norm)
    assert all(torch.equal(a, b) for a, b in zip(before, params, strict=False))


def test_state_dict_roundtrip_with_weights_only_load():
    params = _params()
    opt = AdamWSPAM(params, lr=1e-3, spike_clip_theta=50.0, spike_z=2.0, reset_interval=3, rewarm_steps=2)
    for step in range(7):
        _grads(step, params)
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = AdamWSPAM(params2, lr=1e-3, spike_clip_theta=50.0, spike_z=2.0, reset_interval=3, rewarm_steps=2)
    opt2.load_state_dict(sd)
    assert (opt2.counter, opt2.resets, opt2.norms, opt2.warmup_until) == \
        (opt.counter, opt.resets, opt.norms, opt.warmup_until)
    for step in range(7, 10):
        _grads(step, params)
        _grads(step, params2)
        opt.step()
        opt2.step()
    assert all(torch.equal(a, b) for a, b in zip(params, params2, strict=False))


def _spike_run(spike_at: int, **kw) -> int:
    params = _params()
    opt = AdamWSPAM(params, lr=1e-3, grad_clip=0.0, spike_z=2.0, **kw)
    for step in range(spike_at + 1):
        _grads(step, params, scale=100.0 if step == spike_at else 1.0)
        opt.step()
    return opt.spikes


def test_spike_test_runs_once_ten_norms_are_stored_including_the_current_one():
    """§14.1 / upstream: the z test runs once 10 norms are stored including this one (9
    previous), so a spike at step index 9 (the 10th norm) is caught; the earlier rule
    (10 previous norms needed) only behind `spike_test_previous`."""
    assert _spike_run(9) == 1
    assert _spike_run(8) == 0                       # 9 stored including the spike: no test yet
    assert _spike_run(9, spike_test_previous=True) == 0
    assert _spike_run(10, spike_test_previous=True) == 1


def test_spike_window_is_99_previous_norms_plus_the_current():
    params = _params()
    opt = AdamWSPAM(params, lr=1e-3, grad_clip=0.0, spike_z=2.0)
    for step in range(150):
        _grads(step, params)
        opt.step()
    assert len(opt.norms) == 100 and opt.norms[-1] == opt.last_grad_norm


def test_clip_fraction_of_the_last_step():
    params = _params()
    opt = AdamWSPAM(params, lr=1e-3, grad_clip=0.0, spike_clip_theta=50.0)
    _grads(0, params)
    opt.step()
    assert opt.spam_stats()["clip_frac"] == 0.0
    _grads(1, params)
    params[0].grad[0, 0] = 1e4
    params[0].grad[1, 1] = -1e4
    opt.step()
    assert opt.spam_stats()["clip_frac"] == pytest.approx(opt.clipped / 36)
    assert opt.clipped >= 2
