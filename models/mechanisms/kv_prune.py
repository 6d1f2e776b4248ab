"""KV-cache pruning as causal heavy-hitter eviction (mechanisms.md §10; §19 decisions 6, 7, 11).

GPT-2 attention (same parameters and init as the baseline) in which query i only sees the
keys an inference cache of k tokens holds (decision 7, corrected 2026-12-04), then
    y_i = softmax over the kept keys of q_i.k_j / sqrt(D), times V       (renormalised)
Policies (`policy`):
  `h2o` (default): the exact token-by-token heavy-hitter cache (models/mechanisms/h2o.py):
      the last r = min(recency, k) keys always kept, the others ranked by the attention mass
      the cache itself computed for earlier queries, an evicted key gone for good.
  `oracle` (an approximation, the earlier rule): query i keeps the last r positions and the
      top (k - r) earlier keys by the mass M[i, j] = sum_{i' < i} A[i', j] of the FULL causal
      softmax A, re-ranked at every query (it can re-admit a key a cache would have evicted
      and ranks with mass over keys a cache no longer holds).
Both are causal: the kept set of query i depends on queries < i only, the softmax runs over
keys <= i (the upstream forward had no causal mask at all, §17 #5). The selection runs
without gradient; the attention over the kept set is differentiable.
k = `k`, or int(keep_ratio * T); r = `recency`, or round(recency_frac * T) when given (so a
spec keeps heavy hitters at every preset; recency >= k is a pure sliding window, which
`recip check` warns about).
Modes (§10): `v_only` (upstream default) caches every K and only the kept V's; `kv` caches
both for the kept tokens only. Under `oracle` they give the same outputs; under `h2o` they
differ in the mass the cache accumulates (v_only has every K, so it scores with the full
softmax; kv with the softmax over its kept keys). The implied inference cache is reported by
`get_stats` (bf16 bytes per sequence of block_size).
Learned keep ratio (decision 6): ratio = sigmoid(logit), init keep_ratio; the hard mask is the
policy's kept set at k = int(ratio T), and a soft mask sigmoid((ratio T - r - rank - 1/2)
/ (tau T)) carries the gradient to the ratio (straight-through: forward = hard mask; rank =
the oracle's rank of the key among query i's candidates, a surrogate under h2o). The cost
cost * ratio / n_layer is added to the training loss through ctx.add_aux_loss, so the LM
loss (pushing the ratio up) meets a price for memory.
KVSplice (`kvsplice: {k: 32}`, §11, `models/mechanisms/kvsplice.py`): per-layer V geometry
fitted on the trained model by `post_train`, which then evaluates val loss with a
compress -> decompress round trip on the V path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.config import GPTConfig
from models.context import BlockContext, Partner
from models.mechanisms.h2o import h2o_keep
from models.mechanisms.kvsplice import KVSplice, SpliceKnobs

MODES = ("v_only", "kv")
POLICIES = ("h2o", "oracle")
CACHE_DTYPE_BYTES = 2  # bf16 inference cache


@dataclass(frozen=True, kw_only=True)
class Knobs:
    POST_TRAIN: ClassVar[frozenset[str]] = frozenset({"kvsplice"})
    """Knobs that act only after training (post_train), invisible to a training forward."""

    k: int | None = None
    """Cache size in tokens (fixed k, e.g. 391 at T = 1024); null = int(keep_ratio * T)."""
    keep_ratio: float = 0.382
    """Fraction of the sequence kept when k is null (1/(1+phi) = 0.382 upstream)."""
    recency: int = 64
    """The last `recency` positions are always kept (clamped to k); >= 1 keeps the token itself."""
    recency_frac: float | None = None
    """When given, replaces recency: round(recency_frac * T), at least 1 (0.0625 = 64/1024),
    so heavy hitters still act at small presets."""
    policy: str = "h2o"
    """`h2o`: the exact token-by-token heavy-hitter cache; `oracle`: re-rank by the full
    attention mass at every query (the earlier approximation)."""
    mode: str = "v_only"
    """`v_only`: every K cached, V pruned; `kv`: both pruned. Same outputs, different cache bytes."""
    learned: bool = False
    """Learn the keep ratio (sigmoid(logit), init keep_ratio) with a straight-through soft mask."""
    cost: float = 0.01
    """lambda: the training loss gets lambda * ratio (mean over layers) when learned."""
    tau: float = 0.05
    """Soft-mask temperature of the learned ratio, as a fraction of T."""
    kvsplice: Any = None
    """KVSplice knobs (dict: k, knots, epochs, lr, weight_decay, calib_batches, samples,
    eval_batches); null = off. Fitted after training (post_train)."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.recency_frac is not None and not 0.0 < self.recency_frac <= 1.0:
            raise ValueError(f"recency_frac must be in (0, 1] or null, got {self.recency_frac}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.k is not None and self.k < 1:
            raise ValueError(f"k must be >= 1 (or null to use keep_ratio), got {self.k}")
        if not 0.0 < self.keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.recency < 1:
            raise ValueError(f"recency must be >= 1 (the current token is always cached), got {self.recency}")
        if self.learned and self.k is not None:
            raise ValueError("learned keep ratio starts from keep_ratio: set k to null")
        if self.learned and not self.keep_ratio < 1.0:
            raise ValueError("learned keep ratio needs keep_ratio < 1 (sigmoid init)")
        if self.cost < 0 or self.tau <= 0:
            raise ValueError(f"cost must be >= 0 and tau > 0, got {self.cost}, {self.tau}")
        if isinstance(self.kvsplice, dict):
            known = [f.name for f in fields(SpliceKnobs)]
            unknown = sorted(set(self.kvsplice) - set(known))
            if unknown:
                raise ValueError(f"unknown kvsplice knob {unknown[0]!r} (known: {', '.join(known)})")
            object.__setattr__(self, "kvsplice", SpliceKnobs(**self.kvsplice))
        elif self.kvsplice is not None and not isinstance(self.kvsplice, SpliceKnobs):
            raise ValueError(f"kvsplice must be a mapping of knobs or null, got {self.kvsplice!r}")


    def recency_at(self, T: int) -> int:
        """The recency window r before clamping to k, at sequence length T."""
        if self.recency_frac is not None:
            return max(1, round(self.recency_frac * T))
        return self.recency

    def keep_at(self, T: int) -> int:
        """k at sequence length T for a fixed ratio (the learned ratio starts here)."""
        return min(self.k, T) if self.k is not None else max(1, min(T, int(self.keep_ratio * T)))

    def widths(self, cfg: GPTConfig) -> dict[str, int]:
        T = cfg.block_size
        return {"kv_keep_k": self.keep_at(T), "kv_recency": min(self.recency_at(T), self.keep_at(T))}

    def warnings(self, cfg: GPTConfig) -> list[str]:
        T = cfg.block_size
        k, r = self.keep_at(T), self.recency_at(T)
        if k < T and r >= k:
            return [f"kv_prune at T={T} keeps k={k} <= recency {r}: a pure sliding window, "
                    f"heavy-hitter selection never acts (set recency_frac, e.g. 0.0625)"]
        return []


def _scores(q, k):
    """q k^T / sqrt(D) for the no-grad selection, in at least float32 (outside autocast)."""
    dt = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(device_type=q.device.type, enabled=False):
        return (q.to(dt) @ k.to(dt).transpose(-2, -1)) / math.sqrt(q.size(-1))


def heavy_hitter_keep(mass, k: int, recency: int):
    """`oracle` kept-key mask (..., T, T) bool for mass M[..., i, j] from queries < i."""
    T = mass.size(-1)
    i = torch.arange(T, device=mass.device).view(T, 1)
    j = torch.arange(T, device=mass.device).view(1, T)
    r = min(recency, k)
    keep = ((j <= i) & (j > i - r)).expand(mass.shape)  # recency window, incl. the diagonal
    h = min(k - r, T)
    if h <= 0:
        return keep.clone()
    cand = j <= i - r                                   # earlier keys competing for h slots
    vals, idx = mass.masked_fill(~cand, float("-inf")).topk(h, dim=-1)  # (..., T, h)
    heavy = torch.zeros(mass.shape, dtype=torch.bool, device=mass.device)
    heavy.scatter_(-1, idx, torch.isfinite(vals))       # rows with < h candidates keep them all
    return keep | heavy


class KVPrunedAttention(nn.Module):

    def __init__(self, cfg: GPTConfig, knobs: Knobs, layer_idx: int, partner: Partner | None = None):
        super().__init__()
        self.knobs = knobs
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd
        self.n_layer = cfg.n_layer
        self.block_size = cfg.block_size
        self.dropout = cfg.dropout
        self.layer_idx = layer_idx
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.ratio_logit = nn.Parameter(torch.empty(())) if knobs.learned else None
        self.splice = KVSplice(cfg.head_dim, knobs.kvsplice) if knobs.kvsplice is not None else None
        self.splice_active = False  # set by post_train: round trip on the V path
        self._collect: list | None = None  # V samples during calibration

    @torch.no_grad()
    def reset_mechanism_parameters(self):
        if self.ratio_logit is not None:
            p = self.knobs.keep_ratio
            self.ratio_logit.fill_(math.log(p / (1.0 - p)))

    def keep_ratio(self):
        if self.ratio_logit is not None:
            return torch.sigmoid(self.ratio_logit)
        return None

    def keep_count(self, T: int) -> int:
        """Cache size k for a sequence of length T."""
        if self.ratio_logit is None:
            return self.knobs.keep_at(T)
        ratio = torch.sigmoid(self.ratio_logit).item()
        return max(1, min(T, int(ratio * T)))

    # ------------------------------------------------------------------------------------

    def forward(self, x, ctx: BlockContext):
        B, T, C = x.size()
        H, D = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        if self._collect is not None:
            self._collect.append(v.detach().reshape(-1, D).float().cpu())
        if self.splice_active:
            v = self.splice.roundtrip(v)  # compress -> decompress, what the cache would return
        n_keep = self.keep_count(T)
        scale = 1.0 / math.sqrt(D)
        dropout_p = self.dropout if self.training else 0.0
        if self.ratio_logit is None:
            if n_keep >= T:  # nothing to evict at this length
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            else:
                keep = self.kept_mask(q, k, n_keep)  # (B, H, T, T) bool
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p)
        else:
            y = self._learned_attention(q, k, v, ctx, scale, dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    @torch.no_grad()
    def attention_mass(self, q, k):
        """M[b, h, i, j] = sum_{i' < i} A[b, h, i', j], A the full causal softmax (no grad)."""
        T = q.size(-2)
        att = _scores(q, k)  # (B, H, T, T), float32 or float64
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        A = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        return A.cumsum(dim=-2) - A  # exclusive prefix over queries: (B, H, T, T)

    @torch.no_grad()
    def kept_mask(self, q, k, n_keep: int):
        """(B, H, T, T) bool: the keys each query attends to under the policy."""
        r = self.knobs.recency_at(q.size(-2))
        if self.knobs.policy == "oracle":
            return heavy_hitter_keep(self.attention_mass(q, k), n_keep, r)
        scores = _scores(q, k)  # (B, H, T, T)
        return h2o_keep(scores, n_keep, r, self.knobs.mode)

    def _learned_attention(self, q, k, v, ctx: BlockContext, scale: float, dropout_p: float):
        T = q.size(-2)
        ratio = torch.sigmoid(self.ratio_logit)
        n_keep = max(1, min(T, int(ratio.item() * T)))
        r = min(self.knobs.recency_at(T), n_keep)
        with torch.no_grad():
            mass = self.attention_mass(q, k)
            i = torch.arange(T, device=q.device).view(T, 1)
            j = torch.arange(T, device=q.device).view(1, T)
            recent = (j <= i) & (j > i - r)
            cand = j <= i - r
            order = mass.masked_fill(~cand, float("-inf")).argsort(dim=-1, descending=True, stable=True)
            rank = order.argsort(dim=-1).to(q.dtype)  # (B, H, T, T) 0 = heaviest candidate
            if self.knobs.policy == "oracle":
                hard = recent | (cand & (rank < n_keep - r))
            else:
                hard = self.kept_mask(q, k, n_keep) if n_keep < T else (j <= i).expand(mass.shape)
        soft = torch.sigmoid((ratio * T - r - rank - 0.5) / (self.knobs.tau * T)) * cand  # (B, H, T, T)
        m = hard.to(soft.dtype) + (soft - soft.detach())  # forward: hard mask; backward: soft
        att = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        P = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        P = P * m.to(P.dtype)
        P = P / P.sum(dim=-1, keepdim=True).clamp_min(1e-30)  # renormalise over the kept keys
        P = F.dropout(P, p=dropout_p, training=dropout_p > 0)
        if self.training and self.knobs.cost > 0:
            ctx.add_aux_loss(self.knobs.cost * ratio / self.n_layer)
        return P @ v  # (B, H, T, D)

    # ------------------------------------------------------------------------------------
    # accounting and statistics

    def mechanism_parameter_names(self) -> tuple[str, ...]:
        return ("ratio_logit",) if self.ratio_logit is not None else ()

    def mixing_scalars(self) -> dict[str, nn.Parameter]:
        return {"keep_ratio_logit": self.ratio_logit} if self.ratio_logit is not None else {}

    @torch.no_grad()
    def keep_ratio_grads(self) -> tuple[float, float, float] | None:
        """(ratio, d LM loss / d logit, d cost / d logit) of the learned ratio, from the grad
        of the last backward; the cost part is analytic (cost / n_layer * s (1 - s)), the LM
        part the rest. None without a learned ratio or a gradient."""
        if self.ratio_logit is None or self.ratio_logit.grad is None:
            return None
        s = torch.sigmoid(self.ratio_logit).item()
        cost = self.knobs.cost / self.n_layer * s * (1.0 - s)
        total = self.ratio_logit.grad.item()
        return s, total - cost, cost

    def cache_bytes(self, S: int | None = None) -> dict[str, float]:
        """Implied inference KV cache of this layer for one sequence of S (block_size) tokens."""
        S = self.block_size if S is None else S
        C, H = self.n_embd, self.n_head
        n = self.keep_count(S)
        k_bytes = (S if self.knobs.mode == "v_only" else n) * C * CACHE_DTYPE_BYTES
        v_width = C if self.splice is None else H * self.splice.knobs.k  # spliced V: k dims per head
        v_bytes = n * v_width * CACHE_DTYPE_BYTES
        full = 2 * S * C * CACHE_DTYPE_BYTES
        return {"keep_k": float(n), "keep_ratio": n / S, "kv_cache_bytes": float(k_bytes + v_bytes),
                "kv_cache_fraction": (k_bytes + v_bytes) / full}

    @torch.no_grad()
    def get_stats(self) -> dict[str, float]:
        out = self.cache_bytes()
        n, S = int(out["keep_k"]), self.block_size
        out["sliding_window"] = 1.0 if n < S and self.knobs.recency_at(S) >= n else 0.0  # heavy hitters never act
        if self.ratio_logit is not None:
            out["learned_ratio"] = torch.sigmoid(self.ratio_logit).item()
        return out

    # ------------------------------------------------------------------------------------
    # KVSplice calibration on the trained model (decision 11)

    @torch.no_grad()
    def post_train(self, model, get_batch, estimate_loss) -> dict[str, float]:
        """Fit every layer's KVSplice on V vectors of the trained `model`, then evaluate.

        Called by the trainer on every module that has it, after the final eval; the first
        spliced layer does the work for all of them, the others return {}.
        get_batch(split) -> (x, y) on the model's device; estimate_loss() -> the val loss
        (a float, or a dict with "val"), as the trainer computes it for `val_loss`.
        Returns kvsplice/{val_loss, val_loss_delta, mse, pca_mse} (+ per layer /L<i>).
        """
        mods = [m for m in model.modules() if isinstance(m, KVPrunedAttention) and m.splice is not None]
        if not mods or mods[0] is not self:
            return {}
        kn = self.splice.knobs
        was_training = model.training
        model.eval()
        gen = torch.Generator().manual_seed(1234)
        try:
            # 1. collect V on training batches, per layer, capped at `samples` vectors
            per_call = math.ceil(kn.samples / kn.calib_batches)
            for m in mods:
                m._collect = []
            for _ in range(kn.calib_batches):
                x, _y = get_batch("train")
                model(x)
                for m in mods:  # subsample the vectors of this call
                    Vb = m._collect.pop()
                    sel = torch.randperm(Vb.size(0), generator=gen)[:per_call]
                    m._collect.append(Vb[sel])
            out: dict[str, float] = {}
            mses, pca_mses = [], []
            for m in mods:
                X = torch.cat(m._collect)
                m._collect = None
                X = X[torch.randperm(X.size(0), generator=gen)]
                n_hold = max(1, X.size(0) // 10)
                X_hold, X_fit = X[:n_hold], X[n_hold:]
                m.splice.fit(X_fit, generator=gen)
                ev = m.splice.evaluate(X_hold, X_fit)
                out[f"kvsplice/mse/L{m.layer_idx}"] = ev["mse"]
                out[f"kvsplice/pca_mse/L{m.layer_idx}"] = ev["pca_mse"]
                mses.append(ev["mse"])
                pca_mses.append(ev["pca_mse"])
            out["kvsplice/mse"] = sum(mses) / len(mses)
            out["kvsplice/pca_mse"] = sum(pca_mses) / len(pca_mses)
            # 2. paired val loss on the same batches, without and with the round trip
            batches = [get_batch("val") for _ in range(kn.eval_batches)]
            base = sum(model(x, y)[1].item() for x, y in batches) / len(batches)
            for m in mods:
                m.splice_active = True
            spliced = sum(model(x, y)[1].item() for x, y in batches) / len(batches)
            est = estimate_loss()
            est = est["val"] if isinstance(est, dict) else est
            out["kvsplice/val_loss"] = float(est)
            out["kvsplice/val_loss_delta"] = spliced - base
        finally:
            for m in mods:
                m._collect = None
                m.splice_active = False
            model.train(was_training)
        return out
