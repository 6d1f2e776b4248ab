"""MFU arithmetic (nanoGPT's estimate_mfu: 6N + 12 L H Q T per token) on CPU; the model is
built on the meta device, so gpt2-124m costs nothing."""

from __future__ import annotations

import pytest
import torch

from models.config import GPTConfig
from models.gpt2 import GPT
from models.presets import PRESETS
from workers.train.mfu import flops_per_token, mfu, model_flops_per_token, peak_bf16_flops


def _meta_gpt(preset: str, **over) -> GPT:
    with torch.device("meta"):
        return GPT(GPTConfig(**{**PRESETS[preset], "vocab_size": 50304, **over}))


def test_gpt2_124m_flops_per_token_match_nanogpt():
    # nanoGPT: 123.69M non-embedding-position parameters at vocab 50304 (wpe excluded)
    L, C, V, T = 12, 768, 50304, 1024
    n = L * (12 * C * C + 13 * C) + V * C + 2 * C
    assert n == 123_689_472
    expected = 6 * n + 12 * L * 12 * 64 * T
    assert expected == 855_383_040
    assert model_flops_per_token(_meta_gpt("gpt2-124m")) == expected


def test_mfu_is_achieved_flops_over_peak():
    fpt = flops_per_token(1_000_000, 2, 4, 16, 128)
    assert fpt == 6e6 + 12 * 2 * 4 * 16 * 128
    tok_s = 0.4 * 312e12 / fpt
    assert mfu(fpt, tok_s, 312e12) == pytest.approx(0.4)
    assert mfu(fpt, tok_s, None) is None and mfu(fpt, 0.0, 312e12) is None


def test_variant_parameters_count_in_6n():
    base = model_flops_per_token(_meta_gpt("tiny"))
    mla = model_flops_per_token(_meta_gpt("tiny", attn="mla", attn_knobs={"latent_dim": 32}))
    assert mla != base


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA L40S", 362e12),
    ("NVIDIA L4", 121e12), ("cpu", None), ("Tesla T4", None)])
def test_bf16_peaks_by_device_name(name, peak):
    assert peak_bf16_flops(name) == peak
