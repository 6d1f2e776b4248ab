"""Model FLOPs utilisation: model FLOPs per token x tokens/s over the device's bf16 peak.

The FLOPs count is nanoGPT's `estimate_mfu` (PaLM appendix B): per token, 6N for the
matmuls of forward + backward over the N non-embedding-position parameters (the tied
wte/lm_head counts once, wpe does not), plus 12 L H Q T for attention scores and the
weighted sum of V (L layers, H heads, Q head dim, T context). A mechanism that adds work
outside its parameters (e.g. a second score matrix) is not in this count: MFU compares
variants on the baseline's FLOPs, so a slower variant shows a lower MFU, and
docs/performance.md counts the extra FLOPs separately.

Peaks are dense (no sparsity) bf16 tensor-core numbers from the vendors' data sheets;
an unknown device gives mfu None, never a guess.
"""

from __future__ import annotations

# dense bf16 peak FLOP/s by device name substring; first match wins (specific names first)
BF16_PEAK: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("GH200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),          # SXM
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


def peak_bf16_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a CUDA device by name (torch.cuda.get_device_name), or None."""
    for key, peak in BF16_PEAK:
        if key in device_name:
            return peak
    return None


def flops_per_token(n_params: int, n_layer: int, n_head: int, head_dim: int, seq_len: int) -> float:
    """6N + 12 L H Q T: training FLOPs (forward + backward) per token at context T."""
    assert min(n_params, n_layer, n_head, head_dim, seq_len) > 0
    return 6.0 * n_params + 12.0 * n_layer * n_head * head_dim * seq_len


def model_flops_per_token(model) -> float:
    """flops_per_token of a models.gpt2.GPT: N counts every parameter once, minus wpe."""
    c = model.config
    n = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    n -= model.transformer.wpe.weight.numel()
    return flops_per_token(n, c.n_layer, c.n_head, c.n_embd // c.n_head, c.block_size)


def mfu(flops_token: float, tokens_per_s: float, peak_flops: float | None) -> float | None:
    """Achieved model FLOP/s over the peak, or None without a peak or a throughput."""
    if not peak_flops or tokens_per_s <= 0:
        return None
    return flops_token * tokens_per_s / peak_flops
