"""Unified RA, Generation 3 (mechanisms.md §6, §7, §9; decision 2)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from models import registry
from models.context import BlockContext
from models.layers import CausalSelfAttention, NoKnobs
from models.mechanisms.unified_ra import Knobs, UnifiedReciprocalAttention
from tests.unit.models.gen3_helpers import (
    HEAD_DIM,
    N_EMBD,
    N_HEAD,
    N_LAYER,
    T,
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

VARIANTS = [
    dict(fold="shared"),
    dict(fold="free"),
    dict(fold="shared", per_head_gates=False),
    dict(fold="free", per_head_gates=False, R=2),
    dict(fold="shared", self_restart=True, R=8),
    dict(fold="free", self_restart=True),
]
IDS = ["shared", "free", "shared-layer", "free-layer-R2", "shared-restart-R8", "free-restart"]


def ra_cfg(**knobs):
    return cfg(attn="unified_ra", attn_knobs=knobs)


def module(seed: int = 0, dtype=torch.float64, **knobs) -> UnifiedReciprocalAttention:
    torch.manual_seed(seed)
    attn = UnifiedReciprocalAttention(ra_cfg(**knobs), Knobs(**knobs), layer_idx=0).to(dtype)
    attn.reset_mechanism_parameters()
    with torch.no_grad():  # distinct gates per head, so a mixed-up head or gate shows
        attn.w_std_raw.add_(0.3 * torch.randn(attn.w_std_raw.shape, dtype=dtype))
        attn.w_rec_raw.add_(0.3 * torch.randn(attn.w_rec_raw.shape, dtype=dtype))
        if attn.rwr_alpha is not None:
            attn.rwr_alpha.copy_(torch.rand(N_HEAD, dtype=dtype) * 0.4)
    return attn


def slow_unified_ra(attn: UnifiedReciprocalAttention, x: torch.Tensor, cs: float) -> torch.Tensor:
    """The §6 score written out per (batch, head) with explicit matrices:
    shared: S = w_std Q K^T + cs w_rec (Q_R K_R^T)^T; free: S = w_std Q_s K_s^T + cs w_rec Q_r K_r^T."""
    B, T_, E = x.shape
    H, D, R = attn.n_head, attn.head_dim, attn.R
    qkv = x @ attn.c_attn.weight.T + attn.c_attn.bias
    q, k, v = (t.reshape(B, T_, H, D) for t in qkv.split(E, dim=-1))
    w_std, w_rec = (w.expand(H) for w in attn.gates())
    causal = torch.ones(T_, T_, dtype=torch.bool).tril()
    y = torch.zeros(B, T_, H, D, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            Q, K, V = q[b, :, h], k[b, :, h], v[b, :, h]
            if attn.knobs.fold == "shared":
                S = w_std[h] * Q @ K.T + cs * w_rec[h] * (Q[:, :R] @ K[:, :R].T).T
            else:
                S = w_std[h] * Q[:, : D - R] @ K[:, : D - R].T + cs * w_rec[h] * Q[:, D - R:] @ K[:, D - R:].T
            A = (S / math.sqrt(D)).masked_fill(~causal, float("-inf")).softmax(-1)
            O = A @ V
            if attn.rwr_alpha is not None:
                a = cs * attn.rwr_alpha[h].clamp(0, 0.5)
                O = (1 - a) * O + a * V
            y[b, :, h] = O
    return y.reshape(B, T_, E) @ attn.c_proj.weight.T + attn.c_proj.bias


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_shapes_and_meta_build(knobs):
    c = ra_cfg(**knobs)
    with torch.device("meta"):
        registry.build("attn", c, 0)
    m = build(c)
    out, _ = m(tokens())
    assert out.shape == (2, T, 64)
    attn = m.transformer.h[0].attn
    y = attn(torch.randn(3, 7, N_EMBD), BlockContext())
    assert y.shape == (3, 7, N_EMBD)


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_parameter_count_is_baseline_plus_gates(knobs):
    counts = meta_counts(ra_cfg(**knobs))
    attn, mlp = baseline_block_params(N_EMBD, 4 * N_EMBD)
    n_gates = 2 * N_HEAD if knobs.get("per_head_gates", True) else 2
    n_rwr = N_HEAD if knobs.get("self_restart") else 0
    assert counts["attention"] == N_LAYER * attn       # same c_attn/c_proj as GPT-2 in both folds
    assert counts["mlp"] == N_LAYER * mlp
    assert counts["mechanism"] == N_LAYER * (n_gates + n_rwr)


@pytest.mark.slow
@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_causal_at_every_position(knobs):
    assert_causal(build(ra_cfg(**knobs)))


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
@pytest.mark.parametrize("cs", [1.0, 0.4])
def test_forward_equals_the_explicit_formula_in_float64(knobs, cs):
    attn = module(**knobs).eval()
    x = torch.randn(2, 12, N_EMBD, dtype=torch.float64)
    got = attn(x, BlockContext(coupling_scale=cs))
    want = slow_unified_ra(attn, x, cs)
    err = rel_err(got, want)
    print(f"{knobs} cs={cs}: rel err {err:.2e}")
    assert err < 1e-6


def test_shared_reciprocal_term_is_the_transposed_low_rank_score():
    # w_std -> 0 isolates the reciprocal term: the pre-softmax score of (i, j) must be
    # <K_R(i), Q_R(j)>, the (j, i) entry of Q_R K_R^T, which the slow formula spells out
    attn = module(R=4).eval()
    attn.set_gates(w_std=0.0, w_rec=1.0)
    x = torch.randn(1, 10, N_EMBD, dtype=torch.float64)
    assert rel_err(attn(x, BlockContext()), slow_unified_ra(attn, x, 1.0)) < 1e-6
    # and it is not the untransposed Q_R K_R^T
    q, k, v = (x @ attn.c_attn.weight.T + attn.c_attn.bias).split(N_EMBD, dim=-1)
    q, k, v = (t.view(1, 10, N_HEAD, HEAD_DIM).transpose(1, 2) for t in (q, k, v))
    wrong = F.scaled_dot_product_attention(q[..., :4], k[..., :4], v, is_causal=True, scale=1 / math.sqrt(HEAD_DIM))
    wrong = wrong.transpose(1, 2).reshape(1, 10, N_EMBD) @ attn.c_proj.weight.T + attn.c_proj.bias
    assert rel_err(attn(x, BlockContext()), wrong) > 1e-3


def test_gates_start_at_the_geometric_values_exactly():
    for R in (2, 4, 8):
        attn = module(seed=0, dtype=torch.float32, R=R)
        attn.reset_mechanism_parameters()
        w_std, w_rec = attn.gates()
        D = HEAD_DIM
        torch.testing.assert_close(w_std, torch.full((N_HEAD,), (D - R) / D), rtol=0, atol=1e-7)
        torch.testing.assert_close(w_rec, torch.full((N_HEAD,), R / D), rtol=0, atol=1e-7)
    m = build(ra_cfg(w_rec_init=0.1, w_std_init=0.9, per_head_gates=False))
    w_std, w_rec = m.transformer.h[1].attn.gates()
    assert w_std.dim() == 0 and abs(w_std.item() - 0.9) < 1e-7 and abs(w_rec.item() - 0.1) < 1e-7


@pytest.mark.parametrize("fold", ["shared", "free"])
def test_coupling_scale_zero_removes_every_reciprocal_term(fold):
    # at cs = 0 the output depends neither on w_rec, rwr_alpha nor on the reciprocal dims
    m = build(ra_cfg(fold=fold, self_restart=True))
    idx = tokens()
    ref = logits(m, idx, cs=0.0)
    m2 = copy.deepcopy(m)
    with torch.no_grad():
        for blk in m2.transformer.h:
            a = blk.attn
            a.set_gates(w_rec=3.0)
            a.rwr_alpha.fill_(0.4)
            if fold == "free":  # scramble the reciprocal rows of Qf and Kf
                W = a.c_attn.weight.view(3, N_HEAD, HEAD_DIM, N_EMBD)
                W[:2, :, HEAD_DIM - a.R:] = torch.randn_like(W[:2, :, HEAD_DIM - a.R:])
    out = logits(m2, idx, cs=0.0)
    print(f"{fold}: max |diff| at cs=0 {(out - ref).abs().max().item():.3g}")
    assert torch.equal(out, ref)
    assert not torch.equal(logits(m2, idx, cs=1.0), logits(m, idx, cs=1.0))


def test_shared_at_cs0_and_unit_w_std_is_the_baseline_attention():
    base = build(cfg())
    m = copy_shared(base, build(ra_cfg(fold="shared")))
    for blk in m.transformer.h:
        blk.attn.set_gates(w_std=1.0)
    idx = tokens()
    got, want = logits(m, idx, cs=0.0), logits(base, idx)
    diff = (got - want).abs().max().item()
    print(f"shared RA (cs=0, w_std=1) vs GPT-2: max |diff| {diff:.3g}")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_on_differs_from_off(knobs):
    m = build(ra_cfg(**knobs))
    idx = tokens()
    on, off = logits(m, idx, cs=1.0), logits(m, idx, cs=0.0)
    assert (on - off).abs().max() > 1e-4
    if knobs.get("self_restart"):
        m2 = copy.deepcopy(m)
        with torch.no_grad():
            for blk in m2.transformer.h:
                blk.attn.rwr_alpha.zero_()
        assert (logits(m2, idx) - on).abs().max() > 1e-5


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_one_step_lowers_loss(knobs):
    l0, l1 = one_step_lowers_loss(build(ra_cfg(**knobs)))
    assert l1 < l0


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_gradients_reach_every_learnable_scalar(knobs):
    m = build(ra_cfg(**knobs))
    g = grad_norms(m)
    scalars = m.mixing_scalars()
    assert len(scalars) == N_LAYER * (3 if knobs.get("self_restart") else 2)
    for name, p in m.named_parameters():
        if any(p is s for s in scalars.values()):
            assert g[name] > 0, f"no gradient reaches {name}"


# ---------------------------------------------------------------------------------------
# from_pretrained_qkv


def donor_weights(seed: int = 5):
    torch.manual_seed(seed)
    donor = CausalSelfAttention(ra_cfg(), NoKnobs(), 0).double()
    with torch.no_grad():
        donor.c_attn.bias.normal_(0, 0.1)
    W_q, W_k, W_v = donor.c_attn.weight.split(N_EMBD, dim=0)
    b_q, b_k, b_v = donor.c_attn.bias.split(N_EMBD)
    return donor, (W_q, W_k, W_v), (b_q, b_k, b_v)


def donor_attention(donor, x, keep_dims: int, w: float, low_w: float = 0.0, R: int = 0):
    """Donor attention, per head: w <Q[:keep], K[:keep]> + low_w <K_low(i), Q_low(j)> over the
    donor's last R dims, scale 1/sqrt(D)."""
    B, T_, E = x.shape
    q, k, v = (x @ donor.c_attn.weight.T + donor.c_attn.bias).split(E, dim=-1)
    q, k, v = (t.view(B, T_, N_HEAD, HEAD_DIM).transpose(1, 2) for t in (q, k, v))
    S = w * q[..., :keep_dims] @ k[..., :keep_dims].transpose(-1, -2)
    if R:
        S = S + low_w * k[..., -R:] @ q[..., -R:].transpose(-1, -2)  # reciprocal: K_low(i).Q_low(j)
    S = S / math.sqrt(HEAD_DIM)
    S = S.masked_fill(~torch.ones(T_, T_, dtype=torch.bool).tril(), float("-inf"))
    y = (S.softmax(-1) @ v).transpose(1, 2).reshape(B, T_, E)
    return y @ donor.c_proj.weight.T + donor.c_proj.bias


def test_free_from_pretrained_reproduces_the_donor_with_gates_applied_once():
    donor, W, b = donor_weights()
    R = 4
    attn = module(fold="free", R=R).eval()
    attn.from_pretrained_qkv(*W, *b)
    attn.c_proj.load_state_dict(donor.c_proj.state_dict())
    x = torch.randn(2, 16, N_EMBD, dtype=torch.float64)
    D_std = HEAD_DIM - R
    # w_rec = 0: the donor's attention on its first D_std dims of every head
    attn.set_gates(w_std=1.0, w_rec=0.0)
    got = attn(x, BlockContext())
    assert rel_err(got, donor_attention(donor, x, D_std, 1.0)) < 1e-8
    full = rel_err(got, donor(x, BlockContext()))
    print(f"free from_pretrained vs donor (dropping {R} of {HEAD_DIM} dims): rel err {full:.3f}")
    assert 0 < full < 0.5
    # gates applied once: w_std = 0.5 scales the score by 0.5, not 0.25 (the upstream bug)
    attn.set_gates(w_std=0.5, w_rec=0.0)
    got = attn(x, BlockContext())
    assert rel_err(got, donor_attention(donor, x, D_std, 0.5)) < 1e-8
    assert rel_err(got, donor_attention(donor, x, D_std, 0.25)) > 1e-3
    # w_rec > 0: the low dims carry the donor's transposed low-rank score, once
    attn.set_gates(w_std=0.7, w_rec=0.3)
    got = attn(x, BlockContext())
    assert rel_err(got, donor_attention(donor, x, D_std, 0.7, low_w=0.3, R=R)) < 1e-8


def test_shared_from_pretrained_is_the_donor_at_w_rec_zero():
    donor, W, b = donor_weights()
    attn = module(fold="shared").eval()
    attn.from_pretrained_qkv(*W, *b)
    attn.c_proj.load_state_dict(donor.c_proj.state_dict())
    attn.set_gates(w_std=1.0, w_rec=0.0)
    x = torch.randn(2, 16, N_EMBD, dtype=torch.float64)
    assert rel_err(attn(x, BlockContext()), donor(x, BlockContext())) < 1e-8
    attn.set_gates(w_std=0.5, w_rec=0.0)
    assert rel_err(attn(x, BlockContext()), donor_attention(donor, x, HEAD_DIM, 0.5)) < 1e-8


# ---------------------------------------------------------------------------------------
# statistics and knobs


def test_gate_stats_per_layer_have_zero_std_not_nan():
    m = build(ra_cfg(per_head_gates=False, self_restart=True))
    stats = m.transformer.h[0].attn.get_gate_stats()
    for name in ("w_std", "w_rec", "rwr_alpha"):
        assert stats[f"{name}_std"] == 0.0
        assert stats[f"{name}_min"] == pytest.approx(stats[f"{name}_max"])
    assert stats["w_rec_mean"] == pytest.approx(4 / HEAD_DIM)
    assert stats["rwr_alpha_mean"] == pytest.approx(0.05)
    all_stats = m.mechanism_stats()
    assert "attn.w_rec_mean/L1" in all_stats and all(math.isfinite(v) for v in all_stats.values())


def test_gates_have_no_dead_zone():
    # softplus keeps a gradient at tiny gates, where upstream's clamp(w, 1e-8) had none
    attn = module(dtype=torch.float32)
    attn.set_gates(w_rec=1e-6)
    x = torch.randn(2, 8, N_EMBD)
    attn(x, BlockContext()).square().sum().backward()
    assert attn.w_rec_raw.grad.abs().max() > 0


@pytest.mark.parametrize("bad,msg", [
    (dict(fold="tied"), "fold must be one of"),
    (dict(R=0), "R must be >= 1"),
    (dict(w_rec_init=-0.1), "w_rec_init must be >= 0"),
])
def test_bad_knobs_are_rejected_with_a_clear_message(bad, msg):
    with pytest.raises(ValueError, match=msg):
        registry.make_knobs("unified_ra", "attn", bad)


def test_R_must_fit_the_head_dim():
    with pytest.raises(ValueError, match="must be < head dim"):
        build(ra_cfg(fold="free", R=HEAD_DIM))
    with pytest.raises(ValueError, match="must be <= head dim"):
        build(ra_cfg(fold="shared", R=HEAD_DIM + 1))
    build(ra_cfg(fold="shared", R=HEAD_DIM))
