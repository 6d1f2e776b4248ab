"""Generation-2 reciprocal MLP: mechanisms 1, 2, 3 around a GPT-2 MLP (mechanisms.md §4, §9).

Core: h0 = GELU(c_fc(x)) (B, T, D_ff), D_ff = round(mlp_expansion * n_embd) (or the explicit d_ff) ALWAYS (§17 #6),
y = dropout(c_proj(h)). Order inside the forward (§4): mechanism 3, then 2, then 1.

- Mechanism 3 (§4.3): (e, z) = Coupler(h, c_K) with c_K this block's detached MLA latent
  keys; h <- h + cs * a_m * e; z (B, T, L) goes to the NEXT block's attention
  (c_K <- c_K + cs * a_a * z there). Coupler modes: untied (A: L->D_ff, Bm: D_ff->L),
  tied_transpose (one W [D_ff, L]: e = c_K W^T, z = h W), per_head_scalar (untied plus one
  scalar per head on each direction; the head split is a contiguous chunking that works for
  any sizes, upstream crashed unless H divided D_ff and L, §17 #3).
- Mechanism 2 (§4.2): W = mean_h A (detached attention probs of this block), sparsified
  without grad (topk k | rms tau | none) and renormalised; h <- h + cs * a_x * cross(W h).
  `cross_rank` null = full D_ff x D_ff cross_proj (upstream); r = D_ff -> r -> D_ff (decision 4).
- Mechanism 1 (§4.1, decision 3): c = gate_proj(h); cbar[t] = mean_{s<=t} c[s] (CAUSAL prefix
  mean; `noncausal_gate` = upstream's mean over all positions, leaks the future);
  g = sigmoid(gate_to_heads(cbar)) (B, T, H), bias init 2.0 -> ctx.head_gates_out for the
  next block's attention.

Signals travel in the BlockContext of one forward (upstream stored them on the block and
crashed on the second micro-step, §17 #2). The last block produces no gates and no z (nobody
would read them), so it has no gate_proj/gate_to_heads and no z-direction coupler weights.
At cs = 0 the output is exactly the plain MLP's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from models.config import GPTConfig
from models.context import BlockContext, Partner

SPARSE_MODES = ("topk", "rms", "none")
TYING_MODES = ("untied", "tied_transpose", "per_head_scalar")


@dataclass(frozen=True, kw_only=True)
class Knobs:
    gate: bool = False
    """Mechanism 1: this MLP gates the next block's attention heads."""
    gate_dim: int = 64
    noncausal_gate: bool = False
    """Reproduction only: pool the gate over ALL positions (future leakage, §17 #12)."""
    cross: bool = False
    """Mechanism 2: cross-token aggregation with this block's attention weights."""
    cross_alpha: float = 0.3
    sparse_mode: str = "topk"
    sparse_k: int = 8
    sparse_tau: float = 0.5
    normalize: bool = True
    cross_rank: int | None = None
    """null = full D_ff x D_ff cross_proj (upstream); r = bottleneck D_ff -> r -> D_ff."""
    recip: bool = False
    """Mechanism 3: latent reciprocity with the MLA latent keys through the coupler."""
    recip_alpha_mlp: float = 0.2
    tying_mode: str = "tied_transpose"
    force_gates_open: bool = False
    """Every sigmoid gate := 1 and the gate parameters frozen (§5): mechanism 1 is the identity."""

    def __post_init__(self) -> None:
        if self.gate_dim <= 0:
            raise ValueError(f"gate_dim must be > 0, got {self.gate_dim}")
        if self.sparse_mode not in SPARSE_MODES:
            raise ValueError(f"sparse_mode must be one of {', '.join(SPARSE_MODES)}, got {self.sparse_mode!r}")
        if self.sparse_k <= 0:
            raise ValueError(f"sparse_k must be > 0, got {self.sparse_k}")
        if self.sparse_tau < 0:
            raise ValueError(f"sparse_tau must be >= 0, got {self.sparse_tau}")
        if self.cross_rank is not None and self.cross_rank <= 0:
            raise ValueError(f"cross_rank must be > 0 or null (full rank), got {self.cross_rank}")
        if self.tying_mode not in TYING_MODES:
            raise ValueError(f"tying_mode must be one of {', '.join(TYING_MODES)}, got {self.tying_mode!r}")

    def widths(self, cfg: GPTConfig) -> dict[str, int]:
        out = {"gate_dim": self.gate_dim} if self.gate else {}
        if self.cross and self.cross_rank is not None:
            out["cross_rank"] = self.cross_rank
        return out

    # cross-block signals (see models/context.py); MLA checks these
    def signals_produced(self) -> frozenset[str]:
        return frozenset({"head_gates"} if self.gate else ()) | frozenset({"latent_z"} if self.recip else ())

    def signals_consumed(self) -> frozenset[str]:
        return frozenset({"attn_probs"} if self.cross else ()) | frozenset({"latent_k"} if self.recip else ())

    def signal_needs(self) -> list[tuple[str, frozenset[str], frozenset[str]]]:
        """(what, the attention must produce, the attention must consume) per mechanism on."""
        out = []
        if self.gate:
            out.append(("gate (mechanism 1) gates the next block's attention heads",
                        frozenset(), frozenset({"head_gates"})))
        if self.cross:
            out.append(("cross (mechanism 2) reuses the attention weights",
                        frozenset({"attn_probs"}), frozenset()))
        if self.recip:
            out.append(("recip (mechanism 3) couples the MLP with the MLA latent keys",
                        frozenset({"latent_k"}), frozenset({"latent_z"})))
        return out


def _head_index(n: int, H: int) -> torch.Tensor:
    """Contiguous split of n features into H heads: feature k belongs to head floor(k*H/n)."""
    return torch.arange(n) * H // n  # (n,)


class ReciprocalCoupler(nn.Module):
    """(h, c_K) -> (e: attention->MLP (B, T, D_ff), z: MLP->attention (B, T, L) or None)."""

    def __init__(self, d_ff: int, L: int, H: int, mode: str, produce_z: bool):
        super().__init__()
        self.mode, self.n_head, self.produce_z = mode, H, produce_z
        if mode == "tied_transpose":
            self.w = nn.Parameter(torch.empty(d_ff, L))
            return
        self.a = nn.Linear(L, d_ff, bias=False)
        self.b = nn.Linear(d_ff, L, bias=False) if produce_z else None
        if mode == "per_head_scalar":
            if L < H or d_ff < H:
                raise ValueError(
                    f"tying_mode per_head_scalar splits the latent ({L}) and D_ff ({d_ff}) into "
                    f"n_head={H} chunks: both must be >= n_head (use tied_transpose or untied)")
            self.alpha_a2m = nn.Parameter(torch.empty(H))
            self.alpha_m2a = nn.Parameter(torch.empty(H)) if produce_z else None

    @torch.no_grad()
    def reset_mechanism_parameters(self):
        if self.mode == "tied_transpose":
            nn.init.normal_(self.w, mean=0.0, std=0.02)
        if self.mode == "per_head_scalar":
            self.alpha_a2m.fill_(1.0)
            if self.alpha_m2a is not None:
                self.alpha_m2a.fill_(1.0)

    def forward(self, h, c_k):
        if self.mode == "tied_transpose":
            e = c_k @ self.w.t()  # (B, T, L) @ (L, D_ff) -> (B, T, D_ff)
            z = h @ self.w if self.produce_z else None  # (B, T, D_ff) @ (D_ff, L) -> (B, T, L)
            return e, z
        e = self.a(c_k)  # (B, T, D_ff)
        z = self.b(h) if self.b is not None else None  # (B, T, L)
        if self.mode == "per_head_scalar":
            e = e * self.alpha_a2m[_head_index(e.size(-1), self.n_head).to(e.device)]
            if z is not None:
                z = z * self.alpha_m2a[_head_index(z.size(-1), self.n_head).to(z.device)]
        return e, z


class ReciprocalMLP(nn.Module):

    def __init__(self, cfg: GPTConfig, knobs: Knobs, layer_idx: int, partner: Partner | None = None):
        super().__init__()
        E, H, d_ff = cfg.n_embd, cfg.n_head, cfg.mlp_width
        self.knobs = knobs
        last = layer_idx == cfg.n_layer - 1
        # the block's attention (models.registry.build passes it, after check_signals)
        attn = (partner or Partner()).knobs
        if knobs.recip and not hasattr(attn, "latent_dim"):
            raise ValueError("recip (mechanism 3) sizes its coupler by the attention's latent_dim: "
                             "build through models.registry (attention 'mla')")

        self.c_fc = nn.Linear(E, d_ff, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(d_ff, E, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

        self.gate_proj = self.gate_to_heads = None
        if knobs.gate and not last:
            self.gate_proj = nn.Linear(d_ff, knobs.gate_dim, bias=True)
            self.gate_to_heads = nn.Linear(knobs.gate_dim, H, bias=True)
            if knobs.force_gates_open:
                for p in (*self.gate_proj.parameters(), *self.gate_to_heads.parameters()):
                    p.requires_grad_(False)
        self.cross_proj = self.cross_down = self.cross_up = self.cross_alpha = None
        if knobs.cross:
            if knobs.cross_rank is None:
                self.cross_proj = nn.Linear(d_ff, d_ff, bias=False)
            else:
                self.cross_down = nn.Linear(d_ff, knobs.cross_rank, bias=False)
                self.cross_up = nn.Linear(knobs.cross_rank, d_ff, bias=False)
            self.cross_alpha = nn.Parameter(torch.empty(()))
        self.coupler = self.recip_alpha_mlp = None
        if knobs.recip:
            self.coupler = ReciprocalCoupler(d_ff, attn.latent_dim, H, knobs.tying_mode, produce_z=not last)
            self.recip_alpha_mlp = nn.Parameter(torch.empty(()))
        self._last: dict[str, torch.Tensor] = {}
        self.reset_mechanism_parameters()

    @torch.no_grad()
    def reset_mechanism_parameters(self):
        if self.gate_to_heads is not None:
            self.gate_to_heads.bias.fill_(2.0)  # sigmoid(2) = 0.881: gates start mostly open
        if self.cross_alpha is not None:
            self.cross_alpha.fill_(self.knobs.cross_alpha)
        if self.recip_alpha_mlp is not None:
            self.recip_alpha_mlp.fill_(self.knobs.recip_alpha_mlp)
        if self.coupler is not None:
            self.coupler.reset_mechanism_parameters()

    def forward(self, x, ctx: BlockContext):
        cs = float(ctx.coupling_scale)
        h = self.gelu(self.c_fc(x))  # (B, T, D_ff)

        if self.coupler is not None and ctx.latent_k is not None:
            e, z = self.coupler(h, ctx.latent_k)  # (B, T, D_ff), (B, T, L) | None
            if cs != 0.0:
                h = h + (cs * self.recip_alpha_mlp) * e  # mechanism 3, attention -> MLP
            ctx.latent_z_out = z
        if self.cross_alpha is not None and ctx.attn_probs is not None and cs != 0.0:
            W = self.routing(ctx.attn_probs)  # (B, T, T), no grad
            C = W @ h  # (B, T, D_ff)
            C = self.cross_proj(C) if self.cross_proj is not None else self.cross_up(self.cross_down(C))
            h = h + (cs * self.cross_alpha) * C  # mechanism 2
        if self.gate_proj is not None and not (ctx.force_gates_open or self.knobs.force_gates_open):
            ctx.head_gates_out = self.head_gates(h)  # (B, T, H) mechanism 1, for the next block

        return self.dropout(self.c_proj(h))  # (B, T, C)

    @torch.no_grad()
    def routing(self, A):
        """Detached attention probs A (B, H, T, T) -> sparsified row weights (B, T, T)."""
        W = A.mean(dim=1)  # (B, T, T) head average
        k = self.knobs
        if k.sparse_mode == "topk" and k.sparse_k < W.size(-1):
            vals, idx = W.topk(k.sparse_k, dim=-1)
            W = torch.zeros_like(W).scatter_(-1, idx, vals)
        elif k.sparse_mode == "rms":
            thr = k.sparse_tau * W.pow(2).mean(-1, keepdim=True).sqrt()  # (B, T, 1)
            W = W * (W >= thr)
        if k.normalize:
            W = W / W.sum(-1, keepdim=True).clamp_min(1e-8)
        return W

    def head_gates(self, h):
        c = self.gate_proj(h)  # (B, T, gate_dim)
        if self.knobs.noncausal_gate:
            cbar = c.mean(dim=1, keepdim=True).expand_as(c)  # upstream: mean over ALL positions
        else:
            dt = torch.promote_types(c.dtype, torch.float32)  # >= float32; float64 stays exact
            n = torch.arange(1, c.size(1) + 1, device=c.device, dtype=dt)[:, None]  # (T, 1)
            cbar = (c.to(dt).cumsum(dim=1) / n).to(c.dtype)  # (B, T, gate_dim) causal prefix mean
        g = torch.sigmoid(self.gate_to_heads(cbar))  # (B, T, H)
        if not torch.compiler.is_compiling():
            self._last["head_gate_mean"] = g.detach().mean()
        return g

    # ------------------------------------------------------------------------------------
    # accounting and observability

    def mechanism_parameter_names(self) -> tuple[str, ...]:
        mech = ("gate_proj", "gate_to_heads", "cross_proj", "cross_down", "cross_up", "cross_alpha",
                "coupler", "recip_alpha_mlp")
        return tuple(n for n, _ in self.named_parameters() if n.split(".")[0] in mech)

    def mixing_scalars(self) -> dict[str, nn.Parameter]:
        out = {n: getattr(self, n) for n in ("cross_alpha", "recip_alpha_mlp") if getattr(self, n) is not None}
        if self.gate_proj is not None:
            out["gate_proj"] = self.gate_proj.weight
            out["gate_to_heads"] = self.gate_to_heads.weight
        return out

    def get_stats(self) -> dict[str, float]:
        stats = {n: float(getattr(self, n).detach()) for n in ("cross_alpha", "recip_alpha_mlp")
                 if getattr(self, n) is not None}
        if self.gate_to_heads is not None:
            stats["gate_bias_mean"] = float(self.gate_to_heads.bias.detach().mean())
        stats.update({k: float(v) for k, v in self._last.items()})
        return stats
