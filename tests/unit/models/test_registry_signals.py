"""The registry is the only place names become modules, in both directions (house.md §2.6):
mechanisms never import it; `registry.build` hands each constructor its partner slot."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from models import registry
from models.context import Partner, signals
from tests.unit.models.gen3_helpers import cfg

MECH_DIR = Path(__file__).resolve().parents[3] / "models" / "mechanisms"


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):  # includes function-local imports
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("path", sorted(MECH_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_mechanism_imports_the_registry(path):
    assert not {m for m in _imports(path) if m.startswith("models.registry")}, path.name


def test_build_passes_the_partner_slot_into_the_constructor():
    c = cfg(attn="mla", attn_knobs={"latent_dim": 16}, mlp="reciprocal_mlp", mlp_knobs={"gate": True})
    p = registry.partner(c, "attn")
    assert isinstance(p, Partner) and p.name == "reciprocal_mlp" and p.produced == {"head_gates"}
    attn = registry.build("attn", c, 1)
    assert attn.gate_alpha is not None          # MLA made its gate scalar from the partner
    assert registry.build("attn", c, 0).gate_alpha is None
    assert signals(p.knobs, "signals_consumed") == frozenset()
    assert signals(object()) == frozenset()


def test_check_signals_raises_one_error_naming_both_slots():
    c = cfg(attn="unified_ra", mlp="reciprocal_mlp", mlp_knobs={"recip": True})
    with pytest.raises(registry.SignalContractError) as e:
        registry.build("mlp", c, 0)
    msg = str(e.value)
    assert "attention 'unified_ra'" in msg and "mlp 'reciprocal_mlp'" in msg
    assert "latent_k" in msg and "latent_z" in msg and "use attention 'mla'" in msg
    registry.build("attn", c, 0)  # the attention itself needs nothing of the MLP
