"""Baseline GPT-2 layers, nanoGPT-shaped (mechanisms.md §1.1).

Names follow the GPT-2 checkpoints: c_attn, c_proj, c_fc. Every attention or MLP module,
baseline or mechanism, has the signature `Module(cfg, knobs, layer_idx)` and
`forward(x, ctx) -> y` with x: (B, T, C) already layer-normed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.config import GPTConfig
from models.context import BlockContext, Partner


@dataclass(frozen=True, kw_only=True)
class NoKnobs:
    """The baseline modules take no knobs."""


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through SDPA (flash/efficient kernels where available)."""

    def __init__(self, cfg: GPTConfig, knobs: NoKnobs, layer_idx: int, partner: Partner | None = None):
        super().__init__()
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, ctx: BlockContext):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """c_fc -> exact (erf) GELU -> c_proj -> dropout; width D_ff = round(mlp_expansion * C) or the explicit d_ff."""

    def __init__(self, cfg: GPTConfig, knobs: NoKnobs, layer_idx: int, partner: Partner | None = None):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.mlp_width, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(cfg.mlp_width, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, ctx: BlockContext):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)
