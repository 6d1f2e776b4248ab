"""Widths exact (§5, §18(f)): D_ff rounds to the nearest integer, an explicit d_ff wins, and
every mechanism reports the widths it builds."""

from __future__ import annotations

import pytest
import torch

from models.config import GPTConfig
from models.gpt2 import GPT
from models.widths import misaligned, widths

FULL = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024)


@pytest.mark.parametrize("expansion,d_ff", [(3.3333333333, 2560), (2.6666666667, 2048), (4.25, 3264),
                                            (5.0, 3840), (4.0, 3072)])
def test_ratio_expansions_build_the_spec_widths(expansion, d_ff):
    cfg = GPTConfig(**FULL, attn="mla", attn_knobs={"latent_dim": 128}, mlp_expansion=expansion)
    assert cfg.mlp_width == d_ff
    with torch.device("meta"):
        m = GPT(cfg)
    assert m.transformer.h[0].mlp.c_fc.out_features == d_ff
    assert widths(cfg)["D_ff"] == d_ff and misaligned(cfg) == {}


def test_explicit_d_ff_wins_and_is_absent_from_the_dict_when_unset():
    cfg = GPTConfig(**FULL, d_ff=2500)
    assert cfg.mlp_width == 2500 and cfg.to_dict()["d_ff"] == 2500
    assert "d_ff" not in GPTConfig(**FULL).to_dict()
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    assert misaligned(cfg) == {"D_ff": 2500}
    with pytest.raises(ValueError, match="d_ff must be > 0"):
        GPTConfig(**FULL, d_ff=0)


def test_every_mechanism_reports_its_widths():
    w = widths(GPTConfig(**FULL, attn="mla", attn_knobs={"latent_dim": 128}, mlp="reciprocal_mlp",
                         mlp_knobs={"gate": True, "cross": True, "cross_rank": 100}))
    assert w == {"n_embd": 768, "head_dim": 64, "D_ff": 3072, "latent_dim": 128, "gate_dim": 64,
                 "cross_rank": 100}
    w = widths(GPTConfig(**FULL, attn="unified_ra", mlp="rmlp", mlp_knobs={"R_ff_frac": 0.375}))
    assert (w["R"], w["sdpa_head_dim"], w["R_ff"], w["D_ff_std"]) == (4, 68, 1152, 1920)
    assert widths(GPTConfig(**FULL, attn="unified_ra", attn_knobs={"fold": "free"}))["D_std"] == 60
    w = widths(GPTConfig(**FULL, attn="kv_prune", attn_knobs={"keep_ratio": 0.382}))
    assert (w["kv_keep_k"], w["kv_recency"]) == (391, 64)
