"""Cross-Token RA (RA-CT): a per-token, per-head sigmoid gate computed from each attention row.

mechanisms.md §4.6 (RATIO steps 13-18). For attention probabilities A (B, H, T, T):

    stat[b,h,i] = topk:    sum of the k largest A[b,h,i,:]
                  max:     max_j A[b,h,i,j]
                  entropy: -sum_j p log p   (p clamped >= 1e-12)
                  rms:     sqrt(mean_j A[b,h,i,j]^2)
    g[b,h,i]    = sigmoid(stat * scale_h + bias_h)      scale init 1.0, bias init 2.0
    apply="weights": A <- (1 - a_ct) A + a_ct (A * g)    a_ct a fixed float (0.2)
    apply="output":  y[b,h,i,:] <- y[b,h,i,:] * g[b,h,i] (a_ct not used)

Every statistic of row i reads A[i, j<=i] only, so the gate is causal. RA-CT is NOT scaled by
the coupling scale (§9). With the gates forced open (§5) the gate is the identity and the
module is skipped entirely (exactly, not up to rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

MODES = ("topk", "max", "entropy", "rms")
APPLY = ("output", "weights")


@dataclass(frozen=True, kw_only=True)
class RACTKnobs:
    mode: str = "topk"
    apply: str = "output"
    k: int = 8
    alpha: float = 0.2          # a_ct, only for apply="weights"; a fixed float upstream
    head_average: bool = False  # statistics from the head-averaged A, broadcast to heads
    detach_stats: bool = False  # no gradient through the statistic into A

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ra_ct must be one of {', '.join(MODES)} (or null for off), got {self.mode!r}")
        if self.apply not in APPLY:
            raise ValueError(f"ra_ct_apply must be one of {', '.join(APPLY)}, got {self.apply!r}")
        if self.k <= 0:
            raise ValueError(f"ra_ct_k must be > 0, got {self.k}")


def row_statistic(A: torch.Tensor, mode: str, k: int) -> torch.Tensor:
    """The per-row statistic of attention probabilities A (..., T, T) -> (..., T)."""
    if mode == "topk":
        return A.topk(min(k, A.size(-1)), dim=-1).values.sum(-1)
    if mode == "max":
        return A.amax(dim=-1)
    if mode == "entropy":
        p = A.clamp_min(1e-12)
        # masked (future) entries are exactly 0 in A: they contribute 0 * log(1e-12) = 0
        return -(A * p.log()).sum(-1)
    if mode == "rms":
        return A.pow(2).mean(-1).sqrt()
    raise AssertionError(mode)


class RACTGate(nn.Module):
    """The RA-CT gate of one attention layer: per-head scale_h, bias_h (§4.6)."""

    def __init__(self, n_head: int, knobs: RACTKnobs, trainable: bool = True):
        super().__init__()
        self.knobs = knobs
        self.scale = nn.Parameter(torch.empty(n_head), requires_grad=trainable)
        self.bias = nn.Parameter(torch.empty(n_head), requires_grad=trainable)
        self.reset_mechanism_parameters()

    @torch.no_grad()
    def reset_mechanism_parameters(self):
        self.scale.fill_(1.0)
        self.bias.fill_(2.0)  # sigmoid(2) = 0.881: mostly open at init

    def gates(self, A: torch.Tensor) -> torch.Tensor:
        """A: (B, H, T, T) attention probabilities -> g: (B, H, T)."""
        src = A.mean(dim=1, keepdim=True) if self.knobs.head_average else A  # (B, H|1, T, T)
        if self.knobs.detach_stats:
            src = src.detach()
        stat = row_statistic(src, self.knobs.mode, self.knobs.k)  # (B, H|1, T)
        return torch.sigmoid(stat * self.scale[:, None] + self.bias[:, None])  # (B, H, T)

    def on_weights(self, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        a = self.knobs.alpha
        return (1.0 - a) * A + a * (A * g[..., None])  # (B, H, T, T)

    @staticmethod
    def on_output(y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return y * g[..., None]  # (B, H, T, D)
