"""docs/specs.md stays true: its example resolves, and every key of the spec models
(top level, defaults sections, step, analysis) is documented there."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from models.presets import PRESETS, TOKENIZER_VOCAB
from orchestrator.core import spec as spec_mod
from orchestrator.core.loader import spec_from_text
from orchestrator.core.resolve import resolve

DOC = Path(__file__).resolve().parents[2] / "docs" / "specs.md"


def _example() -> str:
    text = DOC.read_text()
    block = re.search(r"## A complete example\n\n```yaml\n(.*?)```", text, re.S)
    assert block, "docs/specs.md lost its example"
    return block.group(1)


def test_example_resolves_with_inheritance() -> None:
    plan = resolve(spec_from_text(_example(), file="docs/specs.md"), presets=PRESETS,
                   vocab=TOKENIZER_VOCAB)
    by = {(r.step, r.seed): r.config for r in plan.runs}
    assert sorted(by) == [("V0", 1), ("V0", 2), ("V1", 1), ("V1", 2), ("V3", 1), ("V3", 2)]
    v3 = by[("V3", 1)]
    assert v3["model"]["attn"] == "unified_ra" and v3["model"]["attn_knobs"] == {"R": 4}
    assert v3["model"]["mlp"] == "rmlp" and v3["train"]["lr"] == 3e-4
    assert by[("V1", 1)]["train"]["lr"] == 6e-4 and v3["model"]["vocab_size"] == 320


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        ann = field.annotation
        for sub in getattr(ann, "__args__", ()) + (ann,):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out += _keys(sub, f"{prefix}{name}.")
                break
    return out


def test_every_key_is_documented() -> None:
    text = DOC.read_text()
    keys = (_keys(spec_mod.Spec) + _keys(spec_mod.Defaults) + _keys(spec_mod.Step)
            + [f"analysis.{k}" for k in _keys(spec_mod.Analysis)])
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    in_code = {w for span in re.findall(r"`([^`]+)`", prose) for w in re.findall(r"\w+", span)}
    missing = sorted({k for k in keys if k.split(".")[-1] not in in_code})
    assert not missing, f"docs/specs.md does not mention: {', '.join(missing)}"
    for rule_key in ("worse_than", "not_better_than", "better_than", "outside_expected",
                     "diverged", "gate_collapsed"):
        assert f"`{rule_key}" in text
