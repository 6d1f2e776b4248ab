"""An intended control (an `analysis.pairs` entry with `control: true`) is a duplicate on
purpose: the identical-model check still sees it but neither `recip check` nor `recip queue
submit` warns about it; an undeclared duplicate still gets the warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.presets import PRESETS, TOKENIZER_VOCAB
from orchestrator.cli.app import run
from orchestrator.core.loader import load_spec, spec_from_text
from orchestrator.core.resolve import resolve
from workers.check import check_plan

ROOT = Path(__file__).resolve().parents[2]
SPEC = """
study: aa
defaults:
  model: {preset: tiny}
  data: {dataset: kjv, tokenizer: byte}
  train: {budget: {seconds: 10}}
  seeds: [1, 2]
steps:
  A: {description: baseline}
  A2: {description: the same}
  B: {description: another copy}
analysis:
  pairs:
    - {a: A2, b: A, control: true}
"""


def test_a_declared_control_is_identical_on_purpose():
    plan = resolve(spec_from_text(SPEC, file="aa.yaml"), presets=PRESETS,
                   vocab=TOKENIZER_VOCAB)
    assert plan.controls == {frozenset(("A", "A2"))}
    checks = {c.step: c for c in check_plan(plan)}
    assert (checks["A2"].identical_to, checks["A2"].intended_control) == ("A", True)
    assert (checks["B"].identical_to, checks["B"].intended_control) == ("A", False)


def test_submit_warns_only_about_the_undeclared_duplicate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "aa.yaml"
    spec.write_text(SPEC)
    assert run(["queue", "submit", str(spec), "--plan"]) == 0
    err = capsys.readouterr().err
    assert "warning: B builds the same model as A" in err
    assert "A2 builds the same model" not in err
    assert run(["check", str(spec)]) == 0
    err = capsys.readouterr().err
    assert ("note: A2 builds the same model as A: declared as an intended control "
            "(analysis.pairs control: true)") in err
    assert "note: B builds the same model as A: a duplicate step" in err


def test_the_shipped_aa_control_plans_without_a_duplicate_warning():
    plan = resolve(load_spec(ROOT / "ablations" / "aa_control.yaml"), presets=PRESETS,
                   vocab=TOKENIZER_VOCAB)
    checks = check_plan(plan)
    assert [(c.step, c.identical_to, c.intended_control) for c in checks] == [
        ("A", None, False), ("A2", "A", True)]
    assert len(plan.runs) == 6
