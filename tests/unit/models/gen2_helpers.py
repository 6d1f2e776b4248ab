"""The Generation-2 tests' view of the shared tiny-model helpers: MLA is the default
attention, and `same_weights` also aligns MLA's kernel choice."""

from __future__ import annotations

from typing import Any

from models.config import GPTConfig
from models.gpt2 import GPT
from tests.unit.models.tiny_models import (  # noqa: F401  (re-exported for the test modules)
    N_EMBD,
    N_HEAD,
    N_LAYER,
    VOCAB,
    T,
    assert_causal,
    build,
    copy_shared,
    grad_norms,
    logits,
    meta_counts,
    one_step_lowers_loss,
    tokens,
)
from tests.unit.models.tiny_models import cfg as _cfg


def cfg(attn: str = "mla", attn_knobs: dict[str, Any] | None = None, mlp: str = "gelu",
        mlp_knobs: dict[str, Any] | None = None, **kw: Any) -> GPTConfig:
    return _cfg(attn, attn_knobs, mlp, mlp_knobs, **kw)


def same_weights(src: GPT, c: GPTConfig) -> GPT:
    """A model of config `c` carrying every parameter it shares (by name and shape) with `src`."""
    dst = copy_shared(src, build(c, seed=123))
    # same kernel too: MLA materialises A only when a term needs it, else it calls SDPA; the
    # identities below are exact only within one path (test_mla checks the paths agree)
    for a, b in zip(src.transformer.h, dst.transformer.h, strict=True):
        if hasattr(a.attn, "explicit") and hasattr(b.attn, "explicit"):
            b.attn.explicit = a.attn.explicit
    return dst
