"""Reciprocal MLP, Generation 3 (mechanisms.md §8.1-8.3, §9; §19 decisions 5, 10).

D_ff = round(mlp_expansion * n_embd) (or the explicit d_ff) = D_ff_std + R_ff always (the expansion is honoured, §17 #6).
One c_fc (E -> D_ff) holds [up_std; up_low] and one c_proj (D_ff -> E) is `down`, so the
GPT-2 names and init apply unchanged (decision 10) and the folded form costs what the
baseline costs:

    pre   = c_fc(u)                                    (B, T, D_ff)   u = LN2(x)
    pre_R += cs * attn_scale * up_low(r)               only with injection (below)
    h_std = GELU(pre_std)                              (B, T, D_ff_std)
    h_low = GELU(pre_R)                                (B, T, R_ff)
    h_low = mixer(h_low)                               optional R_ff x R_ff (V4, V6)
    h_low = g * h_low                                  gate_mode: scalar g = gate_alpha (init 0.1),
                                                       token g(t) = sigmoid(Linear(E,1)(u_t)) (init 0.1)
    y = down([w_std h_std | cs w_rec h_low])           gates scale down's columns

Injection (`inject`), since up_low is linear up_low(u + a r) = up_low(u) + a W_low r:
- `none`: folded R-MLP (§8.1, V3-V6).
- `attn`: attention-injected R-MLP (§8.2): r = this block's attention output ctx.attn_out.
- `prev_attn`: the seed-003 variant (§8.3, decision 5): r = the previous block's attention
  output ctx.prev_attn_out (block 0 has none: folded form, no attn_scale). `w_rec_frozen`
  keeps w_rec at its init (V17); learned = V18.
`tie_to_attn_proj` (§8.2): no up_low weight; the low branch uses the first R_ff rows of THIS
block's attention c_proj weight (shared parameter; the Block binds it via `bind_attention`).
Geometric gate init w_std = D_ff_std/D_ff, w_rec = R_ff/D_ff; gates are plain scalars
(no clamp, so no dead zone). cs multiplies the w_rec contribution and attn_scale (§9):
at cs = 0 the module is the std branch alone, w_std * down_std(GELU(up_std(u))).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.config import GPTConfig
from models.context import BlockContext, Partner

GATE_MODES = ("none", "scalar", "token")
INJECT = ("none", "attn", "prev_attn")


@dataclass(frozen=True, kw_only=True)
class Knobs:
    R_ff: int = 64
    """Width of the reciprocal branch; D_ff_std = D_ff - R_ff (§8.1; 64 ... 1920 in the studies)."""
    R_ff_frac: float | None = None
    """When given, replaces R_ff: R_ff = round(frac * D_ff), so one spec builds at every preset
    (0.375 is the 1152/3072 split at GPT-2 size and 192/512 at `tiny`)."""
    use_mixer: bool = False
    """Learned R_ff x R_ff mixer after the low branch's GELU (V4, V6); init identity."""
    gate_mode: str = "none"
    """`scalar`: one learnable gate_alpha (upstream "gates", V5/V6); `token`: a real per-token
    gate sigmoid(Linear(E,1)(u)); both start at 0.1."""
    inject: str = "none"
    """Input of the low branch: `none` (folded), `attn` (this block's attention output, §8.2),
    `prev_attn` (previous block's attention output, seed-003 variant §8.3)."""
    attn_scale_init: float = 1.0
    """Initial alpha_att (learnable) for inject=attn|prev_attn."""
    tie_to_attn_proj: bool = False
    """Low branch weight = first R_ff rows of this block's attention c_proj weight (§8.2)."""
    w_std_init: float | None = None
    """Initial w_std; null = geometric D_ff_std / D_ff."""
    w_rec_init: float | None = None
    """Initial w_rec; null = geometric R_ff / D_ff."""
    w_rec_frozen: bool = False
    """w_rec fixed at its init (requires_grad False): the seed-003 V17; False = V18."""

    def __post_init__(self) -> None:
        if self.R_ff <= 0:
            raise ValueError(f"R_ff must be > 0, got {self.R_ff}")
        if self.R_ff_frac is not None and not 0.0 < self.R_ff_frac < 1.0:
            raise ValueError(f"R_ff_frac must be in (0, 1), got {self.R_ff_frac}")
        if self.gate_mode not in GATE_MODES:
            raise ValueError(f"gate_mode must be one of {', '.join(GATE_MODES)}, got {self.gate_mode!r}")
        if self.inject not in INJECT:
            raise ValueError(f"inject must be one of {', '.join(INJECT)}, got {self.inject!r}")

    def width(self, d_ff: int) -> int:
        """R_ff for an MLP of width d_ff."""
        if self.R_ff_frac is not None:
            return max(1, round(self.R_ff_frac * d_ff))
        return self.R_ff

    def widths(self, cfg: GPTConfig) -> dict[str, int]:
        R = self.width(cfg.mlp_width)
        return {"R_ff": R, "D_ff_std": cfg.mlp_width - R}


class ReciprocalMLP(nn.Module):

    def __init__(self, cfg: GPTConfig, knobs: Knobs, layer_idx: int, partner: Partner | None = None):
        super().__init__()
        D_ff = cfg.mlp_width
        R = knobs.width(D_ff)
        if not 0 < R < D_ff:
            raise ValueError(f"R_ff ({R}) must be in (0, D_ff = {D_ff}) (D_ff = round(mlp_expansion * n_embd) (or the explicit d_ff))")
        if knobs.tie_to_attn_proj and R > cfg.n_embd:
            raise ValueError(f"tie_to_attn_proj needs R_ff ({R}) <= n_embd ({cfg.n_embd})")
        self.knobs = knobs
        self.layer_idx = layer_idx
        self.d_ff, self.R_ff, self.d_std = D_ff, R, D_ff - R
        tied = knobs.tie_to_attn_proj
        # c_fc = [up_std; up_low] (tied: up_std only, the low weight lives in the attention)
        self.c_fc = nn.Linear(cfg.n_embd, self.d_std if tied else D_ff, bias=cfg.bias)
        self.low_bias = nn.Parameter(torch.zeros(R)) if (tied and cfg.bias) else None
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(D_ff, cfg.n_embd, bias=cfg.bias)  # down
        self.dropout = nn.Dropout(cfg.dropout)
        self.w_std = nn.Parameter(torch.empty(()))
        self.w_rec = nn.Parameter(torch.empty(()), requires_grad=not knobs.w_rec_frozen)
        self.mixer = nn.Linear(R, R, bias=False) if knobs.use_mixer else None
        self.gate_alpha = nn.Parameter(torch.empty(())) if knobs.gate_mode == "scalar" else None
        self.gate_proj = nn.Linear(cfg.n_embd, 1, bias=True) if knobs.gate_mode == "token" else None
        # block 0 has no previous attention: no attn_scale there (a parameter must act)
        reads = knobs.inject == "attn" or (knobs.inject == "prev_attn" and layer_idx > 0)
        self.attn_scale = nn.Parameter(torch.empty(())) if reads else None
        self._attn = None  # the Block's attention module for tie_to_attn_proj (not a submodule)

    def bind_attention(self, attn: nn.Module):
        """Called by the Block: remember this block's attention (for tie_to_attn_proj) without
        registering it as a submodule, so its parameters are owned, counted and saved once."""
        if self.knobs.tie_to_attn_proj:
            W = attn.c_proj.weight
            assert W.shape[0] >= self.R_ff and W.shape[1] == self.c_fc.in_features, \
                f"tie_to_attn_proj needs an attention c_proj of shape [>= {self.R_ff}, E], got {tuple(W.shape)}"
            object.__setattr__(self, "_attn", attn)

    @torch.no_grad()
    def reset_mechanism_parameters(self):
        k = self.knobs
        self.w_std.fill_(self.d_std / self.d_ff if k.w_std_init is None else k.w_std_init)
        self.w_rec.fill_(self.R_ff / self.d_ff if k.w_rec_init is None else k.w_rec_init)
        if self.mixer is not None:
            # identity: the mixer starts as a no-op on the low branch, then learns
            self.mixer.weight.copy_(torch.eye(self.R_ff))
        if self.gate_alpha is not None:
            self.gate_alpha.fill_(0.1)
        if self.gate_proj is not None:
            # g(t) = sigmoid(w.u_t + b) = 0.1 exactly at init, input-dependent once w moves
            self.gate_proj.weight.zero_()
            self.gate_proj.bias.fill_(math.log(0.1 / 0.9))
        if self.attn_scale is not None:
            self.attn_scale.fill_(k.attn_scale_init)
        if self.low_bias is not None:
            self.low_bias.zero_()

    # ------------------------------------------------------------------------------------

    def _low_weight(self):
        if self.knobs.tie_to_attn_proj:
            assert self._attn is not None, "tie_to_attn_proj: the Block must call bind_attention(attn)"
            return self._attn.c_proj.weight[: self.R_ff]  # (R_ff, E), shared with the attention
        return self.c_fc.weight[self.d_std:]               # (R_ff, E)

    def forward(self, x, ctx: BlockContext):
        cs = ctx.coupling_scale
        pre = self.c_fc(x)  # (B, T, D_ff) or, tied, (B, T, D_ff_std)
        if self.knobs.tie_to_attn_proj:
            low = F.linear(x, self._low_weight(), self.low_bias)  # (B, T, R_ff)
            pre = torch.cat([pre, low], dim=-1)                    # (B, T, D_ff)
        r = None
        if self.knobs.inject == "attn":
            r = ctx.attn_out
            assert r is not None, "inject=attn needs ctx.attn_out (set by the Block)"
        elif self.attn_scale is not None:  # prev_attn, blocks 1..L-1
            r = ctx.prev_attn_out
            assert r is not None, "inject=prev_attn needs ctx.prev_attn_out (the previous block's attention)"
        if r is not None and cs != 0.0:
            inj = F.linear(r, self._low_weight()) * (cs * self.attn_scale)  # (B, T, R_ff)
            pre = torch.cat([pre[..., : self.d_std], pre[..., self.d_std:] + inj], dim=-1)
        h = self.gelu(pre)  # (B, T, D_ff)
        w_low = cs * self.w_rec
        if self.mixer is not None or self.gate_proj is not None:
            h_std, h_low = h.split([self.d_std, self.R_ff], dim=-1)
            if self.mixer is not None:
                h_low = self.mixer(h_low)  # (B, T, R_ff)
            if self.gate_proj is not None:
                h_low = h_low * torch.sigmoid(self.gate_proj(x))  # (B, T, R_ff) * (B, T, 1)
            h = torch.cat([h_std, h_low], dim=-1)  # (B, T, D_ff)
        if self.gate_alpha is not None:
            w_low = w_low * self.gate_alpha
        # gates scale down's columns: [w_std]*D_ff_std ++ [cs*w_rec*g]*R_ff, an (E x D_ff) op
        col = torch.cat([self.w_std.expand(self.d_std), w_low.expand(self.R_ff)])  # (D_ff,)
        y = F.linear(h, self.c_proj.weight * col, self.c_proj.bias)  # (B, T, C)
        return self.dropout(y)

    # ------------------------------------------------------------------------------------
    # accounting and statistics

    def mechanism_parameter_names(self) -> tuple[str, ...]:
        names = ["w_std", "w_rec"]
        if self.mixer is not None:
            names.append("mixer.weight")
        if self.gate_alpha is not None:
            names.append("gate_alpha")
        if self.gate_proj is not None:
            names += ["gate_proj.weight", "gate_proj.bias"]
        if self.attn_scale is not None:
            names.append("attn_scale")
        return tuple(names)

    def mixing_scalars(self) -> dict[str, nn.Parameter]:
        out = {"w_std": self.w_std}
        if self.w_rec.requires_grad:
            out["w_rec"] = self.w_rec
        if self.gate_alpha is not None:
            out["gate_alpha"] = self.gate_alpha
        if self.attn_scale is not None:
            out["attn_scale"] = self.attn_scale
        return out

    @torch.no_grad()
    def get_gate_stats(self) -> dict[str, float]:
        out = {"w_std": self.w_std.item(), "w_rec": self.w_rec.item()}
        if self.gate_alpha is not None:
            out["gate_alpha"] = self.gate_alpha.item()
        if self.gate_proj is not None:
            out["gate_token_bias"] = torch.sigmoid(self.gate_proj.bias).item()
        if self.attn_scale is not None:
            out["attn_scale"] = self.attn_scale.item()
        return out

    def get_stats(self) -> dict[str, float]:
        return self.get_gate_stats()
