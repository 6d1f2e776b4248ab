"""KV-cache pruning as causal heavy-hitter eviction (mechanisms.md §10; decisions 6, 7)."""

from __future__ import annotations

import math

import pytest
import torch

from models import registry
from models.context import BlockContext
from models.gpt2 import GPT
from models.mechanisms.kv_prune import Knobs, KVPrunedAttention, heavy_hitter_keep
from tests.unit.models.gen3_helpers import (
    HEAD_DIM,
    N_EMBD,
    N_HEAD,
    N_LAYER,
    T,
    assert_causal,
    baseline_block_params,
    batch,
    build,
    cfg,
    copy_shared,
    grad_norms,
    logits,
    meta_counts,
    one_step_lowers_loss,
    tokens,
)

VARIANTS = [
    dict(k=12, recency=4),
    dict(k=12, recency=4, mode="kv"),
    dict(keep_ratio=0.25, recency=2),
    dict(k=6, recency=8),          # recency clamped to k: a sliding window
    dict(keep_ratio=0.382, recency=4, learned=True),
]
IDS = ["k12-r4-v_only", "k12-r4-kv", "ratio.25-r2", "window6", "learned"]


def kv_cfg(**knobs):
    return cfg(attn="kv_prune", attn_knobs=knobs)


def reference_oracle(q: torch.Tensor, k: torch.Tensor, n_keep: int, recency: int) -> torch.Tensor:
    """The `oracle` rule, row by row, for one (batch, head); q, k (T, D): query i keeps the
    last r = min(recency, n_keep) tokens and the n_keep - r older tokens with the largest
    FULL causal attention mass from the queries before i (re-ranked at every query)."""
    T_, D = q.shape
    r = min(recency, n_keep)
    score = [0.0] * T_
    kept = torch.zeros(T_, T_, dtype=torch.bool)
    for i in range(T_):
        recent = list(range(max(0, i - r + 1), i + 1))
        older = sorted(range(0, max(0, i - r + 1)), key=lambda j: -score[j])
        for j in recent + older[: n_keep - r]:
            kept[i, j] = True
        s = torch.stack([q[i] @ k[j] for j in range(i + 1)]) / math.sqrt(D)
        a = torch.softmax(s, dim=0)
        for j in range(i + 1):
            score[j] += float(a[j].detach())
    return kept


def qkv(attn: KVPrunedAttention, x: torch.Tensor):
    B, T_, E = x.shape
    q, k, v = attn.c_attn(x).split(E, dim=2)
    return (t.view(B, T_, N_HEAD, HEAD_DIM).transpose(1, 2) for t in (q, k, v))


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_shapes_and_meta_build(knobs):
    c = kv_cfg(**knobs)
    with torch.device("meta"):
        GPT(c)
    m = build(c)
    assert m(tokens())[0].shape == (2, T, 64)
    y = m.transformer.h[0].attn(torch.randn(3, 20, N_EMBD), BlockContext())
    assert y.shape == (3, 20, N_EMBD)


@pytest.mark.parametrize("knobs", VARIANTS + [dict(k=12, recency=4, kvsplice={"k": 8})], ids=IDS + ["kvsplice"])
def test_parameter_count_is_the_baseline(knobs):
    counts = meta_counts(kv_cfg(**knobs))
    attn, mlp = baseline_block_params(N_EMBD, 4 * N_EMBD)
    assert counts["attention"] == N_LAYER * attn and counts["mlp"] == N_LAYER * mlp
    assert counts["mechanism"] == (N_LAYER if knobs.get("learned") else 0)  # one ratio logit per layer


@pytest.mark.slow
@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_causal_at_every_position(knobs):
    assert_causal(build(kv_cfg(**knobs)))


@pytest.mark.parametrize("n_keep,recency", [(12, 4), (8, 1), (20, 16), (5, 9), (31, 3)])
def test_oracle_policy_keeps_the_top_full_attention_mass_at_every_query(n_keep, recency):
    torch.manual_seed(n_keep + recency)
    kn = dict(k=n_keep, recency=recency, policy="oracle")
    attn = KVPrunedAttention(kv_cfg(**kn), Knobs(**kn), 0).double()
    x = torch.randn(2, T, N_EMBD, dtype=torch.float64)
    q, k, v = qkv(attn, x)
    got = attn.kept_mask(q, k, n_keep)  # (B, H, T, T)
    for b in range(2):
        for h in range(N_HEAD):
            want = reference_oracle(q[b, h], k[b, h], n_keep, recency)
            assert torch.equal(got[b, h], want), f"b={b} h={h}: rows {torch.nonzero((got[b, h] != want).any(-1)).flatten().tolist()}"
    assert torch.equal(got.sum(-1)[0, 0], torch.clamp(torch.arange(1, T + 1), max=n_keep))
    # the module attends over exactly that set, renormalised
    S = (q @ k.transpose(-1, -2)) / math.sqrt(HEAD_DIM)
    y = S.masked_fill(~got, float("-inf")).softmax(-1) @ v
    want = attn.c_proj(y.transpose(1, 2).reshape(2, T, N_EMBD))
    torch.testing.assert_close(attn(x, BlockContext()), want)


def test_keep_mask_is_causal_and_keeps_the_current_token():
    mass = torch.rand(3, T, T)
    keep = heavy_hitter_keep(mass, 10, 3)
    assert not (keep & ~torch.ones(T, T, dtype=torch.bool).tril()).any()
    assert keep.diagonal(dim1=-2, dim2=-1).all()


def test_full_cache_is_the_baseline_attention():
    base = build(cfg())
    idx = tokens()
    for knobs in (dict(keep_ratio=1.0), dict(k=T), dict(k=1000)):
        m = copy_shared(base, build(kv_cfg(**knobs)))
        assert torch.equal(logits(m, idx), logits(base, idx)), knobs


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_on_differs_from_off(knobs):
    base = build(cfg())
    m = copy_shared(base, build(kv_cfg(**knobs)))
    diff = (logits(m, tokens()) - logits(base, tokens())).abs().max().item()
    assert diff > 1e-4


def test_v_only_and_kv_give_the_same_outputs_under_oracle_but_different_caches():
    a = build(kv_cfg(k=12, recency=4, policy="oracle"))
    b = build(kv_cfg(k=12, recency=4, mode="kv", policy="oracle"))
    assert torch.equal(logits(a, tokens()), logits(b, tokens()))
    sa, sb = a.transformer.h[0].attn.get_stats(), b.transformer.h[0].attn.get_stats()
    assert sa["kv_cache_bytes"] == (T + 12) * N_EMBD * 2 and sb["kv_cache_bytes"] == 2 * 12 * N_EMBD * 2


def test_cache_bytes_at_gpt2_size_match_the_spec_arithmetic():
    # §10: 2 x 12 x 768 x 2 B = 36 KiB per token over 12 layers; k = 391 of 1024 tokens
    def attn(**knobs):
        c = cfg(attn="kv_prune", attn_knobs=knobs, n_layer=12, n_head=12, n_embd=768, block_size=1024)
        with torch.device("meta"):
            return GPT(c).transformer.h[0].attn
    full = 2 * 1024 * 768 * 2
    assert full * 12 == 1024 * 36 * 1024
    v_only = attn(keep_ratio=0.38197).get_stats()
    assert v_only["keep_k"] == 391 and v_only["kv_cache_bytes"] == (1024 + 391) * 768 * 2
    assert 1 - v_only["kv_cache_fraction"] == pytest.approx(0.309, abs=1e-3)  # "V-only saves ~31 %"
    kv = attn(k=391, mode="kv").get_stats()
    assert kv["kv_cache_fraction"] == pytest.approx(391 / 1024)
    spliced = attn(k=391, kvsplice={"k": 16}).get_stats()
    assert spliced["kv_cache_bytes"] == 1024 * 768 * 2 + 391 * 12 * 16 * 2


# ---------------------------------------------------------------------------------------
# learned keep ratio


def test_learned_ratio_starts_at_keep_ratio_and_its_cost_enters_the_training_loss():
    m = build(kv_cfg(keep_ratio=0.382, recency=4, learned=True, cost=0.5))
    attn = m.transformer.h[0].attn
    assert torch.sigmoid(attn.ratio_logit).item() == pytest.approx(0.382)
    assert attn.keep_count(T) == int(0.382 * T)
    x, y = batch()
    with torch.no_grad():
        m.eval()
        _, val = m(x, y)
        m.train()
        _, train = m(x, y)
    assert train.item() - val.item() == pytest.approx(0.5 * 0.382, rel=1e-5)  # mean over layers


def test_learned_ratio_gets_a_gradient_from_the_lm_loss_alone():
    m = build(kv_cfg(keep_ratio=0.382, recency=4, learned=True, cost=0.0))
    g = grad_norms(m)
    for i in range(N_LAYER):
        assert g[f"transformer.h.{i}.attn.ratio_logit"] > 0


def test_learned_forward_equals_the_hard_mask_at_the_same_k():
    learned = build(kv_cfg(keep_ratio=0.382, recency=4, learned=True))
    hard = copy_shared(learned, build(kv_cfg(k=int(0.382 * T), recency=4)))
    torch.testing.assert_close(logits(learned, tokens()), logits(hard, tokens()))


@pytest.mark.slow
def test_learned_ratio_moves_during_training():
    torch.manual_seed(0)
    moves = {}
    for cost in (0.0, 5.0):
        m = build(kv_cfg(keep_ratio=0.382, recency=4, learned=True, cost=cost))
        m.train()
        opt = torch.optim.AdamW(m.optim_groups(0.0), lr=2e-2)
        r0 = [torch.sigmoid(b.attn.ratio_logit).item() for b in m.transformer.h]
        for step in range(6):
            x, y = batch(seed=10 + step)
            _, loss = m(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        r1 = [torch.sigmoid(b.attn.ratio_logit).item() for b in m.transformer.h]
        moves[cost] = [b - a for a, b in zip(r0, r1, strict=True)]
        print(f"cost {cost}: keep ratio {r0} -> {r1}")
        assert all(abs(d) > 1e-3 for d in moves[cost])
        assert m.mechanism_stats()["attn.learned_ratio/L0"] == pytest.approx(r1[0])
    assert all(d < 0 for d in moves[5.0])  # a high price for memory shrinks the cache


@pytest.mark.parametrize("knobs", VARIANTS, ids=IDS)
def test_one_step_lowers_loss(knobs):
    l0, l1 = one_step_lowers_loss(build(kv_cfg(**knobs)))
    assert l1 < l0


# ---------------------------------------------------------------------------------------
# knobs


@pytest.mark.parametrize("bad,msg", [
    (dict(mode="k_only"), "mode must be one of"),
    (dict(policy="lru"), "policy must be one of"),
    (dict(recency_frac=0.0), "recency_frac must be in"),
    (dict(k=0), "k must be >= 1"),
    (dict(keep_ratio=0.0), "keep_ratio must be in"),
    (dict(recency=0), "recency must be >= 1"),
    (dict(k=100, learned=True), "set k to null"),
    (dict(kvsplice={"K": 8}), "unknown kvsplice knob 'K'"),
    (dict(kvsplice={"k": 0}), "kvsplice.k must be >= 1"),
])
def test_bad_knobs_are_rejected(bad, msg):
    with pytest.raises(ValueError, match=msg):
        registry.make_knobs("kv_prune", "attn", bad)
