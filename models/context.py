"""BlockContext: the typed signals that flow between blocks within ONE forward pass.

Upstream stored cross-block signals on the modules and read them on the next call, i.e. from
the previous micro-batch (mechanisms.md §4.5, §17 #2). Here a fresh context is created by
`GPT.forward`, threaded through the block loop, and dropped at the end of the forward.

Per block l:
  - the attention reads `*_in` signals produced by block l-1,
  - the block writes `attn_out` (and the attention may write `attn_probs`, `latent_k`)
    for its own MLP,
  - the MLP writes `*_out` signals for block l+1,
  - `advance()` moves block l's outputs into block l+1's inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class SignalContract(Protocol):
    """Knobs that take part in the cross-block signal contract (names of BlockContext
    signals): `signals_produced()` / `signals_consumed()`. Knobs without them take part in
    none. A consumer's `signal_needs()` lists (what, partner must produce, partner must
    consume) for `models.registry.check_signals`."""

    def signals_produced(self) -> frozenset[str]: ...

    def signals_consumed(self) -> frozenset[str]: ...


def signals(knobs: Any, which: str = "signals_produced") -> frozenset[str]:
    """The signals a slot's knobs produce (or consume, which="signals_consumed"); empty for
    knobs that declare none. The one helper every slot uses."""
    f = getattr(knobs, which, None)
    return f() if f is not None else frozenset()


@dataclass(frozen=True)
class Partner:
    """The other slot of the block, as `models.registry.build` resolves it: its mechanism
    name and validated knobs. Mechanisms read it instead of importing the registry."""

    name: str = ""
    knobs: Any = None

    @property
    def produced(self) -> frozenset[str]:
        return signals(self.knobs, "signals_produced")

    @property
    def consumed(self) -> frozenset[str]:
        return signals(self.knobs, "signals_consumed")


@dataclass
class BlockContext:
    coupling_scale: float = 1.0          # cs in [0,1], set by the trainer before each forward (§9)
    force_gates_open: bool = False       # every sigmoid gate := 1 (§5)
    layer_idx: int = 0

    # produced inside block l for its own MLP
    attn_out: Tensor | None = None       # (B, T, C) attention sub-layer output, before the residual add
    attn_probs: Tensor | None = None     # (B, H, T, T) detached attention weights (mechanism 2)
    latent_k: Tensor | None = None       # (B, T, L) MLA latent keys c_K (mechanism 3 coupler)

    # produced by block l, consumed by block l+1
    head_gates_out: Tensor | None = None     # (B, T, H) mechanism 1
    latent_z_out: Tensor | None = None       # (B, T, L) mechanism 3 MLP -> next attention

    # consumed by block l, produced by block l-1
    head_gates_in: Tensor | None = None
    latent_z_in: Tensor | None = None
    prev_attn_out: Tensor | None = None      # (B, T, C) seed-003 variant (§8.3)

    # accumulated over the whole forward (never cleared by advance)
    aux_loss: Tensor | None = None           # () extra training loss terms, e.g. KV keep-ratio cost (§10)

    def add_aux_loss(self, term: Tensor) -> None:
        """Add a scalar to the loss GPT.forward returns (modules add it only in training)."""
        self.aux_loss = term if self.aux_loss is None else self.aux_loss + term

    def advance(self) -> None:
        """Hand block l's outputs to block l+1 and clear block-local signals."""
        self.head_gates_in, self.head_gates_out = self.head_gates_out, None
        self.latent_z_in, self.latent_z_out = self.latent_z_out, None
        self.prev_attn_out = self.attn_out
        self.attn_out = None
        self.attn_probs = None
        self.latent_k = None
        self.layer_idx += 1
