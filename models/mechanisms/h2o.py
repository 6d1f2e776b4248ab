"""The exact heavy-hitter (H2O) KV cache of k keys, run token by token (§19 decision 7).

For every query i the kept set is what a decoding cache of capacity k holds when it answers
query i, with the cache's own bookkeeping:

    step i:  insert key i; if the cache now holds k + 1 keys, evict the key with the lowest
             score among those outside the recency window (j <= i - r, r = min(recency, k));
             an evicted key never returns
             query i attends to the k kept keys (softmax renormalised over them)
             score[j] += w_i[j] for every kept j

    w_i = the attention the cache computed for query i:
          `kv` mode (K and V pruned):  the softmax over the kept keys (what query i used)
          `v_only` mode (every K kept): the full causal softmax over keys <= i (the cache has
                                        all K; upstream v_only scored with it), restricted to
                                        the kept keys

Queries 0..k-1 evict nothing, so their scores are the column sums of the causal softmax and
the sequential loop starts at i = k. The loop keeps k slots per (batch, head) (position and
score of each kept key) and records when each key was evicted; the (T, T) keep mask is then
j <= i < evicted_at[j]. The loop is TorchScript-compiled (one compiled loop over tokens,
vectorised over batch and heads); it runs without gradient. Ties (equal scores, which do not
occur in practice) evict the lowest slot.
"""

from __future__ import annotations

import warnings

import torch


def _h2o_loop(S: torch.Tensor, A: torch.Tensor, score: torch.Tensor, n_keep: int, recency: int,
              full_mass: bool) -> torch.Tensor:
    """Eviction times (N, T) long (T = never) for scores S (N, T, T) and full causal softmax
    rows A (N, T, T) (read only when full_mass); score (N, k): the kept keys' scores after
    query k-1, updated in place."""
    N, T = S.size(0), S.size(1)
    k = n_keep
    pos = torch.arange(k, device=S.device).unsqueeze(0).repeat(N, 1)          # (N, k)
    evicted_at = torch.full((N, T), T, dtype=torch.long, device=S.device)     # (N, T)
    inf = torch.full_like(score, float("inf"))
    for i in range(k, T):
        cand = pos <= i - recency                                             # (N, k)
        e = torch.where(cand, score, inf).argmin(dim=1, keepdim=True)         # (N, 1) slot
        evicted_at.scatter_(1, pos.gather(1, e), i)
        pos.scatter_(1, e, i)
        if full_mass:
            w = A[:, i].gather(1, pos)                                        # (N, k)
        else:
            w = S[:, i].gather(1, pos).softmax(dim=-1)                        # (N, k)
        score.scatter_(1, e, 0.0)
        score.add_(w)
    return evicted_at


try:  # one compiled loop per layer call; eager (same maths) where TorchScript is unavailable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.x marks jit.script deprecated
        _h2o_loop_compiled = torch.jit.script(_h2o_loop)
except Exception:  # noqa: BLE001 - any scripting failure falls back to the eager loop
    _h2o_loop_compiled = _h2o_loop


# A data-dependent loop over tokens: dynamo leaves it to TorchScript. `torch._disable_dynamo` is
# torch's lazy form of `torch.compiler.disable` (what torch.optim uses): it imports torch._dynamo
# at the first call instead of at import time, so importing the model code (every attempt
# imports this module through models.registry) no longer costs the ~0.8 s (quiet 2-core box)
# of torch._dynamo's imports; dynamo skips torch._compile's wrapper frame (MOD_SKIPLIST), i.e.
# a graph break and an eager call, as with the public decorator, which is the fallback.
_disable_dynamo = getattr(torch, "_disable_dynamo", None) or torch.compiler.disable


@_disable_dynamo
@torch.no_grad()
def h2o_keep(scores: torch.Tensor, n_keep: int, recency: int, mode: str = "kv") -> torch.Tensor:
    """Kept-key mask (..., T, T) bool of the token-by-token heavy-hitter cache.

    scores (..., T, T): q_i . k_j / sqrt(D) (entries above the diagonal are ignored);
    mode `kv` scores keys with the renormalised attention over the kept set, `v_only` with
    the full causal softmax (see the module docstring)."""
    *lead, T, T2 = scores.shape
    assert T == T2, scores.shape
    causal = torch.ones(T, T, dtype=torch.bool, device=scores.device).tril()
    k = min(n_keep, T)
    if k >= T:
        return causal.expand(scores.shape).clone()
    r = max(1, min(recency, k))
    S = scores.reshape(-1, T, T)
    full_mass = mode == "v_only"
    if full_mass:
        A = S.masked_fill(~causal, float("-inf")).softmax(dim=-1)             # (N, T, T)
    else:
        A = S[:, :k, :k].masked_fill(~causal[:k, :k], float("-inf")).softmax(dim=-1)
    score = A[:, :k, :k].sum(dim=1).contiguous()                               # (N, k)
    evicted_at = _h2o_loop_compiled(S, A, score, k, r, full_mass)             # (N, T)
    i = torch.arange(T, device=scores.device).view(1, T, 1)
    keep = causal & (evicted_at.unsqueeze(1) > i)                             # (N, T, T)
    return keep.view(*lead, T, T)
