"""Unified Reciprocal Attention, Generation 3 (mechanisms.md §6, §7, §9; §19 decision 2).

One SDPA call computes, per head and causal pair (i, j <= i),

    S[i,j] = ( w_std * <Q(i), K(j)>  +  cs * w_rec * <K_R(i), Q_R(j)> ) / sqrt(D)

The second term is the low-rank transposed score (Q_R K_R^T)^T[i,j]: the query side of
position i meets the key side of position j with the roles swapped. Two layouts (`fold`):

- `shared` (default, decision 2): Q, K, V are the baseline's full-width projections and the
  reciprocal part re-uses their first R dims:
      Qf = [Q | K[:R]],  Kf = [w_std K | cs w_rec Q[:R]]     head dim D + R, V keeps D
  Parameters = baseline attention + gates; structurally reciprocal after training too.
- `free` (upstream layout): c_attn emits Qf, Kf directly; per head the first D_std = D - R
  dims are the "standard" part and the last R the "reciprocal" part:
      S = (w_std <Qf_std, Kf_std> + cs w_rec <Qf_R, Kf_R>) / sqrt(D)
  Same cost as the baseline; nothing ties Qf_R to K after init (§6), the reciprocal
  meaning comes from `from_pretrained_qkv`.

Gates: w = softplus(u) (no clamp dead zone, §6), per head [H] or per layer (0-dim), geometric
init w_std = (D-R)/D, w_rec = R/D. Gates are applied in the forward only, on the key side
(<Q, w K> = w <Q, K>, the same scores as sqrt(w) on both sides at half the elementwise cost);
`from_pretrained_qkv` copies weights and never bakes a gate in.
Self-restart (§7): O <- (1 - a) O + a V with a = cs * clamp(rwr_alpha, 0, 0.5), rwr_alpha [H]
init 0.05. At cs = 0 the module is plain attention on the std part scaled by w_std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.config import GPTConfig
from models.context import BlockContext, Partner

FOLDS = ("shared", "free")


@dataclass(frozen=True, kw_only=True)
class Knobs:
    R: int = 4
    """Reciprocal rank: dims of the transposed low-rank score per head (§6; 2, 4, 8 in V1-V9)."""
    fold: str = "shared"
    """`shared`: reciprocal part re-uses Q[:R], K[:R] (decision 2); `free`: upstream layout."""
    per_head_gates: bool = True
    """w_std, w_rec are [H] (RATrainer/defconfig default); False: one scalar pair per layer."""
    w_std_init: float | None = None
    """Initial w_std; null = geometric (D - R) / D."""
    w_rec_init: float | None = None
    """Initial w_rec; null = geometric R / D (0.1 reproduces the pre-Nov-14 init)."""
    self_restart: bool = False
    """One-step RWR self-restart (§7, V2/V8/V10): rwr_alpha [H] init 0.05, clamp [0, 0.5]."""

    def __post_init__(self) -> None:
        if self.fold not in FOLDS:
            raise ValueError(f"fold must be one of {', '.join(FOLDS)}, got {self.fold!r}")
        if self.R < 1:
            raise ValueError(f"R must be >= 1, got {self.R}")
        for name in ("w_std_init", "w_rec_init"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0 (or null for the geometric init), got {v}")

    def widths(self, cfg: GPTConfig) -> dict[str, int]:
        D = cfg.head_dim
        if self.fold == "free":
            return {"R": self.R, "D_std": D - self.R}
        return {"R": self.R, "sdpa_head_dim": D + self.R}


def inverse_softplus(w: torch.Tensor) -> torch.Tensor:
    """u with softplus(u) == w (w = 0 gives -inf, which softplus maps back to exactly 0)."""
    w = w.double()
    u = torch.where(w > 20.0, w, torch.log(torch.expm1(w.clamp_min(1e-300))))
    return torch.where(w > 0, u, torch.full_like(w, float("-inf")))


class UnifiedReciprocalAttention(nn.Module):

    def __init__(self, cfg: GPTConfig, knobs: Knobs, layer_idx: int, partner: Partner | None = None):
        super().__init__()
        D = cfg.head_dim
        if knobs.fold == "free" and knobs.R >= D:
            raise ValueError(f"R ({knobs.R}) must be < head dim ({D}) with fold=free")
        if knobs.fold == "shared" and knobs.R > D:
            raise ValueError(f"R ({knobs.R}) must be <= head dim ({D}) with fold=shared")
        self.knobs = knobs
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd
        self.head_dim = D
        self.R = knobs.R
        self.dropout = cfg.dropout
        self.layer_idx = layer_idx
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # [Q|K|V] or [Qf|Kf|V]
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        gate_shape = (cfg.n_head,) if knobs.per_head_gates else ()
        self.w_std_raw = nn.Parameter(torch.empty(gate_shape))  # w_std = softplus(w_std_raw)
        self.w_rec_raw = nn.Parameter(torch.empty(gate_shape))  # w_rec = softplus(w_rec_raw)
        self.rwr_alpha = nn.Parameter(torch.empty(cfg.n_head)) if knobs.self_restart else None

    @torch.no_grad()
    def reset_mechanism_parameters(self):
        D, R = self.head_dim, self.R
        w_std = (D - R) / D if self.knobs.w_std_init is None else self.knobs.w_std_init
        w_rec = R / D if self.knobs.w_rec_init is None else self.knobs.w_rec_init
        self.set_gates(w_std=w_std, w_rec=w_rec)
        if self.rwr_alpha is not None:
            self.rwr_alpha.fill_(0.05)

    @torch.no_grad()
    def set_gates(self, w_std: float | None = None, w_rec: float | None = None):
        """Set the gate VALUES (softplus is inverted exactly; 0 maps to -inf)."""
        for raw, w in ((self.w_std_raw, w_std), (self.w_rec_raw, w_rec)):
            if w is not None:
                raw.copy_(inverse_softplus(torch.full(raw.shape, float(w))).to(raw.dtype))

    def gates(self):
        return F.softplus(self.w_std_raw), F.softplus(self.w_rec_raw)  # (H,) or ()

    # ------------------------------------------------------------------------------------

    def forward(self, x, ctx: BlockContext):
        B, T, C = x.size()
        H, D, R = self.n_head, self.head_dim, self.R
        cs = ctx.coupling_scale
        w_std, w_rec = self.gates()
        w_std = w_std.reshape(-1, 1, 1)  # (H or 1, 1, 1) broadcasts over (B, H, T, *)
        w_rec = w_rec.reshape(-1, 1, 1)
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        if self.knobs.fold == "shared":
            qf = torch.cat([q, k[..., :R]], dim=-1)                        # (B, H, T, D+R)
            kf = torch.cat([k * w_std, q[..., :R] * (cs * w_rec)], dim=-1)  # (B, H, T, D+R)
        else:
            # per-dim key scale [w_std]*D_std ++ [cs*w_rec]*R, per head or per layer
            n = w_std.size(0)
            s = torch.cat([w_std.view(n, 1).expand(n, D - R), (cs * w_rec).view(n, 1).expand(n, R)], dim=1)
            qf, kf = q, k * s.view(n, 1, D)                                # (B, H, T, D)
        # shared: V is zero-padded to D+R so q, k, v share a head dim and SDPA keeps its fused
        # kernels (a smaller value dim falls back to the math path: 1.18x slower on CPU)
        vf = F.pad(v, (0, qf.size(-1) - D)) if qf.size(-1) != D else v
        y = F.scaled_dot_product_attention(
            qf, kf, vf, dropout_p=self.dropout if self.training else 0.0, is_causal=True,
            scale=1.0 / math.sqrt(D),
        )[..., :D]  # (B, H, T, D)
        if self.rwr_alpha is not None and cs != 0.0:
            a = (cs * self.rwr_alpha.clamp(0.0, 0.5)).view(1, H, 1, 1)
            y = (1.0 - a) * y + a * v  # one-step random walk with restart to the token itself
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    # ------------------------------------------------------------------------------------
    # pretrained donor

    @torch.no_grad()
    def from_pretrained_qkv(self, W_q, W_k, W_v, b_q=None, b_k=None, b_v=None):
        """Load a donor attention's projections (each [E, E], out x in). Gates are NOT baked
        into the weights: the forward applies them, once.

        shared: c_attn = [W_q; W_k; W_v] exactly (nothing dropped).
        free:   per head h (rows r_h), Qf = [W_q[r_h][:D_std]; W_k[r_h][-R:]],
                Kf = [W_k[r_h][:D_std]; W_q[r_h][-R:]], V = W_v (§6); the donor's last R
                dims of Q.K are dropped from the standard part.
        """
        E, H, D, R = self.n_embd, self.n_head, self.head_dim, self.R
        for W in (W_q, W_k, W_v):
            assert W.shape == (E, E), f"expected [{E}, {E}] projections, got {tuple(W.shape)}"
        zeros = torch.zeros(E, dtype=W_q.dtype, device=W_q.device)
        b_q, b_k, b_v = (zeros if b is None else b for b in (b_q, b_k, b_v))
        if self.knobs.fold == "free":
            def fold(a, b):  # a, b: (E, ...) rows grouped by head
                a = a.reshape(H, D, *a.shape[1:])
                b = b.reshape(H, D, *b.shape[1:])
                return torch.cat([a[:, : D - R], b[:, D - R:]], dim=1).reshape(E, *a.shape[2:])
            Wq_f, Wk_f = fold(W_q, W_k), fold(W_k, W_q)
            bq_f, bk_f = fold(b_q, b_k), fold(b_k, b_q)
        else:
            Wq_f, Wk_f, bq_f, bk_f = W_q, W_k, b_q, b_k
        self.c_attn.weight.copy_(torch.cat([Wq_f, Wk_f, W_v], dim=0))
        if self.c_attn.bias is not None:
            self.c_attn.bias.copy_(torch.cat([bq_f, bk_f, b_v], dim=0))
        return self

    # ------------------------------------------------------------------------------------
    # accounting and statistics

    def mechanism_parameter_names(self) -> tuple[str, ...]:
        names = ("w_std_raw", "w_rec_raw")
        return names + (("rwr_alpha",) if self.rwr_alpha is not None else ())

    def mixing_scalars(self) -> dict[str, nn.Parameter]:
        out = {"w_std": self.w_std_raw, "w_rec": self.w_rec_raw}
        if self.rwr_alpha is not None:
            out["rwr_alpha"] = self.rwr_alpha
        return out

    @torch.no_grad()
    def get_gate_stats(self) -> dict[str, float]:
        """mean/min/max/std of w_std, w_rec (and the clamped rwr_alpha); std of a scalar is 0.0."""
        w_std, w_rec = self.gates()
        vals = {"w_std": w_std, "w_rec": w_rec}
        if self.rwr_alpha is not None:
            vals["rwr_alpha"] = self.rwr_alpha.clamp(0.0, 0.5)
        out: dict[str, float] = {}
        for name, t in vals.items():
            t = t.detach().float().reshape(-1)
            out[f"{name}_mean"] = t.mean().item()
            out[f"{name}_min"] = t.min().item()
            out[f"{name}_max"] = t.max().item()
            out[f"{name}_std"] = t.std(unbiased=False).item()
        return out

    def get_stats(self) -> dict[str, float]:
        return self.get_gate_stats()
