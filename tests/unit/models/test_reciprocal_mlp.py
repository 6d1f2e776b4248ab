"""Gen-2 reciprocal MLP: mechanisms 1, 2, 3, mixing alphas, force_gates_open (mechanisms.md §4, §5, §9)."""

from __future__ import annotations

import pytest
import torch

from models import registry
from models.context import BlockContext
from models.mechanisms.reciprocal_mlp import Knobs, ReciprocalMLP
from tests.unit.models.gen2_helpers import (
    N_EMBD,
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
MLA = dict(latent_dim=L)
D_FF = 4 * N_EMBD

MECHS = {
    "gate": dict(gate=True),
    "cross-topk": dict(cross=True),
    "cross-rms": dict(cross=True, sparse_mode="rms"),
    "cross-none-rank8": dict(cross=True, sparse_mode="none", normalize=False, cross_rank=8),
    "recip-tied": dict(recip=True),
    "recip-untied": dict(recip=True, tying_mode="untied"),
    "recip-per-head": dict(recip=True, tying_mode="per_head_scalar"),
    "all": dict(gate=True, cross=True, recip=True),
}


def mcfg(mlp_knobs, attn_knobs=MLA, **kw):
    return cfg(attn_knobs=attn_knobs, mlp="reciprocal_mlp", mlp_knobs=mlp_knobs, **kw)


def expected_mechanism_params(k: dict, E=N_EMBD, H=N_HEAD, n_layer=N_LAYER, d_ff=D_FF, Ld=L) -> int:
    """§4.1-4.4 parameter formulas. The last block produces no gates and no z (nobody reads them),
    block 0 receives none, so the attention-side alphas live in blocks 1.. only."""
    n, gd = 0, k.get("gate_dim", 64)
    for layer in range(n_layer):
        last = layer == n_layer - 1
        if k.get("gate") and not last:
            n += d_ff * gd + gd + gd * H + H           # gate_proj, gate_to_heads (with biases)
        if k.get("gate") and layer > 0:
            n += 1                                      # attention-side mlp_gate_alpha
        if k.get("cross"):
            r = k.get("cross_rank")
            n += (d_ff * d_ff if r is None else 2 * d_ff * r) + 1   # cross_proj (or bottleneck) + alpha
        if k.get("recip"):
            mode = k.get("tying_mode", "tied_transpose")
            if mode == "tied_transpose":
                n += d_ff * Ld
            else:
                n += Ld * d_ff + (0 if last else d_ff * Ld)         # A, Bm
                if mode == "per_head_scalar":
                    n += H + (0 if last else H)                     # alpha_a2m, alpha_m2a
            n += 1                                                  # recip_alpha_mlp
            if layer > 0:
                n += 1                                              # attention-side recip_alpha_attn
    return n


def test_shapes_and_signals():
    c = mcfg(MECHS["all"])
    torch.manual_seed(0)
    mlp = registry.build("mlp", c, layer_idx=0)
    x = torch.randn(2, 16, N_EMBD)
    ctx = BlockContext(attn_probs=torch.softmax(torch.randn(2, N_HEAD, 16, 16).tril(), -1),
                       latent_k=torch.randn(2, 16, L))
    y = mlp(x, ctx)
    assert y.shape == (2, 16, N_EMBD)
    assert ctx.head_gates_out.shape == (2, 16, N_HEAD)
    assert ctx.latent_z_out.shape == (2, 16, L)
    assert build(c)(tokens())[0].shape == (2, 32, 64)


@pytest.mark.parametrize("name", list(MECHS))
def test_parameter_counts_match_the_spec_formulas(name):
    k = MECHS[name]
    counts = meta_counts(mcfg(k))
    assert counts["mlp"] == N_LAYER * (2 * N_EMBD * D_FF + D_FF + N_EMBD)
    assert counts["mechanism"] == expected_mechanism_params(k), name


def test_spec_coupler_counts_at_gpt2_width():
    # §4.3: at D_ff=3072, L=128: untied 786,432; tied 393,216; per_head_scalar 786,432 + 24
    for mode, n in [("untied", 786_432), ("tied_transpose", 393_216), ("per_head_scalar", 786_432 + 24)]:
        c = cfg(n_layer=2, n_head=12, n_embd=768, block_size=16, attn_knobs=dict(latent_dim=128),
                mlp="reciprocal_mlp", mlp_knobs=dict(recip=True, tying_mode=mode))
        with torch.device("meta"):
            coupler = registry.build("mlp", c, layer_idx=0).coupler
        assert sum(p.numel() for p in coupler.parameters()) == n, mode


@pytest.mark.parametrize("expansion", [2.6666666667, 3.3333333333, 4.25])
def test_mlp_expansion_is_always_honoured(expansion):
    c = mcfg(dict(cross=True, cross_rank=4), mlp_expansion=expansion)
    m = build(c)
    want = round(expansion * N_EMBD)  # nearest, not int(): 3.3333333333 * 768 is 2560 (§5)
    assert m.transformer.h[0].mlp.c_fc.out_features == want
    assert m.transformer.h[0].mlp.cross_down.in_features == want


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MECHS))
def test_causal_at_every_position(name):
    assert_causal(build(mcfg(MECHS[name], attn_knobs=dict(latent_dim=L, ra_alpha=0.3))))


def test_noncausal_gate_reproduction_flag_leaks_the_future():
    m = build(mcfg(dict(gate=True, noncausal_gate=True)))
    with pytest.raises(AssertionError, match="future leak"):
        assert_causal(m)


@pytest.mark.parametrize("name", list(MECHS))
def test_cs_zero_and_zero_alpha_are_exactly_the_plain_mla_model(name):
    m = build(mcfg(MECHS[name]))
    base = same_weights(m, cfg(attn_knobs=MLA))
    idx = tokens()
    ref = logits(base, idx)
    assert torch.equal(logits(m, idx, cs=0.0), ref)
    with torch.no_grad():
        for p in m.mixing_scalars().values():
            if p.dim() == 0:
                p.zero_()
    assert torch.equal(logits(m, idx, cs=1.0), ref)


@pytest.mark.parametrize("name", list(MECHS))
def test_each_mechanism_on_differs_from_off(name):
    m = build(mcfg(MECHS[name]))
    base = same_weights(m, cfg(attn_knobs=MLA))
    idx = tokens()
    d = (logits(m, idx) - logits(base, idx)).abs().max().item()
    print(f"{name}: on vs off max diff {d:.3g}")
    assert d > 1e-6


def test_mechanisms_need_mla_and_say_so():
    for knobs, word in [(dict(gate=True), "gate"), (dict(cross=True), "cross"), (dict(recip=True), "recip")]:
        with pytest.raises(ValueError, match=rf"^{word} .*attention 'causal'.*use attention 'mla'"):
            build(cfg(attn="causal", mlp="reciprocal_mlp", mlp_knobs=knobs))
    with pytest.raises(ValueError, match="sparse_mode"):
        Knobs(sparse_mode="top")
    with pytest.raises(ValueError, match="tying_mode"):
        Knobs(tying_mode="tied")
    with pytest.raises(ValueError, match="cross_rank"):
        Knobs(cross_rank=0)


@pytest.mark.slow
def test_per_head_scalar_works_for_any_sizes_and_rejects_too_few_features():
    # L=30 and D_ff=170 are not multiples of H=4 (upstream crashed, §17 #3)
    c = mcfg(dict(recip=True, tying_mode="per_head_scalar"), attn_knobs=dict(latent_dim=30),
             mlp_expansion=2.6666666667)
    m = build(c)
    assert m(tokens())[0].shape == (2, 32, 64)
    assert_causal(m)
    with pytest.raises(ValueError, match="per_head_scalar.*n_head=4"):
        build(mcfg(dict(recip=True, tying_mode="per_head_scalar"), attn_knobs=dict(latent_dim=3)))


def test_per_head_scalar_with_divisible_sizes_is_the_upstream_view():
    torch.manual_seed(0)
    c = mcfg(dict(recip=True, tying_mode="per_head_scalar"))
    mlp = registry.build("mlp", c, layer_idx=0)
    cp = mlp.coupler
    with torch.no_grad():
        cp.alpha_a2m.copy_(torch.tensor([0.5, 1.0, 2.0, -1.0]))
        cp.alpha_m2a.copy_(torch.tensor([3.0, 0.0, 1.0, 0.25]))
    h, ck = torch.randn(2, 5, D_FF), torch.randn(2, 5, L)
    e, z = cp(h, ck)
    e_ref = (cp.a(ck).view(2, 5, N_HEAD, D_FF // N_HEAD) * cp.alpha_a2m[:, None]).reshape(2, 5, D_FF)
    z_ref = (cp.b(h).view(2, 5, N_HEAD, L // N_HEAD) * cp.alpha_m2a[:, None]).reshape(2, 5, L)
    torch.testing.assert_close(e, e_ref)
    torch.testing.assert_close(z, z_ref)


def test_routing_sparsifiers_match_their_definitions():
    torch.manual_seed(0)
    A = torch.softmax(torch.randn(2, N_HEAD, 12, 12).masked_fill(torch.ones(12, 12).triu(1).bool(), -1e9), -1)
    W = A.mean(1)

    def mlp(**k):
        return ReciprocalMLP(mcfg(dict(cross=True, **k)), Knobs(cross=True, **k), layer_idx=0)

    top = mlp(sparse_k=3).routing(A)
    assert ((top > 0).sum(-1) == torch.clamp(torch.arange(1, 13), max=3)).all()
    torch.testing.assert_close(top.sum(-1), torch.ones(2, 12))
    raw = mlp(sparse_mode="none", normalize=False).routing(A)
    torch.testing.assert_close(raw, W)
    rms = mlp(sparse_mode="rms", sparse_tau=0.5, normalize=False).routing(A)
    thr = 0.5 * (W ** 2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(rms, torch.where(W >= thr, W, torch.zeros(())))


def test_gate_is_a_causal_prefix_mean_with_bias_two():
    torch.manual_seed(0)
    mlp = ReciprocalMLP(mcfg(dict(gate=True)), Knobs(gate=True), layer_idx=0)
    assert torch.equal(mlp.gate_to_heads.bias.detach(), torch.full((N_HEAD,), 2.0))
    h = torch.randn(2, 7, D_FF)
    g = mlp.head_gates(h)
    c = mlp.gate_proj(h)
    ref = torch.stack([torch.sigmoid(mlp.gate_to_heads(c[:, : t + 1].mean(1))) for t in range(7)], dim=1)
    torch.testing.assert_close(g, ref)


def test_gates_at_init_are_mostly_open_in_the_model():
    m = build(mcfg(dict(gate=True)))
    logits(m, tokens())
    mean = m.mechanism_stats()["mlp.head_gate_mean/L0"]
    assert 0.8 < mean < 0.95  # sigmoid(2) = 0.881


def test_force_gates_open_is_exactly_mechanism_one_off_and_freezes_gate_parameters():
    forced = build(mcfg(dict(gate=True, cross=True, force_gates_open=True)))
    plain = same_weights(forced, mcfg(dict(cross=True)))
    idx = tokens()
    assert torch.equal(logits(forced, idx), logits(plain, idx))
    mlp0 = forced.transformer.h[0].mlp
    assert not any(p.requires_grad for p in mlp0.gate_proj.parameters())
    assert forced.transformer.h[1].attn.gate_alpha.requires_grad  # mixing alphas unchanged (§5)
    # the model-level switch does the same at run time
    gated = build(mcfg(dict(gate=True, cross=True)))
    plain2 = same_weights(gated, mcfg(dict(cross=True)))
    assert not torch.equal(logits(gated, idx), logits(plain2, idx))
    gated.force_gates_open = True
    assert torch.equal(logits(gated, idx), logits(plain2, idx))


@pytest.mark.parametrize("name", ["gate", "cross-topk", "recip-untied", "all"])
def test_one_optimizer_step_lowers_the_loss(name):
    loss0, loss1 = one_step_lowers_loss(build(mcfg(MECHS[name])))
    assert loss1 < loss0


@pytest.mark.parametrize("name", ["all", "recip-untied", "recip-per-head", "cross-none-rank8"])
def test_gradients_reach_every_learnable_parameter(name):
    m = build(mcfg(MECHS[name], attn_knobs=dict(latent_dim=L, ra_alpha=0.3)))
    g = grad_norms(m)
    dead = [n for n, v in g.items() if v == 0.0]
    assert not dead, f"no gradient: {dead}"
    for key, p in m.mixing_scalars().items():
        assert p.grad is not None and p.grad.norm() > 0, key


def test_gate_prefix_mean_is_exact_in_float64():
    """The causal prefix mean runs in the module dtype when that is float64 (it was always a
    float32 cumsum, off by ~1e-8)."""
    torch.manual_seed(0)
    mlp = ReciprocalMLP(mcfg(dict(gate=True)), Knobs(gate=True), layer_idx=0).double()
    h = torch.randn(2, 64, D_FF, dtype=torch.float64) * 10
    g = mlp.head_gates(h)
    c = mlp.gate_proj(h)
    ref = torch.stack([torch.sigmoid(mlp.gate_to_heads(c[:, : t + 1].mean(1))) for t in range(64)], dim=1)
    assert (g - ref).abs().max().item() < 1e-14
