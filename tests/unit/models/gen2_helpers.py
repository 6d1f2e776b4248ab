"""Shared helpers of the Generation-2 mechanism tests (tiny CPU float32 models)."""

from __future__ import annotations

from typing import Any

import torch

from models.config import GPTConfig
from models.gpt2 import GPT

N_LAYER, N_HEAD, N_EMBD, T, VOCAB = 2, 4, 64, 32, 64


def cfg(attn: str = "mla", attn_knobs: dict[str, Any] | None = None, mlp: str = "gelu",
        mlp_knobs: dict[str, Any] | None = None, **kw: Any) -> GPTConfig:
    base = dict(n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD, block_size=T, vocab_size=VOCAB,
                dropout=0.0, bias=True)
    base.update(kw)
    return GPTConfig(attn=attn, attn_knobs=attn_knobs or {}, mlp=mlp, mlp_knobs=mlp_knobs or {}, **base)


def build(c: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(c).eval()


def same_weights(src: GPT, c: GPTConfig) -> GPT:
    """A model of config `c` carrying every parameter it shares (by name and shape) with `src`."""
    dst = build(c, seed=123)
    own = dst.state_dict()
    shared = {k: v for k, v in src.state_dict().items() if k in own and own[k].shape == v.shape}
    dst.load_state_dict(shared, strict=False)
    # same kernel too: MLA materialises A only when a term needs it, else it calls SDPA; the
    # identities below are exact only within one path (test_mla checks the paths agree)
    for a, b in zip(src.transformer.h, dst.transformer.h, strict=True):
        if hasattr(a.attn, "explicit") and hasattr(b.attn, "explicit"):
            b.attn.explicit = a.attn.explicit
    return dst


def tokens(seed: int = 1, B: int = 2, T_: int = T) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (B, T_), generator=g)


def logits(model: GPT, idx: torch.Tensor, cs: float = 1.0) -> torch.Tensor:
    model.set_coupling_scale(cs)
    with torch.no_grad():
        out, _ = model(idx)
    return out


def assert_causal(model: GPT, T_: int = T) -> None:
    """For every t: perturbing tokens after t leaves logits up to t unchanged, and perturbing
    token t itself changes the logits at t (so the check can fail)."""
    idx = tokens(seed=2, T_=T_)
    ref = logits(model, idx)
    for t in range(T_ - 1):
        pert = idx.clone()
        pert[:, t + 1:] = (pert[:, t + 1:] + 7) % VOCAB
        out = logits(model, pert)
        diff = (out[:, : t + 1] - ref[:, : t + 1]).abs().max().item()
        assert diff == 0.0, f"future leak at t={t}: max |diff| {diff:.3g}"
    pert = idx.clone()
    pert[:, 5] = (pert[:, 5] + 7) % VOCAB
    assert (logits(model, pert)[:, 5] - ref[:, 5]).abs().max() > 1e-4


def one_step_lowers_loss(model: GPT, lr: float = 3e-3) -> tuple[float, float]:
    model.train()
    idx = tokens(seed=3, B=4)
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()
    opt = torch.optim.AdamW(model.optim_groups(0.0), lr=lr)
    _, loss0 = model(x, y)
    opt.zero_grad()
    loss0.backward()
    opt.step()
    _, loss1 = model(x, y)
    return float(loss0.detach()), float(loss1.detach())


def grads(model: GPT) -> dict[str, float]:
    """Grad norm of every trainable parameter after one backward on a fixed batch."""
    model.train()
    model.zero_grad()
    idx = tokens(seed=4, B=2)
    _, loss = model(idx[:, :-1].contiguous(), idx[:, 1:].contiguous())
    loss.backward()
    return {n: (0.0 if p.grad is None else float(p.grad.norm())) for n, p in model.named_parameters()
            if p.requires_grad}


def meta_counts(c: GPTConfig) -> dict[str, int]:
    with torch.device("meta"):
        return GPT(c).param_counts()
