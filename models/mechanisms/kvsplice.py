"""KVSplice: monotone spline + PCA compression of attention values (mechanisms.md §11; §19 decision 11).

Geometry per layer (pooled over heads), on value vectors x of dim D:
- g: per-dim monotone piecewise-linear spline through K knots placed at the empirical
  quantiles xk[d, :] of the fit data, slopes softplus(delta_raw) + 1e-4 normalised so the
  mean slope over the knot range is 1, then an affine map z = y * (softplus(scale_raw) + 1e-3)
  + shift. Strictly increasing, so g^-1 exists (same searchsorted on the knot outputs yk);
  linear extrapolation outside the knot range.
- PCA on z: mu (D,), Vk (D, k) = top-k principal directions of g(X).
    compress(v)   = (g(v) - mu) @ Vk                 (..., k)   what a cache would store
    decompress(c) = g^-1(c @ Vk^T + mu)              (..., D)
Fit (§11): AdamW on delta_raw, scale_raw, shift; each epoch refits the PCA on g(X) without
grad; per batch MSE(decompress(compress(x)), x) with gradients through g and g^-1. The fit
keeps the epoch with the lowest round-trip MSE on the fit data, starting from the init,
whose g is affine with one scale for every dim, i.e. exactly plain PCA: so the fitted
geometry is never worse than PCA on the data it was fitted on.
Calibration happens on the TRAINED model (decision 11): `KVPrunedAttention.post_train`
collects V, fits each layer, and evaluates val loss with the round trip on the V path.
Everything lives in buffers: the geometry is calibration state, not a trained parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True, kw_only=True)
class SpliceKnobs:
    k: int = 32
    """PCA dims kept per value vector (C1 32, C2 16, C3 8; upstream default 64)."""
    knots: int = 7
    """Spline knots per dim, at the empirical quantiles of the calibration data."""
    epochs: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    calib_batches: int = 64
    """Training batches run through the trained model to collect V vectors."""
    samples: int = 120_000
    """At most this many V vectors per layer are kept for the fit (10 % held out for MSE)."""
    eval_batches: int = 8
    """Validation batches for the paired with/without round-trip loss difference."""

    def __post_init__(self) -> None:
        for name in ("k", "epochs", "calib_batches", "samples", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"kvsplice.{name} must be >= 1, got {getattr(self, name)}")
        if self.knots < 2:
            raise ValueError(f"kvsplice.knots must be >= 2, got {self.knots}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"kvsplice.lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")


# ----------------------------------------------------------------------------------------
# the spline, as functions of its parameters (so the fit can differentiate through them)

def knot_outputs(xk, delta_raw):
    """Knot values yk (D, K) and segment slopes (D, K-1) of the normalised spline."""
    dx = xk[:, 1:] - xk[:, :-1]                                          # (D, K-1)
    slopes = F.softplus(delta_raw) + 1e-4                                 # (D, K-1)
    avg = (slopes * dx).sum(1, keepdim=True) / dx.sum(1, keepdim=True).clamp_min(1e-12)
    slopes = slopes / avg.clamp_min(1e-6)
    yk = torch.cat([torch.zeros_like(xk[:, :1]), torch.cumsum(slopes * dx, dim=1)], dim=1)  # (D, K)
    return yk, slopes


def _piecewise(x, knots, values, slopes):
    """Evaluate per dim d: values[d, s] + slopes[d, s] * (x - knots[d, s]), s = segment of x."""
    K = knots.size(1)
    xt = x.transpose(0, 1).contiguous()                                   # (D, N)
    seg = torch.searchsorted(knots.contiguous(), xt).clamp(1, K - 1) - 1  # (D, N)
    return torch.gather(values, 1, seg), torch.gather(slopes, 1, seg), torch.gather(knots, 1, seg), xt


def spline_forward(x, xk, delta_raw, scale_raw, shift):
    """g(x) for x (N, D)."""
    yk, slopes = knot_outputs(xk, delta_raw)
    y0, s, x0, xt = _piecewise(x, xk, yk, slopes)
    y = y0 + s * (xt - x0)                                                # (D, N)
    z = y * (F.softplus(scale_raw) + 1e-3)[:, None] + shift[:, None]
    return z.transpose(0, 1)                                              # (N, D)


def spline_inverse(z, xk, delta_raw, scale_raw, shift):
    """g^-1(z) for z (N, D)."""
    yk, slopes = knot_outputs(xk, delta_raw)
    y = (z - shift) / (F.softplus(scale_raw) + 1e-3)                      # (N, D)
    x0, s, y0, yt = _piecewise(y, yk, xk, slopes)
    x = x0 + (yt - y0) / s.clamp_min(1e-6)                                # (D, N)
    return x.transpose(0, 1)                                              # (N, D)


def quantile_knots(X, K):
    """xk (D, K): per-dim empirical quantiles at linspace(0, 1, K) (index floor(q (N-1)))."""
    N = X.size(0)
    srt = X.sort(dim=0).values                                            # (N, D)
    idx = torch.floor(torch.linspace(0, 1, K, dtype=torch.float64) * (N - 1)).long()
    return srt[idx].transpose(0, 1).contiguous()                          # (D, K)


def pca(Z, k):
    """mu (D,), Vk (D, k): mean and top-k principal directions (covariance eigh in float64)."""
    mu = Z.mean(0)
    Zc = (Z - mu).double()
    evals, evecs = torch.linalg.eigh(Zc.T @ Zc)                           # ascending
    Vk = evecs.flip(-1)[:, :k]
    return mu, Vk.to(Z.dtype)


def pca_roundtrip(X, mu, Vk):
    return ((X - mu) @ Vk) @ Vk.T + mu


# ----------------------------------------------------------------------------------------

class KVSplice(nn.Module):
    """Fitted geometry of one layer's value vectors (buffers only)."""

    def __init__(self, dim: int, knobs: SpliceKnobs):
        super().__init__()
        if knobs.k > dim:
            raise ValueError(f"kvsplice.k ({knobs.k}) must be <= the head dim ({dim})")
        self.dim, self.knobs = dim, knobs
        K = knobs.knots
        self.register_buffer("xk", torch.linspace(-1, 1, K).repeat(dim, 1))   # (D, K)
        self.register_buffer("delta_raw", torch.zeros(dim, K - 1))
        self.register_buffer("scale_raw", torch.zeros(dim))
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("Vk", torch.zeros(dim, knobs.k))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def _params(self):
        return self.xk, self.delta_raw, self.scale_raw, self.shift

    def g(self, x):
        return spline_forward(x, *self._params())

    def g_inv(self, z):
        return spline_inverse(z, *self._params())

    def compress(self, v):
        """(..., D) -> (..., k)"""
        shp = v.shape
        z = self.g(v.reshape(-1, self.dim).to(self.mu.dtype))  # in the buffers' dtype (.double() works)
        return ((z - self.mu) @ self.Vk).reshape(*shp[:-1], self.knobs.k)

    def decompress(self, c):
        """(..., k) -> (..., D)"""
        shp = c.shape
        z = c.reshape(-1, self.knobs.k).to(self.Vk.dtype) @ self.Vk.T + self.mu
        return self.g_inv(z).reshape(*shp[:-1], self.dim)

    def roundtrip(self, v):
        assert bool(self.fitted), "KVSplice used before calibration (post_train fits it)"
        return self.decompress(self.compress(v)).to(v.dtype)

    # ------------------------------------------------------------------------------------

    @torch.no_grad()
    def fit(self, X, generator=None) -> dict[str, float]:
        """Fit g and the PCA on X (N, D) float32 CPU; returns the round-trip and PCA MSE on X."""
        kn = self.knobs
        X = X.float()
        N, D = X.shape
        assert D == self.dim and N >= 2, f"need (N >= 2, {self.dim}) values, got {tuple(X.shape)}"
        xk = quantile_knots(X, kn.knots)
        delta_raw = torch.zeros(D, kn.knots - 1, requires_grad=True)
        scale_raw = torch.zeros(D, requires_grad=True)
        shift = torch.zeros(D, requires_grad=True)
        params = [delta_raw, scale_raw, shift]
        opt = torch.optim.AdamW(params, lr=kn.lr, weight_decay=kn.weight_decay)
        bs = min(4096, max(256, N // 8), N)

        def full_mse():
            Z = spline_forward(X, xk, *params)
            mu, Vk = pca(Z, kn.k)
            Xr = spline_inverse(pca_roundtrip(Z, mu, Vk), xk, *params)
            return F.mse_loss(Xr, X).item(), mu, Vk

        best_mse, best_mu, best_Vk = full_mse()
        best = [p.detach().clone() for p in params]
        for _ in range(kn.epochs):
            Z = spline_forward(X, xk, delta_raw, scale_raw, shift)
            mu, Vk = pca(Z, kn.k)  # refit per epoch, no grad
            perm = torch.randperm(N, generator=generator)
            for b in range(N // bs):
                x = X[perm[b * bs:(b + 1) * bs]]
                with torch.enable_grad():
                    z = spline_forward(x, xk, delta_raw, scale_raw, shift)
                    xr = spline_inverse(pca_roundtrip(z, mu, Vk), xk, delta_raw, scale_raw, shift)
                    loss = F.mse_loss(xr, x)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
            mse, mu_e, Vk_e = full_mse()
            if math.isfinite(mse) and mse < best_mse:
                best_mse, best_mu, best_Vk = mse, mu_e, Vk_e
                best = [p.detach().clone() for p in params]
        dev = self.xk.device
        self.xk.copy_(xk.to(dev))
        self.delta_raw.copy_(best[0].to(dev))
        self.scale_raw.copy_(best[1].to(dev))
        self.shift.copy_(best[2].to(dev))
        self.mu.copy_(best_mu.to(dev))
        self.Vk.copy_(best_Vk.to(dev))
        self.fitted.fill_(True)
        pmu, pVk = pca(X, kn.k)
        return {"mse": best_mse, "pca_mse": F.mse_loss(pca_roundtrip(X, pmu, pVk), X).item()}

    @torch.no_grad()
    def evaluate(self, X, X_fit) -> dict[str, float]:
        """Round-trip MSE on X vs plain PCA fitted on X_fit, at the same k."""
        X = X.float().to(self.xk.device)
        pmu, pVk = pca(X_fit.float().to(self.xk.device), self.knobs.k)
        return {
            "mse": F.mse_loss(self.decompress(self.compress(X)), X).item(),
            "pca_mse": F.mse_loss(pca_roundtrip(X, pmu, pVk), X).item(),
        }
