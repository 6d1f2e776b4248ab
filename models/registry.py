"""The only place mechanism names become modules (torchtitan/litgpt style).

A new mechanism is one file under `models/mechanisms/`, one line here, one test file.
The dict is an explicit literal, not import-time decorators, so it is greppable and import
order cannot change it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

import torch.nn as nn

from models import layers
from models.config import GPTConfig
from models.context import Partner, signals
from models.mechanisms import kv_prune, mla, reciprocal_mlp, rmlp, unified_ra


@dataclass(frozen=True)
class Mechanism:
    slot: Literal["attn", "mlp"]
    knobs: type
    module: type[nn.Module]
    doc: str


MECHANISMS: dict[str, Mechanism] = {
    "causal": Mechanism("attn", layers.NoKnobs, layers.CausalSelfAttention, "GPT-2 causal self-attention (SDPA)"),
    "gelu": Mechanism("mlp", layers.NoKnobs, layers.MLP, "GPT-2 MLP: c_fc, GELU, c_proj"),
    "mla": Mechanism("attn", mla.Knobs, mla.MLAAttention, "MLA latent attention + Gen-2 band RA, mechanism 1/3 inputs, RA-CT (§2-4)"),
    "reciprocal_mlp": Mechanism("mlp", reciprocal_mlp.Knobs, reciprocal_mlp.ReciprocalMLP, "Gen-2 reciprocal MLP: mechanisms 1 gate, 2 cross, 3 recip (§4)"),
    "unified_ra": Mechanism("attn", unified_ra.Knobs, unified_ra.UnifiedReciprocalAttention, "Gen-3 Unified RA: fold shared|free, gates, self-restart (§6, §7)"),
    "kv_prune": Mechanism("attn", kv_prune.Knobs, kv_prune.KVPrunedAttention, "causal heavy-hitter KV pruning, learned ratio, KVSplice (§10, §11)"),
    "rmlp": Mechanism("mlp", rmlp.Knobs, rmlp.ReciprocalMLP, "Gen-3 R-MLP: folded, attention-injected, seed-003 prev-attn (§8)"),
}


class UnknownMechanismError(ValueError):
    """Raised for a name that is not in MECHANISMS (the orchestrator maps it to UnknownMechanism)."""


def get(name: str, slot: str) -> Mechanism:
    mech = MECHANISMS.get(name)
    if mech is None or mech.slot != slot:
        valid = sorted(n for n, m in MECHANISMS.items() if m.slot == slot)
        raise UnknownMechanismError(f"unknown {slot} mechanism {name!r} (known: {', '.join(valid)})")
    return mech


def make_knobs(name: str, slot: str, knobs: dict[str, Any]) -> Any:
    """Validate a knob dict by constructing the mechanism's frozen Knobs dataclass."""
    mech = get(name, slot)
    known = [f.name for f in fields(mech.knobs)]
    unknown = sorted(set(knobs) - set(known))
    if unknown:
        raise ValueError(
            f"unknown knob {unknown[0]!r} for {slot} mechanism {name!r} "
            f"(known: {', '.join(known) if known else 'none'})"
        )
    return mech.knobs(**knobs)


class SignalContractError(ValueError):
    """A mechanism needs cross-block signals its partner slot does not provide."""


def _slot(cfg: GPTConfig, slot: str) -> tuple[str, dict[str, Any]]:
    return (cfg.attn, cfg.attn_knobs) if slot == "attn" else (cfg.mlp, cfg.mlp_knobs)


def partner(cfg: GPTConfig, slot: str) -> Partner:
    """The other slot of a block (name and validated knobs), handed to the constructor."""
    other = "mlp" if slot == "attn" else "attn"
    name, knobs = _slot(cfg, other)
    return Partner(name, make_knobs(name, other, knobs))


def check_signals(cfg: GPTConfig, slot: str) -> None:
    """Raise one error naming both slots when `slot`'s mechanism needs a signal the other
    slot neither produces nor consumes (e.g. mechanism 1's head gates with causal attention)."""
    name, given = _slot(cfg, slot)
    knobs = make_knobs(name, slot, given)
    needs = getattr(knobs, "signal_needs", None)
    if needs is None:
        return
    other = "mlp" if slot == "attn" else "attn"
    word = "attention" if other == "attn" else "mlp"
    p = partner(cfg, slot)
    for what, produce, consume in needs():
        missing = sorted((produce - p.produced) | (consume - p.consumed))
        if not missing:
            continue
        fits = [n for n in names(other)
                if produce <= signals(MECHANISMS[n].knobs(), "signals_produced")
                and consume <= signals(MECHANISMS[n].knobs(), "signals_consumed")]
        hint = f"use {word} {' or '.join(repr(n) for n in fits)}" if fits else f"no {word} provides it"
        raise SignalContractError(
            f"{what}, but {word} {p.name!r} does not exchange {', '.join(missing)} with "
            f"{'attention' if slot == 'attn' else 'mlp'} {name!r} ({hint})")


def build(slot: str, cfg: GPTConfig, layer_idx: int) -> nn.Module:
    name, knobs = _slot(cfg, slot)
    mech = get(name, slot)
    k = make_knobs(name, slot, knobs)
    check_signals(cfg, slot)
    return mech.module(cfg, k, layer_idx, partner=partner(cfg, slot))


def names(slot: str | None = None) -> list[str]:
    return sorted(n for n, m in MECHANISMS.items() if slot is None or m.slot == slot)
