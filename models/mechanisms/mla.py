"""MLA latent attention with the Generation-2 reciprocal terms (mechanisms.md §2, §3, §4, §9).

- MLA (§2): keys and values live in a latent of width L shared by the heads:
  c_K = k_down(x), c_V = v_down(x) (B, T, L); each head maps its query into the latent,
  q_lat[h] = Q[h] @ q_to_latent[h] (D x L), scores S = q_lat c_K^T / sqrt(L) (scale uses L),
  values V[h] = c_V @ v_up[h] (L x D). No biases. The attention matrix is explicit (no SDPA).
- Gen-2 band RA (§3), the TRUE transpose inside a causal band (upstream bug §17 #1 fixed):
      S'[i,j] = S[i,j] + cs * ra_alpha * S[j,i]     for j in [i-W, i]
  S[j,i] = <q_lat[j], c_K[i]> with j <= i, so no future token is read. ra_alpha learnable.
- Mechanism 1, attention side (§4.1, decision 3): the previous block's MLP hands gates
  g (B, T, H) (causal prefix mean); after softmax A_h <- A_h * (1 - cs*a_g*(1 - g_h)).
- Mechanism 3, attention side (§4.3): c_K <- c_K + cs * a_a * z, z (B, T, L) from the
  previous block's MLP coupler.
- RA-CT token gating (§4.6, `models/mechanisms/ra_ct.py`), not scaled by cs.
- Exports for this block's MLP: ctx.attn_probs = A (post-gating, post-dropout, detached)
  for mechanism 2 and ctx.latent_k = c_K (detached) for mechanism 3.

At cs = 0 every reciprocal term is skipped, so the module is exactly plain MLA (§9).
The mechanism-1/3 alphas exist only in blocks that receive those signals (not block 0, and
only when the MLP config produces them): a parameter that never gets a gradient is a bug.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.config import GPTConfig
from models.context import BlockContext, Partner
from models.mechanisms.ra_ct import MODES as RA_CT_MODES
from models.mechanisms.ra_ct import RACTGate, RACTKnobs


@dataclass(frozen=True, kw_only=True)
class Knobs:
    latent_dim: int = 64
    """L: width of the shared latent keys/values (§2; the seed-000 study used 128)."""
    per_head_q_latent: bool = True
    """q_to_latent is [H, D, L]; False: one D x L map shared by the heads."""
    per_head_v_up: bool = True
    """v_up is [H, L, D]; False: one L x D map shared by the heads."""
    ra_window: int = 64
    """W: the Gen-2 RA band is j in [i-W, i]."""
    ra_alpha: float = 0.0
    """Initial Gen-2 RA weight (learnable); 0 = RA off (0.3 in RATIO, 0.5 upstream default)."""
    gate_alpha: float = 0.1
    """a_g: mechanism-1 mixing in this attention (used when the MLP has `gate`)."""
    recip_alpha_attn: float = 0.2
    """a_a: mechanism-3 MLP->attention injection (used when the MLP has `recip`)."""
    ra_ct: str | None = None
    """RA-CT statistic: topk | max | entropy | rms; null = RA-CT off."""
    ra_ct_apply: str = "output"
    """RA-CT gates the head outputs (`output`) or the attention weights (`weights`)."""
    ra_ct_k: int = 8
    ra_ct_alpha: float = 0.2
    """a_ct for ra_ct_apply=weights (a fixed float, as upstream)."""
    ra_ct_head_average: bool = False
    ra_ct_detach_stats: bool = False
    force_gates_open: bool = False
    """Every sigmoid gate := 1 and gate parameters frozen (§5): RA-CT becomes the identity."""

    def __post_init__(self) -> None:
        if self.latent_dim <= 0:
            raise ValueError(f"latent_dim must be > 0, got {self.latent_dim}")
        if self.ra_window < 0:
            raise ValueError(f"ra_window must be >= 0, got {self.ra_window}")
        if self.ra_alpha < 0:
            raise ValueError(f"ra_alpha must be >= 0 (0 = RA off), got {self.ra_alpha}")
        if self.ra_ct is not None and self.ra_ct not in RA_CT_MODES:
            raise ValueError(f"ra_ct must be one of {', '.join(RA_CT_MODES)} or null, got {self.ra_ct!r}")
        if self.ra_ct is not None:
            self.ra_ct_knobs()  # validates apply and k

    def ra_ct_knobs(self) -> RACTKnobs:
        assert self.ra_ct is not None
        return RACTKnobs(mode=self.ra_ct, apply=self.ra_ct_apply, k=self.ra_ct_k, alpha=self.ra_ct_alpha,
                         head_average=self.ra_ct_head_average, detach_stats=self.ra_ct_detach_stats)

    def widths(self, cfg: GPTConfig) -> dict[str, int]:
        return {"latent_dim": self.latent_dim}

    # cross-block signals (see models/context.py); the reciprocal MLP checks these
    def signals_produced(self) -> frozenset[str]:
        return frozenset({"attn_probs", "latent_k"})

    def signals_consumed(self) -> frozenset[str]:
        return frozenset({"head_gates", "latent_z"})


class MLAAttention(nn.Module):

    def __init__(self, cfg: GPTConfig, knobs: Knobs, layer_idx: int, partner: Partner | None = None):
        super().__init__()
        partner = partner or Partner()  # the block's MLP (models.registry.build passes it)
        E, H = cfg.n_embd, cfg.n_head
        D, L = E // H, knobs.latent_dim
        self.n_head, self.head_dim, self.latent_dim = H, D, L
        self.knobs = knobs
        self.q_proj = nn.Linear(E, E, bias=False)
        self.k_down = nn.Linear(E, L, bias=False)
        self.v_down = nn.Linear(E, L, bias=False)
        self.q_to_latent = nn.Parameter(torch.empty(H, D, L) if knobs.per_head_q_latent else torch.empty(D, L))
        self.v_up = nn.Parameter(torch.empty(H, L, D) if knobs.per_head_v_up else torch.empty(L, D))
        self.c_proj = nn.Linear(E, E, bias=False)  # GPT-2 name: gets the scaled residual init
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)

        # mixing scalars (§4.4); each exists only where its term can act
        signals = partner.produced if layer_idx > 0 else frozenset()
        self.ra_alpha = nn.Parameter(torch.empty(())) if knobs.ra_alpha > 0 else None
        self.gate_alpha = nn.Parameter(torch.empty(())) if "head_gates" in signals else None
        self.recip_alpha_attn = nn.Parameter(torch.empty(())) if "latent_z" in signals else None
        self.ra_ct = (RACTGate(H, knobs.ra_ct_knobs(), trainable=not knobs.force_gates_open)
                      if knobs.ra_ct is not None else None)
        # the attention matrix is materialised only when a term needs it (RA, RA-CT, or the
        # MLP's mechanism 2); otherwise SDPA computes the same softmax(S) V with scale 1/sqrt(L)
        self.explicit = (knobs.ra_alpha > 0 or knobs.ra_ct is not None
                         or "attn_probs" in partner.consumed)
        self._last: dict[str, torch.Tensor] = {}  # detached statistics of the last forward
        self.reset_mechanism_parameters()

    @torch.no_grad()
    def reset_mechanism_parameters(self):
        # decision 10: GPT-2 init for the latent maps too (upstream: xavier, §2)
        nn.init.normal_(self.q_to_latent, mean=0.0, std=0.02)
        nn.init.normal_(self.v_up, mean=0.0, std=0.02)
        if self.ra_alpha is not None:
            self.ra_alpha.fill_(self.knobs.ra_alpha)
        if self.gate_alpha is not None:
            self.gate_alpha.fill_(self.knobs.gate_alpha)
        if self.recip_alpha_attn is not None:
            self.recip_alpha_attn.fill_(self.knobs.recip_alpha_attn)
        if self.ra_ct is not None:
            self.ra_ct.reset_mechanism_parameters()

    def forward(self, x, ctx: BlockContext):
        B, T, C = x.size()
        H, D, L = self.n_head, self.head_dim, self.latent_dim
        cs = float(ctx.coupling_scale)
        gates_open = ctx.force_gates_open or self.knobs.force_gates_open

        q = self.q_proj(x).view(B, T, H, D)  # (B, T, H, D)
        c_k = self.k_down(x)  # (B, T, L)
        c_v = self.v_down(x)  # (B, T, L)
        z = ctx.latent_z_in
        if z is not None and self.recip_alpha_attn is not None and cs != 0.0:
            c_k = c_k + (cs * self.recip_alpha_attn) * z  # mechanism 3, MLP -> attention

        if self.knobs.per_head_q_latent:
            q_lat = torch.einsum("bthd,hdl->bhtl", q, self.q_to_latent)  # (B, H, T, L)
        else:
            q_lat = (q @ self.q_to_latent).transpose(1, 2)  # (B, H, T, L)
        if self.knobs.per_head_v_up:
            v = torch.einsum("btl,hld->bhtd", c_v, self.v_up)  # (B, H, T, D)
        else:
            v = (c_v @ self.v_up).unsqueeze(1).expand(B, H, T, D)  # (B, H, T, D), shared by the heads
        ctx.latent_k = c_k.detach()  # mechanism 3 of this block's MLP

        g = ctx.head_gates_in
        gate_rows = None  # (B, H, T, 1) mechanism 1: a per-(head, query row) factor on A
        if g is not None and self.gate_alpha is not None and cs != 0.0:
            g = g.transpose(1, 2).unsqueeze(-1)  # (B, T, H) -> (B, H, T, 1)
            gate_rows = 1.0 - (cs * self.gate_alpha) * (1.0 - g)
            if not torch.compiler.is_compiling():
                self._last["head_gate_mean"] = g.detach().mean()

        if not self.explicit:
            y = F.scaled_dot_product_attention(
                q_lat, c_k.unsqueeze(1).expand(B, H, T, L), v, is_causal=True,
                dropout_p=self.attn_dropout.p if self.training else 0.0, scale=1.0 / math.sqrt(L),
            )  # (B, H, T, D)
            if gate_rows is not None:
                y = y * gate_rows  # (A * f_row) V == f_row * (A V)
            y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble heads side by side
            return self.resid_dropout(self.c_proj(y))

        S = (q_lat @ c_k.transpose(1, 2).unsqueeze(1)) * (1.0 / math.sqrt(L))  # (B, H, T, T)

        i = torch.arange(T, device=x.device)
        dist = i[:, None] - i[None, :]  # (T, T): i - j
        if self.ra_alpha is not None and cs != 0.0:
            band = (dist >= 0) & (dist <= self.knobs.ra_window)  # j in [i-W, i]
            S_rec = torch.where(band, S.transpose(-1, -2), torch.zeros((), dtype=S.dtype, device=S.device))
            S = S + (cs * self.ra_alpha) * S_rec  # S_rec[i,j] = S[j,i] = <q_lat[j], c_K[i]>
        S = S.masked_fill(dist < 0, float("-inf"))
        A = F.softmax(S, dim=-1)  # (B, H, T, T)

        if gate_rows is not None:
            A = A * gate_rows  # mechanism 1: A_h * (1 - cs*a_g*(1 - g_h))
        g_ct = None
        if self.ra_ct is not None and not gates_open:
            g_ct = self.ra_ct.gates(A)  # (B, H, T)
            if self.ra_ct.knobs.apply == "weights":
                A = self.ra_ct.on_weights(A, g_ct)
            if not torch.compiler.is_compiling():
                self._last["ra_ct_gate_mean"] = g_ct.detach().mean()
        A = self.attn_dropout(A)
        ctx.attn_probs = A.detach()  # mechanism 2 of this block's MLP
        y = A @ v  # (B, H, T, D)
        if g_ct is not None and self.ra_ct.knobs.apply == "output":
            y = self.ra_ct.on_output(y, g_ct)
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y))

    # ------------------------------------------------------------------------------------
    # accounting and observability

    def mechanism_parameter_names(self) -> tuple[str, ...]:
        names = [n for n in ("ra_alpha", "gate_alpha", "recip_alpha_attn") if getattr(self, n) is not None]
        if self.ra_ct is not None:
            names += ["ra_ct.scale", "ra_ct.bias"]
        return tuple(names)

    def mixing_scalars(self) -> dict[str, nn.Parameter]:
        out = {n: getattr(self, n) for n in ("ra_alpha", "gate_alpha", "recip_alpha_attn") if getattr(self, n) is not None}
        if self.ra_ct is not None:
            out["ra_ct_scale"] = self.ra_ct.scale
            out["ra_ct_bias"] = self.ra_ct.bias
        out["q_to_latent"] = self.q_to_latent
        return out

    def get_stats(self) -> dict[str, float]:
        stats = {n: float(getattr(self, n).detach()) for n in ("ra_alpha", "gate_alpha", "recip_alpha_attn")
                 if getattr(self, n) is not None}
        if self.ra_ct is not None:
            stats["ra_ct_bias_mean"] = float(self.ra_ct.bias.detach().mean())
            stats["ra_ct_scale_mean"] = float(self.ra_ct.scale.detach().mean())
        stats.update({k: float(v) for k, v in self._last.items()})
        return stats
