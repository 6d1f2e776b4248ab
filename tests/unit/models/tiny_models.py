"""Shared helpers of the mechanism tests: tiny CPU float32 models (n_layer=2, n_head=4,
n_embd=64, T=32), causality, one optimizer step, grad norms, parameter counts on meta."""

from __future__ import annotations

from typing import Any

import torch

from models.config import GPTConfig
from models.gpt2 import GPT

N_LAYER, N_HEAD, N_EMBD, T, VOCAB = 2, 4, 64, 32, 64
HEAD_DIM = N_EMBD // N_HEAD
D_FF = 4 * N_EMBD


def cfg(attn: str = "causal", attn_knobs: dict[str, Any] | None = None, mlp: str = "gelu",
        mlp_knobs: dict[str, Any] | None = None, **kw: Any) -> GPTConfig:
    base: dict[str, Any] = dict(n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD, block_size=T,
                                vocab_size=VOCAB, dropout=0.0, bias=True)
    base.update(kw)
    return GPTConfig(attn=attn, attn_knobs=attn_knobs or {}, mlp=mlp, mlp_knobs=mlp_knobs or {}, **base)


def build(c: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(c).eval()


def copy_shared(src: GPT, dst: GPT) -> GPT:
    """Load into `dst` every parameter/buffer it shares with `src` by name and shape."""
    own = dst.state_dict()
    dst.load_state_dict({k: v for k, v in src.state_dict().items() if k in own and own[k].shape == v.shape},
                        strict=False)
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
    """For every t: perturbing tokens after t leaves logits up to t unchanged; perturbing
    token t changes the logits at t (so the check can fail)."""
    idx = tokens(seed=2, T_=T_)
    ref = logits(model, idx)
    for t in range(T_ - 1):
        pert = idx.clone()
        pert[:, t + 1:] = (pert[:, t + 1:] + 7) % VOCAB
        diff = (logits(model, pert)[:, : t + 1] - ref[:, : t + 1]).abs().max().item()
        assert diff == 0.0, f"future leak at t={t}: max |diff| {diff:.3g}"
    pert = idx.clone()
    pert[:, 5] = (pert[:, 5] + 7) % VOCAB
    assert (logits(model, pert)[:, 5] - ref[:, 5]).abs().max() > 1e-4


def batch(seed: int = 3, B: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    idx = tokens(seed=seed, B=B)
    return idx[:, :-1].contiguous(), idx[:, 1:].contiguous()


def one_step_lowers_loss(model: GPT, lr: float = 3e-3) -> tuple[float, float]:
    """Loss on a fixed batch before and after one AdamW step on that batch."""
    model.train()
    x, y = batch()
    opt = torch.optim.AdamW(model.optim_groups(0.0), lr=lr)
    _, loss0 = model(x, y)
    opt.zero_grad()
    loss0.backward()
    opt.step()
    _, loss1 = model(x, y)
    return float(loss0.detach()), float(loss1.detach())


def grad_norms(model: GPT) -> dict[str, float]:
    """Grad norm of every trainable parameter after one backward on a fixed batch."""
    model.train()
    model.zero_grad()
    x, y = batch(seed=4, B=2)
    _, loss = model(x, y)
    loss.backward()
    return {n: (0.0 if p.grad is None else float(p.grad.norm())) for n, p in model.named_parameters()
            if p.requires_grad}


def meta_counts(c: GPTConfig) -> dict[str, int]:
    with torch.device("meta"):
        return GPT(c).param_counts()


def baseline_block_params(E: int, d_ff: int) -> tuple[int, int]:
    """(attention, mlp) parameters of one GPT-2 block with biases."""
    return 4 * E * E + 4 * E, 2 * E * d_ff + d_ff + E
