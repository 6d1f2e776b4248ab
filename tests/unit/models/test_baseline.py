"""Baseline GPT-2: parity with an independent reference, causality, counts, init, groups."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from models.config import GPTConfig
from models.gpt2 import GPT

CFG = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=320, dropout=0.0)


# ---------------------------------------------------------------------------------------
# a minimal GPT-2 written from the paper/nanoGPT maths: explicit masked softmax attention,
# explicit LayerNorm and erf GELU, no shared code with models/

def ref_layernorm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def ref_gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def ref_gpt2(sd: dict[str, torch.Tensor], idx: torch.Tensor, n_layer: int, n_head: int) -> torch.Tensor:
    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]   # (B, T, C)
    C = x.shape[-1]
    hs = C // n_head
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        h = ref_layernorm(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        qkv = h @ sd[p + "attn.c_attn.weight"].T + sd[p + "attn.c_attn.bias"]   # (B, T, 3C)
        q, k, v = qkv.split(C, dim=-1)
        q = q.view(B, T, n_head, hs).transpose(1, 2)
        k = k.view(B, T, n_head, hs).transpose(1, 2)
        v = v.view(B, T, n_head, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)                           # (B, nh, T, T)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + (y @ sd[p + "attn.c_proj.weight"].T + sd[p + "attn.c_proj.bias"])
        h = ref_layernorm(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = ref_gelu(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
        x = x + (h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"])
    x = ref_layernorm(x, sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"])
    return x @ sd["transformer.wte.weight"].T                                    # tied head


def _perturbed(model: GPT) -> GPT:
    # move LayerNorm/bias params off their init values so parity covers them too
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def test_parity_with_reference_gpt2_float32():
    torch.manual_seed(0)
    model = _perturbed(GPT(CFG)).eval()
    idx = torch.randint(0, CFG.vocab_size, (3, CFG.block_size))
    with torch.no_grad():
        ours, _ = model(idx)
        ref = ref_gpt2({k: v.detach() for k, v in model.state_dict().items()}, idx, CFG.n_layer, CFG.n_head)
    rel = ((ours - ref).abs().max() / ref.abs().max()).item()
    print(f"parity: max rel error {rel:.2e}, mean abs diff {(ours - ref).abs().mean().item():.2e}")
    assert ours.dtype == torch.float32
    assert rel < 1e-5


def test_loss_is_cross_entropy_of_the_logits():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    idx = torch.randint(0, CFG.vocab_size, (2, 16))
    tgt = torch.randint(0, CFG.vocab_size, (2, 16))
    logits, loss = model(idx, tgt)
    logp = logits.log_softmax(-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    assert loss.item() == pytest.approx(-logp.mean().item(), rel=1e-5)
    # at init the prediction is close to uniform
    assert abs(loss.item() - math.log(CFG.vocab_size)) < 0.3


def test_causality_future_tokens_do_not_change_the_past():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    idx = torch.randint(0, CFG.vocab_size, (2, CFG.block_size))
    t = 10
    other = idx.clone()
    other[:, t + 1:] = torch.randint(0, CFG.vocab_size, other[:, t + 1:].shape)
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(other)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_param_counts_by_part_and_weight_tying():
    model = GPT(CFG)
    C, V, T, L, F = CFG.n_embd, CFG.vocab_size, CFG.block_size, CFG.n_layer, CFG.mlp_width
    counts = model.param_counts()
    assert counts["embedding"] == V * C + T * C           # tied head counted once
    assert counts["attention"] == L * (C * 3 * C + 3 * C + C * C + C)
    assert counts["mlp"] == L * (C * F + F + F * C + C)
    assert counts["norm"] == (2 * L + 1) * 2 * C
    assert counts["mechanism"] == 0
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert model.lm_head.weight is model.transformer.wte.weight


def test_gpt2_init_scaled_residual_projections():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=4, n_head=4, n_embd=64, block_size=32, vocab_size=320)
    model = GPT(cfg)
    proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h]
                     + [b.mlp.c_proj.weight.flatten() for b in model.transformer.h])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * cfg.n_layer), rel=0.05)
    assert fc.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(b.attn.c_attn.bias.abs().max().item() == 0 for b in model.transformer.h)


def test_optim_groups_cover_every_parameter_once():
    model = GPT(CFG)
    decay, no_decay = model.optim_groups(0.1)
    ids = [id(p) for p in decay["params"]] + [id(p) for p in no_decay["params"]]
    assert len(ids) == len(set(ids)) == len({id(p) for p in model.parameters()})
    assert all(p.dim() >= 2 for p in decay["params"])
    assert id(model.transformer.wte.weight) not in {id(p) for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_builds_on_meta_device():
    with torch.device("meta"):
        model = GPT(GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304))
    assert model.param_counts()["total"] == 124_475_904   # nanoGPT's 124M with the 50304 vocab


def test_one_step_lowers_loss_on_a_repeated_batch():
    torch.manual_seed(0)
    model = GPT(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, CFG.vocab_size, (4, 16))
    losses = []
    for _ in range(3):
        _, loss = model(idx, idx)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0]


def test_set_coupling_scale_validates_range():
    model = GPT(CFG)
    model.set_coupling_scale(0.25)
    assert model.coupling_scale == 0.25
    with pytest.raises(AssertionError):
        model.set_coupling_scale(1.5)
    assert isinstance(model.mixing_scalars(), dict)
    assert model.mechanism_stats()["coupling_scale"] == 0.25
    assert not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
