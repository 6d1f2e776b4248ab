"""torch.compile and the coupling warm-up: `GPT.coupling_scale` stays a Python float, and
dynamo turns it into a graph input after its first change (automatic dynamic), so a warm-up
that changes cs every step costs one extra graph, never one per value (no recompile storm,
no recompile limit). A counting backend stands in for inductor (no C++ toolchain on CPU)."""

from __future__ import annotations

import pytest

from models.config import GPTConfig
from models.gpt2 import GPT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("attn, attn_knobs, mlp, mlp_knobs", [
    ("causal", {}, "gelu", {}),
    ("unified_ra", {"fold": "free"}, "gelu", {}),
    ("mla", {"latent_dim": 32, "ra_alpha": 0.3}, "reciprocal_mlp", {"cross": True, "recip": True}),
])
def test_coupling_warmup_compiles_at_most_two_graphs(attn, attn_knobs, mlp, mlp_knobs):
    import torch._dynamo

    torch._dynamo.reset()
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=16, vocab_size=64, dropout=0.0,
                          attn=attn, attn_knobs=attn_knobs, mlp=mlp, mlp_knobs=mlp_knobs))
    fwd = torch.compile(model, backend=backend)
    x = torch.randint(0, 64, (2, 16))
    losses = []
    for i in range(12):
        model.set_coupling_scale(min(1.0, i / 10))   # 0.0, 0.1, ..., 1.0, 1.0
        _, loss = fwd(x, x)
        loss.backward()
        eager = model(x, x)[1]
        torch.testing.assert_close(loss, eager)     # the compiled graph sees the current cs
        losses.append(loss.item())
    assert 1 <= len(graphs) <= 2, f"{len(graphs)} graphs for 11 coupling-scale values"
    torch._dynamo.reset()
