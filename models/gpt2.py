"""GPT-2 (nanoGPT-shaped) with pluggable attention and MLP mechanisms.

- pre-LN blocks: x = x + Attn(LN1(x)); x = x + MLP(LN2(x)); final LN; tied LM head
- learned absolute position embeddings, no RoPE
- GPT-2 init for EVERY variant (mechanisms.md §19 decision 10): Linear/Embedding weights
  N(0, 0.02), biases 0, `*c_proj.weight` N(0, 0.02/sqrt(2*n_layer)); a mechanism's own extra
  parameters (gates, alphas) are initialised by its `reset_mechanism_parameters()`, called
  after the generic init, so steps differ only by the mechanism
- cross-block signals travel in a fresh BlockContext per forward, never on the modules
- this __init__ may run on the meta device: `recip check` builds every step there first
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import registry
from models.config import GPTConfig
from models.context import BlockContext
from models.layers import LayerNorm


class Block(nn.Module):

    def __init__(self, cfg: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = registry.build("attn", cfg, layer_idx)
        self.ln_2 = LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = registry.build("mlp", cfg, layer_idx)
        bind = getattr(self.mlp, "bind_attention", None)
        if bind is not None:
            bind(self.attn)  # R-MLP tie_to_attn_proj shares rows of this block's attention c_proj

    def forward(self, x, ctx: BlockContext):
        a = self.attn(self.ln_1(x), ctx)  # (B, T, C)
        ctx.attn_out = a                   # the attention-injected R-MLP variants read it
        x = x + a
        x = x + self.mlp(self.ln_2(x), ctx)
        return x


class GPT(nn.Module):

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)]),
            ln_f=LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        # coupling scale cs (mechanisms.md §9): one number for every reciprocal term,
        # set by the trainer before each forward; 1.0 = fully coupled
        self.coupling_scale = 1.0
        self.force_gates_open = False
        self.init_weights()

    # ------------------------------------------------------------------------------------
    # init

    @torch.no_grad()
    def init_weights(self):
        std = 0.02
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # scaled init of the residual projections, per GPT-2
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))
        # mechanism-specific parameters (gates, alphas, biases with special inits)
        for module in self.modules():
            reset = getattr(module, "reset_mechanism_parameters", None)
            if reset is not None:
                reset()

    # ------------------------------------------------------------------------------------
    # forward

    def forward(self, idx, targets=None):
        B, T = idx.size()
        assert T <= self.config.block_size, f"Cannot forward sequence of length {T}, block size is only {self.config.block_size}"
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        ctx = BlockContext(coupling_scale=self.coupling_scale, force_gates_open=self.force_gates_open)
        for block in self.transformer.h:
            x = block(x, ctx)
            ctx.advance()
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            if ctx.aux_loss is not None:  # e.g. the learned KV keep-ratio cost (training only)
                loss = loss + ctx.aux_loss
        return logits, loss

    def set_coupling_scale(self, cs: float):
        assert 0.0 <= cs <= 1.0, f"coupling scale must be in [0, 1], got {cs}"
        self.coupling_scale = float(cs)

    # ------------------------------------------------------------------------------------
    # accounting

    def param_counts(self) -> dict[str, int]:
        """Parameters by part. A module lists its mechanism-only parameters (gates, alphas,
        couplers, mixers) in `mechanism_parameter_names()`; those count as `mechanism`, the
        rest of an attention/MLP module as `attention`/`mlp`. The tied head counts once."""
        counts = {"embedding": 0, "attention": 0, "mlp": 0, "mechanism": 0, "norm": 0}
        seen: set[int] = set()

        def add(part: str, p: nn.Parameter):
            if id(p) in seen:
                return
            seen.add(id(p))
            counts[part] += p.numel()

        for p in self.transformer.wte.parameters():
            add("embedding", p)
        for p in self.transformer.wpe.parameters():
            add("embedding", p)
        for block in self.transformer.h:
            for part, module in (("attention", block.attn), ("mlp", block.mlp)):
                mech_names = set(getattr(module, "mechanism_parameter_names", lambda: ())())
                for name, p in module.named_parameters():
                    add("mechanism" if name in mech_names else part, p)
            for p in list(block.ln_1.parameters()) + list(block.ln_2.parameters()):
                add("norm", p)
        for p in self.transformer.ln_f.parameters():
            add("norm", p)
        for p in self.parameters():  # anything else a mechanism hung on the model
            add("mechanism", p)
        counts["total"] = sum(counts[k] for k in ("embedding", "attention", "mlp", "mechanism", "norm"))
        counts["attn_mlp_ratio_x1000"] = round(1000 * counts["mlp"] / max(1, counts["attention"]))
        return counts

    def mechanism_stats(self) -> dict[str, float]:
        """Per-mechanism statistics (gates, alphas, ...) from every module that reports them."""
        stats: dict[str, float] = {"coupling_scale": float(self.coupling_scale)}
        for i, block in enumerate(self.transformer.h):
            for slot, module in (("attn", block.attn), ("mlp", block.mlp)):
                get = getattr(module, "get_stats", None)
                if get is None:
                    continue
                for k, v in get().items():
                    stats[f"{slot}.{k}/L{i}"] = float(v)
        return stats

    def keep_ratio_stats(self) -> dict[str, float]:
        """The learned KV keep ratio (mean over layers) and the norms over layers of its LM and
        cost gradients, from the last backward (before the optimizer step); {} without one."""
        parts = [g() for m in self.modules() if callable(g := getattr(m, "keep_ratio_grads", None))]
        parts = [p for p in parts if p is not None]
        if not parts:
            return {}
        return {"kv_keep_ratio": sum(p[0] for p in parts) / len(parts),
                "kv_keep_ratio_lm_grad": math.sqrt(sum(p[1] ** 2 for p in parts)),
                "kv_keep_ratio_cost_grad": math.sqrt(sum(p[2] ** 2 for p in parts))}

    def mixing_scalars(self) -> dict[str, nn.Parameter]:
        """The learnable mixing scalars whose grad norms the trainer logs (mechanisms.md §4.4)."""
        out: dict[str, nn.Parameter] = {}
        for i, block in enumerate(self.transformer.h):
            for slot, module in (("attn", block.attn), ("mlp", block.mlp)):
                get = getattr(module, "mixing_scalars", None)
                if get is None:
                    continue
                for k, p in get().items():
                    out[f"{slot}.{k}/L{i}"] = p
        return out

    def optim_groups(self, weight_decay: float):
        """Two parameter groups that cover EVERY parameter (upstream's grouping asserted on
        RA/R-MLP models and silently used wd 0.0): decay on 2-D+ weights except embeddings,
        no decay on biases, norms, embeddings, and 0-/1-D gates and alphas."""
        decay, no_decay = [], []
        emb_ids = {id(self.transformer.wte.weight), id(self.transformer.wpe.weight)}
        seen: set[int] = set()
        for _, p in self.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (decay if p.dim() >= 2 and id(p) not in emb_ids else no_decay).append(p)
        n_all = len({id(p) for p in self.parameters() if p.requires_grad})
        assert len(decay) + len(no_decay) == n_all, "optimizer groups must cover every parameter"
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
