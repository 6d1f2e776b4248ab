"""`policy: h2o` equals a real token-by-token decoding cache (§19 decision 7, corrected).

The reference below decodes one token at a time with an explicit cache of (position, K, V)
entries, exactly as an inference server would: insert the new token, evict the lowest-score
key outside the recency window when over capacity (for good), attend over what is cached,
add the attention the cache computed to the scores. The module's whole-sequence forward must
give the same outputs in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from models.context import BlockContext
from models.mechanisms.h2o import h2o_keep
from models.mechanisms.kv_prune import Knobs, KVPrunedAttention, heavy_hitter_keep
from tests.unit.models.gen3_helpers import HEAD_DIM, N_EMBD, N_HEAD, T, cfg


def decode_with_cache(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, capacity: int,
                      recency: int, mode: str) -> torch.Tensor:
    """Outputs (T, D) of one (batch, head) decoded token by token with a heavy-hitter cache."""
    T_, D = q.shape
    r = min(recency, capacity)
    cache: list[int] = []                    # cached positions, their K and V below
    score: dict[int, float] = {}
    out = torch.zeros(T_, D, dtype=q.dtype)
    for i in range(T_):
        cache.append(i)
        score[i] = 0.0
        if len(cache) > capacity:
            victim = min((j for j in cache if j <= i - r), key=lambda j: score[j])
            cache.remove(victim)
            del score[victim]
        K, V = k[cache], v[cache]
        if mode == "kv":                     # only the cached keys exist
            w = torch.softmax(K @ q[i] / math.sqrt(D), dim=0)
            mass = w
        else:                                # v_only: every key is cached, V only for `cache`
            full = torch.softmax(k[: i + 1] @ q[i] / math.sqrt(D), dim=0)
            mass = full[cache]
            w = mass / mass.sum()
        out[i] = w @ V
        for j, m in zip(cache, mass.tolist(), strict=True):
            score[j] += m
    return out


def _attn(**knobs) -> KVPrunedAttention:
    c = cfg(attn="kv_prune", attn_knobs=knobs)
    return KVPrunedAttention(c, Knobs(**knobs), 0).double()


def _qkv(attn: KVPrunedAttention, x: torch.Tensor):
    B, T_, E = x.shape
    q, k, v = attn.c_attn(x).split(E, dim=2)
    return (t.view(B, T_, N_HEAD, HEAD_DIM).transpose(1, 2) for t in (q, k, v))


SETTINGS = [(12, 4, "v_only"), (12, 4, "kv"), (20, 3, "kv"), (20, 3, "v_only"), (8, 1, "kv"),
            (6, 9, "v_only"), (31, 16, "kv"), (16, 8, "v_only")]


@pytest.mark.parametrize("n_keep,recency,mode", SETTINGS,
                         ids=[f"k{a}-r{b}-{c}" for a, b, c in SETTINGS])
def test_h2o_module_output_equals_token_by_token_decode_with_a_real_cache(n_keep, recency, mode):
    torch.manual_seed(100 + n_keep * 7 + recency)
    attn = _attn(k=n_keep, recency=recency, mode=mode)  # policy h2o is the default
    assert attn.knobs.policy == "h2o"
    x = torch.randn(2, T, N_EMBD, dtype=torch.float64)
    q, k, v = _qkv(attn, x)
    ys = torch.stack([torch.stack([decode_with_cache(q[b, h], k[b, h], v[b, h], n_keep, recency, mode)
                                   for h in range(N_HEAD)]) for b in range(2)])  # (B, H, T, D)
    want = attn.c_proj(ys.transpose(1, 2).reshape(2, T, N_EMBD))
    got = attn(x, BlockContext())
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_h2o_differs_from_the_oracle_rule_at_many_positions():
    """The earlier rule (now `policy: oracle`) is not what a cache holds: with attention that
    is not near-uniform most positions of a 32-token sequence keep a different set."""
    torch.manual_seed(3)
    S = 2.0 * torch.randn(4, 32, 32, dtype=torch.float64)
    causal = torch.ones(32, 32, dtype=torch.bool).tril()
    A = S.masked_fill(~causal, float("-inf")).softmax(-1)
    oracle = heavy_hitter_keep(A.cumsum(-2) - A, 12, 4)
    for mode in ("kv", "v_only"):
        rows = (h2o_keep(S, 12, 4, mode) != oracle).any(-1)  # (4, 32)
        assert rows.sum(-1).min().item() >= 8, rows.sum(-1).tolist()


def test_h2o_keep_mask_invariants():
    torch.manual_seed(0)
    S = torch.randn(3, 2, 40, 40)
    keep = h2o_keep(S, 10, 3, "kv")
    causal = torch.ones(40, 40, dtype=torch.bool).tril()
    assert not (keep & ~causal).any()
    assert torch.equal(keep.sum(-1), torch.clamp(torch.arange(1, 41), max=10).expand(3, 2, 40))
    i = torch.arange(40)
    for d in range(3):  # the recency window is always kept
        assert keep[..., i[d:], i[d:] - d].all()
    # evictions are final: once key j leaves query i's set it is absent for every later query
    left = keep[..., :-1, :] & ~keep[..., 1:, :]
    later = torch.flip(torch.cumsum(torch.flip(keep[..., 1:, :].long(), [-2]), -2), [-2])
    assert not (left & (later > 0)).any()
    assert torch.equal(h2o_keep(S, 40, 3), causal.expand(3, 2, 40, 40))


def test_h2o_selection_has_no_gradient_but_the_attention_over_the_kept_set_does():
    torch.manual_seed(1)
    attn = _attn(k=10, recency=2)
    x = torch.randn(2, T, N_EMBD, dtype=torch.float64, requires_grad=True)
    attn(x, BlockContext()).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attn.parameters())


def test_recency_frac_scales_with_the_sequence_and_sliding_windows_are_flagged():
    kn = Knobs(keep_ratio=0.382, recency=64)
    tiny = cfg(attn="kv_prune", block_size=128)
    assert kn.widths(tiny) == {"kv_keep_k": 48, "kv_recency": 48}
    assert "pure sliding window" in kn.warnings(tiny)[0]
    frac = Knobs(keep_ratio=0.382, recency_frac=0.0625)
    assert frac.recency_at(128) == 8 and frac.recency_at(1024) == 64
    assert frac.warnings(tiny) == []
    assert KVPrunedAttention(tiny, kn, 0).get_stats()["sliding_window"] == 1.0
    assert KVPrunedAttention(tiny, frac, 0).get_stats()["sliding_window"] == 0.0
    full = cfg(attn="kv_prune", block_size=1024)
    assert kn.widths(full) == {"kv_keep_k": 391, "kv_recency": 64} and kn.warnings(full) == []


def test_h2o_model_under_torch_compile_matches_eager():
    import torch._dynamo

    from models.config import GPTConfig
    from models.gpt2 import GPT

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=24, vocab_size=64, dropout=0.0,
                          attn="kv_prune", attn_knobs={"k": 10, "recency": 3}))
    fwd = torch.compile(model, backend="eager")
    x = torch.randint(0, 64, (2, 24))
    _, loss = fwd(x, x)
    loss.backward()
    torch.testing.assert_close(loss, model(x, x)[1])
    torch._dynamo.reset()
