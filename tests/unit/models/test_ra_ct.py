"""RA-CT token gating inside MLA (mechanisms.md §4.6, §5, §9)."""

from __future__ import annotations

import math

import pytest
import torch

from models.mechanisms.ra_ct import RACTGate, RACTKnobs, row_statistic
from tests.unit.models.gen2_helpers import (
    N_HEAD,
    N_LAYER,
    assert_causal,
    build,
    cfg,
    grad_norms,
    logits,
    meta_counts,
    one_step_lowers_loss,
    same_weights,
    tokens,
)

L = 32
MODES = ["topk", "max", "entropy", "rms"]


def causal_probs(B=2, H=N_HEAD, T=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(B, H, T, T, generator=g).masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    return torch.softmax(S, -1)


def slow_stat(row: list[float], mode: str, k: int) -> float:
    if mode == "topk":
        return sum(sorted(row, reverse=True)[:k])
    if mode == "max":
        return max(row)
    if mode == "entropy":
        return -sum(p * math.log(max(p, 1e-12)) for p in row)
    return math.sqrt(sum(p * p for p in row) / len(row))


@pytest.mark.parametrize("mode", MODES)
def test_statistics_match_their_definitions(mode):
    A = causal_probs().double()
    stat = row_statistic(A, mode, k=3)
    for b, h, i in [(0, 0, 0), (1, 2, 5), (0, 3, 9)]:
        assert stat[b, h, i].item() == pytest.approx(slow_stat(A[b, h, i].tolist(), mode, 3), rel=1e-9)


def test_gate_formula_and_apply_modes():
    torch.manual_seed(0)
    gate = RACTGate(N_HEAD, RACTKnobs(mode="max", apply="weights", alpha=0.2))
    with torch.no_grad():
        gate.scale.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
        gate.bias.copy_(torch.tensor([2.0, 0.0, -1.0, 0.5]))
    A = causal_probs()
    g = gate.gates(A)
    ref = torch.sigmoid(A.amax(-1) * gate.scale[:, None] + gate.bias[:, None])
    torch.testing.assert_close(g, ref)
    torch.testing.assert_close(gate.on_weights(A, g), 0.8 * A + 0.2 * A * g[..., None])
    y = torch.randn(2, N_HEAD, 10, 16)
    torch.testing.assert_close(RACTGate.on_output(y, g), y * g[..., None])
    avg = RACTGate(N_HEAD, RACTKnobs(mode="max", head_average=True))
    torch.testing.assert_close(avg.gates(A), torch.sigmoid(A.mean(1).amax(-1) + 2.0)[:, None].expand(-1, N_HEAD, -1))


def test_parameter_count_is_two_per_head_per_layer():
    base = meta_counts(cfg(attn_knobs=dict(latent_dim=L)))
    ct = meta_counts(cfg(attn_knobs=dict(latent_dim=L, ra_ct="topk")))
    assert ct["attention"] == base["attention"]
    assert ct["mechanism"] == N_LAYER * 2 * N_HEAD


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("apply", ["output", "weights"])
def test_causal_at_every_position(mode, apply):
    assert_causal(build(cfg(attn_knobs=dict(latent_dim=L, ra_ct=mode, ra_ct_apply=apply, ra_ct_k=4))))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("apply", ["output", "weights"])
def test_on_differs_from_off_and_is_not_scaled_by_coupling(mode, apply):
    on = build(cfg(attn_knobs=dict(latent_dim=L, ra_ct=mode, ra_ct_apply=apply)))
    off = same_weights(on, cfg(attn_knobs=dict(latent_dim=L)))
    idx = tokens()
    d = (logits(on, idx) - logits(off, idx)).abs().max().item()
    print(f"RA-CT {mode}/{apply}: on vs off max diff {d:.3g}")
    assert d > 1e-6
    assert torch.equal(logits(on, idx, cs=0.0), logits(on, idx, cs=1.0))  # §9: RA-CT not scaled


@pytest.mark.parametrize("apply", ["output", "weights"])
def test_force_gates_open_is_exactly_ra_ct_off(apply):
    forced = build(cfg(attn_knobs=dict(latent_dim=L, ra_ct="topk", ra_ct_apply=apply, force_gates_open=True)))
    off = same_weights(forced, cfg(attn_knobs=dict(latent_dim=L)))
    idx = tokens()
    assert torch.equal(logits(forced, idx), logits(off, idx))
    assert not forced.transformer.h[0].attn.ra_ct.bias.requires_grad
    live = build(cfg(attn_knobs=dict(latent_dim=L, ra_ct="topk", ra_ct_apply=apply)))
    off2 = same_weights(live, cfg(attn_knobs=dict(latent_dim=L)))
    live.force_gates_open = True
    assert torch.equal(logits(live, idx), logits(off2, idx))


def test_knobs_are_validated():
    with pytest.raises(ValueError, match="ra_ct must be one of"):
        build(cfg(attn_knobs=dict(ra_ct="mean")))
    with pytest.raises(ValueError, match="ra_ct_apply"):
        build(cfg(attn_knobs=dict(ra_ct="topk", ra_ct_apply="both")))
    with pytest.raises(ValueError, match="ra_ct_k"):
        build(cfg(attn_knobs=dict(ra_ct="topk", ra_ct_k=0)))


@pytest.mark.parametrize("apply", ["output", "weights"])
def test_one_step_lowers_loss_and_gradients_reach_scale_and_bias(apply):
    m = build(cfg(attn_knobs=dict(latent_dim=L, ra_ct="entropy", ra_ct_apply=apply)))
    g = grad_norms(m)
    for layer in range(N_LAYER):
        assert g[f"transformer.h.{layer}.attn.ra_ct.scale"] > 0
        assert g[f"transformer.h.{layer}.attn.ra_ct.bias"] > 0
    loss0, loss1 = one_step_lowers_loss(m)
    assert loss1 < loss0
