"""GPTConfig: the transformer's shape plus the names and knobs of its mechanisms.

The config holds names and knob dicts, never classes, so it serialises to JSON and hashes
(litgpt's reason). `models.registry` is the only place a name becomes a module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50304       # GPT-2's 50257 padded to a multiple of 64
    dropout: float = 0.0
    bias: bool = True             # bias in Linears and LayerNorms, as GPT-2
    mlp_expansion: float = 4.0    # D_ff = round(mlp_expansion * n_embd), honoured by every MLP
    d_ff: int | None = None       # explicit MLP width; null = round(mlp_expansion * n_embd)
    attn: str = "causal"          # attention mechanism name (models.registry)
    attn_knobs: dict[str, Any] = field(default_factory=dict)
    mlp: str = "gelu"             # MLP mechanism name (models.registry)
    mlp_knobs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mlp_expansion <= 0:
            raise ValueError(f"mlp_expansion must be > 0, got {self.mlp_expansion}")
        if self.d_ff is not None and self.d_ff <= 0:
            raise ValueError(f"d_ff must be > 0 or null, got {self.d_ff}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        """D_ff: the explicit `d_ff`, else round(mlp_expansion * n_embd) (3.3333333333 * 768
        = 2559.99... -> 2560, §5; int() truncated it to 2559)."""
        if self.d_ff is not None:
            return self.d_ff
        return max(1, round(self.mlp_expansion * self.n_embd))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["d_ff"] is None:  # absent unless given, so existing resolved configs stay the same
            del d["d_ff"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model field(s) {unknown} (known: {sorted(known)})")
        return cls(**d)
