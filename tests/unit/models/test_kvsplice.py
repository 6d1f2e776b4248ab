"""KVSplice: monotone spline + PCA on the V path, calibrated on the trained model
(mechanisms.md §11; decision 11)."""

from __future__ import annotations

import math

import pytest
import torch

from models.mechanisms.kv_prune import KVPrunedAttention
from models.mechanisms.kvsplice import (
    KVSplice,
    SpliceKnobs,
    pca,
    pca_roundtrip,
    quantile_knots,
    spline_forward,
    spline_inverse,
)
from tests.unit.models.gen3_helpers import (
    HEAD_DIM,
    N_EMBD,
    N_HEAD,
    N_LAYER,
    T,
    batch,
    build,
    cfg,
    tokens,
)


def random_spline(D: int = 6, K: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(500, D, generator=g, dtype=torch.float64) ** 3  # skewed, so knots are uneven
    xk = quantile_knots(X, K)
    params = (torch.randn(D, K - 1, generator=g, dtype=torch.float64) * 2,
              torch.randn(D, generator=g, dtype=torch.float64),
              torch.randn(D, generator=g, dtype=torch.float64))
    return X, xk, params


def structured_values(N: int, D: int = HEAD_DIM, seed: int = 0) -> torch.Tensor:
    """Vectors whose coordinates are monotone non-linear functions of a 3-d latent: a
    per-dim monotone map makes them low-rank, which plain PCA cannot see."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, 3, generator=g)
    A = torch.randn(3, D, generator=g)
    return torch.exp(0.7 * (z @ A) / math.sqrt(3)) + 0.01 * torch.randn(N, D, generator=g)


# ---------------------------------------------------------------------------------------


def test_spline_is_strictly_monotone_in_every_dim_including_extrapolation():
    X, xk, params = random_spline()
    grid = torch.linspace(-30, 30, 4001, dtype=torch.float64).unsqueeze(1).expand(-1, 6)
    z = spline_forward(grid, xk, *params)
    assert (z[1:] - z[:-1] > 0).all()


def test_spline_inverse_inverts_it():
    X, xk, params = random_spline()
    x = torch.cat([X, torch.randn(200, 6, dtype=torch.float64) * 20])  # inside and outside the knots
    err = (spline_inverse(spline_forward(x, xk, *params), xk, *params) - x).abs().max().item()
    print(f"max |g^-1(g(x)) - x| = {err:.2e}")
    assert err < 1e-9
    z = torch.randn(300, 6, dtype=torch.float64) * 5
    assert (spline_forward(spline_inverse(z, xk, *params), xk, *params) - z).abs().max() < 1e-9


def test_spline_at_init_is_affine_so_the_round_trip_is_plain_pca():
    X = structured_values(2000)
    xk = quantile_knots(X, 7)
    zeros = (torch.zeros(HEAD_DIM, 6), torch.zeros(HEAD_DIM), torch.zeros(HEAD_DIM))
    Z = spline_forward(X, xk, *zeros)
    mu, Vk = pca(Z, 4)
    spliced = spline_inverse(pca_roundtrip(Z, mu, Vk), xk, *zeros)
    pmu, pVk = pca(X, 4)
    torch.testing.assert_close(spliced, pca_roundtrip(X, pmu, pVk), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_fitted_round_trip_beats_plain_pca_at_the_same_k_on_structured_data():
    X = structured_values(6000)
    X_fit, X_hold = X[:5400], X[5400:]
    splice = KVSplice(HEAD_DIM, SpliceKnobs(k=3, epochs=4, lr=1e-2))
    fit = splice.fit(X_fit, generator=torch.Generator().manual_seed(0))
    held = splice.evaluate(X_hold, X_fit)
    print(f"fit: spline {fit['mse']:.4f} vs PCA {fit['pca_mse']:.4f}; held out: {held['mse']:.4f} vs {held['pca_mse']:.4f}")
    assert fit["mse"] <= fit["pca_mse"]
    assert held["mse"] < 0.9 * held["pca_mse"]
    assert bool(splice.fitted)
    c = splice.compress(X_hold[:10])
    assert c.shape == (10, 3) and splice.decompress(c).shape == (10, HEAD_DIM)


def test_fit_is_never_worse_than_pca_on_its_own_data():
    X = torch.randn(3000, HEAD_DIM) * torch.linspace(0.1, 2, HEAD_DIM)  # Gaussian: nothing to gain
    fit = KVSplice(HEAD_DIM, SpliceKnobs(k=4, epochs=2)).fit(X, generator=torch.Generator().manual_seed(0))
    assert fit["mse"] <= fit["pca_mse"] * (1 + 1e-5)


def test_k_must_fit_the_head_dim():
    with pytest.raises(ValueError, match=r"kvsplice.k \(17\) must be <= the head dim \(16\)"):
        build(cfg(attn="kv_prune", attn_knobs=dict(k=12, recency=4, kvsplice={"k": HEAD_DIM + 1})))


# ---------------------------------------------------------------------------------------
# calibration on the trained model (the trainer's post_train hook)


@pytest.mark.slow
def test_post_train_fits_every_layer_and_reports_the_round_trip():
    splice = dict(k=4, calib_batches=3, samples=1500, epochs=2, eval_batches=2)
    m = build(cfg(attn="kv_prune", attn_knobs=dict(k=12, recency=4, kvsplice=splice)))
    m.train()
    opt = torch.optim.AdamW(m.optim_groups(0.0), lr=3e-3)
    for step in range(3):  # a (briefly) trained model
        x, y = batch(seed=20 + step)
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    calls = {"train": 0, "val": 0}

    def get_batch(split):
        calls[split] += 1
        return batch(seed=100 + calls[split] if split == "train" else 7)

    def estimate_loss():
        with torch.no_grad():
            m.eval()
            return {"train": float("nan"), "val": m(*batch(seed=7))[1].item()}

    out: dict[str, float] = {}
    for mod in m.modules():  # what the trainer does after its final eval
        hook = getattr(mod, "post_train", None)
        if hook is not None:
            out.update(hook(m, get_batch, estimate_loss))
    assert calls == {"train": 3, "val": 2}  # one calibration pass for all layers
    for key in ("kvsplice/val_loss", "kvsplice/val_loss_delta", "kvsplice/mse", "kvsplice/pca_mse",
                *(f"kvsplice/{s}/L{i}" for s in ("mse", "pca_mse") for i in range(N_LAYER))):
        assert key in out and math.isfinite(out[key]), key
    print({k: round(v, 5) for k, v in out.items()})
    attns = [b.attn for b in m.transformer.h]
    assert all(isinstance(a, KVPrunedAttention) and bool(a.splice.fitted) for a in attns)
    assert all(not a.splice_active and a._collect is None for a in attns)
    assert m.training  # mode restored
    # the reported val loss is the trainer's estimate WITH the round trip on the V path
    m.eval()
    with torch.no_grad():
        base = m(*batch(seed=7))[1].item()
        for a in attns:
            a.splice_active = True
        spliced = m(*batch(seed=7))[1].item()
        assert m(tokens())[0].shape == (2, T, 64)
    assert out["kvsplice/val_loss"] == pytest.approx(spliced)
    assert out["kvsplice/val_loss_delta"] == pytest.approx(spliced - base, abs=1e-6)
    assert spliced != base
    # round-trip MSE is of the same order as PCA's on held-out V vectors of the model
    assert out["kvsplice/mse"] < 1.5 * out["kvsplice/pca_mse"]
    # the geometry travels in the state dict (buffers), and adds no parameter
    assert "transformer.h.0.attn.splice.Vk" in m.state_dict()
    assert not any("splice" in n for n, _ in m.named_parameters())
    assert attns[0].get_stats()["kv_cache_bytes"] == (T + 12) * N_EMBD * 2 - 12 * (N_EMBD - N_HEAD * 4) * 2


def test_post_train_is_a_no_op_without_kvsplice():
    m = build(cfg(attn="kv_prune", attn_knobs=dict(k=12, recency=4)))
    assert m.transformer.h[0].attn.post_train(m, None, None) == {}


def test_kvsplice_is_declared_a_post_training_knob():
    # `recip check` probes the training forward, which KVSplice leaves unchanged by design
    from dataclasses import fields

    from models.mechanisms.kv_prune import Knobs
    assert Knobs.POST_TRAIN == {"kvsplice"} and Knobs.POST_TRAIN <= {f.name for f in fields(Knobs)}


def test_a_fitted_splice_runs_in_float64_after_double():
    """compress / decompress follow the buffers' dtype: `.double()` works and is exact."""
    X = structured_values(2000)
    splice = KVSplice(HEAD_DIM, SpliceKnobs(k=3, epochs=1, lr=1e-2))
    splice.fit(X, generator=torch.Generator().manual_seed(0))
    s64 = splice.double()
    v = X[:50].double()
    c = s64.compress(v)
    assert c.dtype == torch.float64
    xk, dr, sr, sh = s64.xk, s64.delta_raw, s64.scale_raw, s64.shift
    want_c = (spline_forward(v, xk, dr, sr, sh) - s64.mu) @ s64.Vk
    assert (c - want_c).abs().max().item() < 1e-14
    r = s64.roundtrip(v)
    want_r = spline_inverse(want_c @ s64.Vk.T + s64.mu, xk, dr, sr, sh)
    assert r.dtype == torch.float64 and (r - want_r).abs().max().item() < 1e-14
