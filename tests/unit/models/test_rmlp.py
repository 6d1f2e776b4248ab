"""R-MLP, Generation 3: folded, attention-injected, seed-003 (mechanisms.md §8, §9; decision 5)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from models import registry
from models.context import BlockContext
from models.gpt2 import GPT
from models.mechanisms.rmlp import Knobs, ReciprocalMLP
from tests.unit.models.gen3_helpers import (
    D_FF,
    N_EMBD,
    N_LAYER,
    assert_causal,
    baseline_block_params,
    build,
    cfg,
    copy_shared,
    grad_norms,
    logits,
    meta_counts,
    one_step_lowers_loss,
    tokens,
)

R_FF = 48
VARIANTS = [
    dict(R_ff=R_FF),
    dict(R_ff=R_FF, use_mixer=True),
    dict(R_ff=R_FF, gate_mode="scalar"),
    dict(R_ff=R_FF, gate_mode="token"),
    dict(R_ff=R_FF, use_mixer=True, gate_mode="scalar"),
    dict(R_ff=R_FF, inject="attn"),
    dict(R_ff=R_FF, inject="attn", tie_to_attn_proj=True),
    dict(R_ff=R_FF, inject="prev_attn"),
    dict(R_ff=R_FF, inject="prev_attn", w_rec_frozen=True),
]
IDS = ["folded", "mixer", "scalar", "token", "mixer-scalar", "attn", "attn-tied", "prev-V18", "prev-V17"]


def rmlp_cfg(attn: str = "causal", **knobs):
    return cfg(attn=attn, mlp="rmlp", mlp_knobs=knobs)


def extra_params(knobs: dict) -> tuple[int, int]:
    """(mlp delta, mechanism params) per layer from §8: +2 gates, mixer R_ff^2, scalar gate 1,
    token gate E + 1, attn_scale 1; tie_to_attn_proj drops the R_ff x E up_low weight."""
    mech = 2
    mech += R_FF * R_FF if knobs.get("use_mixer") else 0
    mech += {"none": 0, "scalar": 1, "token": N_EMBD + 1}[knobs.get("gate_mode", "none")]
    mech += 1 if knobs.get("inject", "none") != "none" else 0
    return (-R_FF * N_EMBD if knobs.get("tie_to_attn_proj") else 0), mech


def attn_scales(knobs: dict) -> int:
    """attn_scale parameters in the model: every block with inject=attn, blocks 1.. with prev_attn."""
    return {"none": 0, "attn": 0, "prev_attn": 1}[knobs.get("inject", "none")]


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_shapes_and_meta_build(knobs):
    c = rmlp_cfg(**knobs)
    with torch.device("meta"):
        GPT(c)
    m = build(c)
    assert m(tokens())[0].shape == (2, 32, 64)
    mlp = m.transformer.h[1].mlp
    ctx = BlockContext(attn_out=torch.randn(3, 5, N_EMBD), prev_attn_out=torch.randn(3, 5, N_EMBD))
    assert mlp(torch.randn(3, 5, N_EMBD), ctx).shape == (3, 5, N_EMBD)


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_parameter_count_matches_the_formula(knobs):
    counts = meta_counts(rmlp_cfg(**knobs))
    attn, mlp = baseline_block_params(N_EMBD, D_FF)
    d_mlp, mech = extra_params(knobs)
    assert counts["attention"] == N_LAYER * attn
    assert counts["mlp"] == N_LAYER * (mlp + d_mlp)
    assert counts["mechanism"] == N_LAYER * mech - attn_scales(knobs)  # none in block 0 for prev_attn


def test_expansion_ratio_is_honoured():
    for exp in (4.0, 2.6666666667, 5.0):
        m = build(rmlp_cfg(R_ff=R_FF) if exp == 4.0 else cfg(mlp="rmlp", mlp_knobs=dict(R_ff=R_FF), mlp_expansion=exp))
        mlp = m.transformer.h[0].mlp
        assert mlp.c_fc.out_features == round(exp * N_EMBD) == mlp.d_std + R_FF
        assert mlp.c_proj.in_features == round(exp * N_EMBD)


@pytest.mark.slow
@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_causal_at_every_position(knobs):
    assert_causal(build(rmlp_cfg(**knobs)))


def test_unit_gates_without_injection_are_the_baseline_mlp():
    base = build(cfg())
    m = copy_shared(base, build(rmlp_cfg(R_ff=R_FF)))
    with torch.no_grad():
        for blk in m.transformer.h:
            blk.mlp.w_std.fill_(1.0)
            blk.mlp.w_rec.fill_(1.0)
    idx = tokens()
    diff = (logits(m, idx) - logits(base, idx)).abs().max().item()
    print(f"R-MLP (w_std = w_rec = 1) vs GPT-2 MLP: max |diff| {diff:.3g}")
    torch.testing.assert_close(logits(m, idx), logits(base, idx), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_coupling_scale_zero_leaves_only_the_std_branch(knobs):
    torch.manual_seed(0)
    c = rmlp_cfg(**knobs)
    mlp = ReciprocalMLP(c, Knobs(**knobs), 0)
    mlp.reset_mechanism_parameters()
    if knobs.get("tie_to_attn_proj"):
        mlp.bind_attention(registry.build("attn", c, 0))
    x = torch.randn(2, 9, N_EMBD)
    ctx = BlockContext(coupling_scale=0.0, attn_out=torch.randn(2, 9, N_EMBD), prev_attn_out=torch.randn(2, 9, N_EMBD))
    d = mlp.d_std
    W_fc, b_fc = mlp.c_fc.weight[:d], mlp.c_fc.bias[:d]
    want = mlp.w_std * F.gelu(x @ W_fc.T + b_fc) @ mlp.c_proj.weight[:, :d].T + mlp.c_proj.bias
    got = mlp(x, ctx)
    print(f"{knobs}: cs=0 vs std branch max |diff| {(got - want).abs().max().item():.3g}")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("inject", ["attn", "prev_attn"])
def test_zero_attn_scale_is_the_folded_rmlp(inject):
    folded = build(rmlp_cfg(R_ff=R_FF))
    m = copy_shared(folded, build(rmlp_cfg(R_ff=R_FF, inject=inject)))
    idx = tokens()
    assert (logits(m, idx) - logits(folded, idx)).abs().max() > 1e-5  # injection on: differs
    with torch.no_grad():
        for blk in m.transformer.h:
            if blk.mlp.attn_scale is not None:
                blk.mlp.attn_scale.zero_()
    assert torch.equal(logits(m, idx), logits(folded, idx))


def test_prev_attn_reads_the_previous_block_and_block_zero_has_none():
    m = build(rmlp_cfg(R_ff=R_FF, inject="prev_attn"))
    mlp0, mlp1 = m.transformer.h[0].mlp, m.transformer.h[1].mlp
    x = torch.randn(2, 6, N_EMBD)
    a = torch.randn(2, 6, N_EMBD)
    no_prev = mlp0(x, BlockContext())
    assert torch.equal(mlp0(x, BlockContext(attn_out=a)), no_prev)        # ignores this block's attention
    assert not torch.equal(mlp1(x, BlockContext(prev_attn_out=a)), mlp1(x, BlockContext(prev_attn_out=0 * a)))
    with pytest.raises(AssertionError, match="needs ctx.prev_attn_out"):
        mlp1(x, BlockContext())
    # the context hands block l's attention output to block l+1
    ctx = BlockContext(attn_out=a)
    ctx.advance()
    assert ctx.prev_attn_out is a


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_on_differs_from_off(knobs):
    m = build(rmlp_cfg(**knobs))
    idx = tokens()
    on, off = logits(m, idx, cs=1.0), logits(m, idx, cs=0.0)
    assert (on - off).abs().max() > 1e-5
    ref = copy_shared(m, build(rmlp_cfg(R_ff=R_FF)))  # same weights, no option
    if knobs.get("use_mixer"):  # identity at init: on == off until the mixer moves
        with torch.no_grad():
            for blk in m.transformer.h:
                blk.mlp.mixer.weight.add_(0.1 * torch.randn(R_FF, R_FF))
    if knobs.get("gate_mode", "none") != "none" or knobs.get("inject", "none") == "attn" or knobs.get("use_mixer"):
        assert (logits(m, idx) - logits(ref, idx)).abs().max() > 1e-5


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_one_step_lowers_loss(knobs):
    l0, l1 = one_step_lowers_loss(build(rmlp_cfg(**knobs)))
    assert l1 < l0


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_gradients_reach_every_learnable_scalar(knobs):
    m = build(rmlp_cfg(**knobs))
    g = grad_norms(m)
    mech = {f"transformer.h.{i}.mlp.{n}" for i in range(N_LAYER) for n in m.transformer.h[i].mlp.mechanism_parameter_names()}
    learnable = {n for n, p in m.named_parameters() if p.requires_grad}
    for name in learnable:  # every parameter, scalars included, gets a gradient
        assert g[name] > 0, f"no gradient reaches {name}"
    assert mech & learnable
    if knobs.get("inject") == "prev_attn":
        assert m.transformer.h[0].mlp.attn_scale is None and m.transformer.h[1].mlp.attn_scale is not None
    assert set(m.mixing_scalars()) <= {f"mlp.{s}/L{i}" for i in range(N_LAYER)
                                       for s in ("w_std", "w_rec", "gate_alpha", "attn_scale")}


def test_frozen_w_rec_stays_at_its_init_and_learned_moves():
    frozen = build(rmlp_cfg(R_ff=R_FF, inject="prev_attn", w_rec_frozen=True))
    learned = build(rmlp_cfg(R_ff=R_FF, inject="prev_attn"))
    w0 = R_FF / D_FF
    for m in (frozen, learned):
        one_step_lowers_loss(m)
    for blk in frozen.transformer.h:
        assert not blk.mlp.w_rec.requires_grad and blk.mlp.w_rec.item() == pytest.approx(w0)
    assert all(abs(blk.mlp.w_rec.item() - w0) > 1e-4 for blk in learned.transformer.h)
    assert not any(p is frozen.transformer.h[0].mlp.w_rec for g in frozen.optim_groups(0.1) for p in g["params"])


def test_geometric_gate_init_and_token_gate_init():
    m = build(rmlp_cfg(R_ff=R_FF, gate_mode="token"))
    mlp = m.transformer.h[0].mlp
    assert mlp.w_std.item() == pytest.approx((D_FF - R_FF) / D_FF)
    assert mlp.w_rec.item() == pytest.approx(R_FF / D_FF)
    g = torch.sigmoid(mlp.gate_proj(torch.randn(2, 5, N_EMBD)))
    torch.testing.assert_close(g, torch.full_like(g, 0.1))
    one_step_lowers_loss(m)  # after a step the gate depends on the token
    g = torch.sigmoid(mlp.gate_proj(torch.randn(2, 5, N_EMBD)))
    assert g.std() > 0


def test_tie_to_attn_proj_shares_the_attention_parameter():
    m = build(rmlp_cfg(R_ff=R_FF, inject="attn", tie_to_attn_proj=True))
    for blk in m.transformer.h:
        W = blk.mlp._low_weight()
        assert W.data_ptr() == blk.attn.c_proj.weight.data_ptr() and W.shape == (R_FF, N_EMBD)
    assert not any("mlp._attn" in k for k in m.state_dict())
    # the low branch's gradient lands in the attention c_proj rows (both uses add up)
    m.train()
    x = torch.randn(2, 6, N_EMBD, requires_grad=False)
    blk = m.transformer.h[0]
    blk.mlp(x, BlockContext(attn_out=torch.randn(2, 6, N_EMBD))).sum().backward()
    assert blk.attn.c_proj.weight.grad[:R_FF].abs().max() > 0
    assert blk.attn.c_proj.weight.grad[R_FF:].abs().max() == 0
    # a deep copy keeps the tie inside the copy
    m2 = copy.deepcopy(m)
    assert m2.transformer.h[0].mlp._attn is m2.transformer.h[0].attn


@pytest.mark.parametrize("bad,msg", [
    (dict(R_ff=0), "R_ff must be > 0"),
    (dict(gate_mode="per_token"), "gate_mode must be one of"),
    (dict(inject="mlp"), "inject must be one of"),
])
def test_bad_knobs_are_rejected(bad, msg):
    with pytest.raises(ValueError, match=msg):
        registry.make_knobs("rmlp", "mlp", bad)


def test_sizes_are_checked_against_the_model():
    with pytest.raises(ValueError, match=r"R_ff \(256\) must be in \(0, D_ff = 256\)"):
        build(rmlp_cfg(R_ff=D_FF))
    with pytest.raises(ValueError, match="tie_to_attn_proj needs R_ff"):
        build(rmlp_cfg(R_ff=N_EMBD + 1, tie_to_attn_proj=True))


def test_R_ff_frac_scales_the_reciprocal_width_with_the_preset():
    # 0.375 is upstream's 1152/3072 split; the same knob builds at every size
    from models.mechanisms.rmlp import Knobs
    assert Knobs(R_ff_frac=0.375).width(3072) == 1152
    assert Knobs(R_ff_frac=64 / 3072).width(3072) == 64
    assert Knobs(R_ff_frac=0.375).width(512) == 192
    assert Knobs().width(3072) == 64 and Knobs(R_ff=256).width(3072) == 256
    m = build(cfg(mlp="rmlp", mlp_knobs={"R_ff_frac": 0.25}))
    assert m.transformer.h[0].mlp.R_ff == round(0.25 * m.config.mlp_width)
    assert Knobs(R_ff=64, R_ff_frac=0.5).width(512) == 256  # the fraction replaces R_ff
    for bad in ({"R_ff_frac": 1.0}, {"R_ff_frac": 0.0}, {"R_ff": 0}):
        with pytest.raises(ValueError):
            Knobs(**bad)
