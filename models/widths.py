"""The matmul widths a config builds (mechanisms.md §5, §18): what `recip check` prints.

    widths(cfg) = n_embd, head_dim, D_ff (+ each slot's own: latent_dim, R_ff, D_ff_std, R,
                  gate_dim, cross_rank, kv_keep_k, kv_recency), as built at cfg's size
    misaligned(cfg) = the widths among ALIGNED that are not multiples of 64 (tensor-core
                  tiles; the RATIO widths were all chosen as multiples of 64, §5)

Each mechanism's `Knobs.widths(cfg)` reports its own; knobs without it add nothing.
"""

from __future__ import annotations

from models import registry
from models.config import GPTConfig

ALIGN = 64
ALIGNED = ("n_embd", "D_ff", "D_ff_std", "R_ff", "latent_dim", "cross_rank")
"""Widths that size a large matmul; small ranks (R, gate_dim) and token counts are exempt."""


def widths(cfg: GPTConfig) -> dict[str, int]:
    out = {"n_embd": cfg.n_embd, "head_dim": cfg.head_dim, "D_ff": cfg.mlp_width}
    for slot, name, given in (("attn", cfg.attn, cfg.attn_knobs), ("mlp", cfg.mlp, cfg.mlp_knobs)):
        knobs = registry.make_knobs(name, slot, given)
        f = getattr(knobs, "widths", None)
        if f is not None:
            out.update(f(cfg))
    return out


def misaligned(cfg: GPTConfig) -> dict[str, int]:
    return {k: v for k, v in widths(cfg).items() if k in ALIGNED and v % ALIGN}
