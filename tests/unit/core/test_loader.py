"""YAML loading and validation errors: one line, file + YAML path + fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.errors import SpecError
from orchestrator.core.loader import format_path, load_spec, parse_yaml, spec_from_text
from orchestrator.core.spec import Spec

GOOD = """\
study: s
defaults:
  model: {preset: tiny}
  train: {budget: {seconds: 60}, lr: 6e-4, min_lr: 1e-5}
steps:
  V0: {description: baseline}
  V1: {parent: V0, attention: {ra: {R: 4, alpha: 1e-2}}}
  V2:
  3: {parent: V1, mlp: rmlp}
analysis:
  pairs: [{a: V1, b: V0}]
  rules:
    - {step: V1, worse_than: V0, say: "RA hurts"}
    - {diverged: true, say: "lower lr"}
"""


def err(text: str) -> str:
    with pytest.raises(SpecError) as e:
        spec_from_text(text, file="f.yaml")
    msg = e.value.message
    assert "\n" not in msg
    return msg


def test_good_spec_parses_with_yaml12_floats_and_shorthands() -> None:
    spec = spec_from_text(GOOD)
    assert isinstance(spec, Spec)
    assert spec.defaults.train.lr == 6e-4 and spec.defaults.train.min_lr == 1e-5
    assert spec.steps["V1"].attention == {"ra": {"R": 4, "alpha": 0.01}}
    assert list(spec.steps) == ["V0", "V1", "V2", "3"]
    assert spec.steps["V2"].parent is None
    assert spec.steps["3"].mlp == {"rmlp": {}}
    assert spec.lineage("3") == ["V0", "V1", "3"]
    assert spec.analysis.rules[0].condition == "worse_than" and spec.analysis.rules[0].other == "V0"
    assert spec.analysis.rules[1].condition == "diverged" and spec.analysis.rules[1].other is None


def test_strings_that_look_like_numbers_stay_strings() -> None:
    data = parse_yaml("a: '6e-4'\nb: 1.5\nc: 1_000\nd: v1e5\ne: .5\n", file="f")
    assert data == {"a": "6e-4", "b": 1.5, "c": 1000, "d": "v1e5", "e": 0.5}


def test_duplicate_keys_anywhere_are_errors() -> None:
    assert err("study: s\nstudy: t\nsteps: {V0: {}}\n") == (
        "f.yaml: study: duplicate key 'study' (lines 1 and 2): rename or remove one")
    msg = err("study: s\nsteps:\n  V0: {}\n  V1: {parent: V0, parent: V1}\n")
    assert msg.startswith("f.yaml: steps.V1.parent: duplicate key 'parent' (lines 4 and 4)")
    msg = err("study: s\nsteps:\n  - x\n  - {a: 1, a: 2}\n")
    assert msg.startswith("f.yaml: steps[1].a: duplicate key")


def test_unknown_key_suggests_and_lists() -> None:
    msg = err("study: s\nsteps:\n  V0: {atention: {ra: {}}}\n")
    assert msg.startswith("f.yaml: steps.V0.atention: unknown key 'atention'; did you mean 'attention'?")
    assert "(known: parent, description, attention, mlp," in msg
    msg = err("study: s\nsteps: {V0: {}}\nanalysis: {rules: [{diverged: true, say: x, sev: 1}]}\n")
    assert msg.startswith("f.yaml: analysis.rules[0].sev: unknown key 'sev'")
    assert "known: step, worse_than" in msg


def test_several_problems_are_counted_on_one_line() -> None:
    msg = err("study: s\nsteps: {V0: {seeds: [a, b], colour: 1}}\n")
    assert msg.startswith("f.yaml: steps.V0.seeds[0]: expected an integer, got the string 'a'")
    assert msg.endswith("(+2 more problems)")


@pytest.mark.parametrize(("text", "expected"), [
    ("steps: {V0: {}}\n", "f.yaml: study: required key is missing: add `study: NAME` at the top of the file"),
    ("study: s\n", "f.yaml: steps: required key is missing: add `steps:`"),
    ("study: s\nsteps:\n", "f.yaml: steps: no steps: add at least one"),
    ("study: s\ncode: pinned\nsteps: {V0: {}}\n", "f.yaml: pinned_sha: code: pinned needs pinned_sha"),
    ("study: s\nsteps: {V0: {parent: V0}}\n", "f.yaml: steps.V0.parent: parent cycle V0 -> V0"),
    ("study: s\nsteps: {V0: {mlp: {a: {}, b: {}}}}\n", "f.yaml: steps.V0.mlp: one mechanism per slot, got 2: a, b"),
    ("study: s\nsteps: {V0: {mlp: {rmlp: 3}}}\n", "f.yaml: steps.V0.mlp.rmlp: input should be a valid dictionary"),
    ("study: s\nsteps: {V0: {}}\nanalysis: {rules: [{say: x}]}\n",
     "f.yaml: analysis.rules[0]: a rule needs exactly one condition, got 0"),
    ("study: s\nsteps: {V0: {}}\nanalysis: {rules: [{worse_than: V0, say: x}]}\n",
     "f.yaml: analysis.rules[0]: rule with worse_than needs `step:`"),
    ("study: s\nsteps: {V0: {}}\nanalysis: {pairs: [{a: V0, b: V5}]}\n",
     "f.yaml: analysis.pairs[0].b: unknown step 'V5' (steps: V0)"),
    ("study: s/t\nsteps: {V0: {}}\n", "f.yaml: study: invalid name 's/t'"),
    ("study: s\nsteps: {V0: {data: {dataset: imagenet}}}\n", "f.yaml: steps.V0.data.dataset: unknown dataset 'imagenet'"),
    ("study: s\nsteps: {V0: {train: {device: tpu}}}\n", "f.yaml: steps.V0.train.device: string should match pattern"),
    ("study: s\nsteps: {V0: {}}\n- x\n", "f.yaml: line 3, column 1: not valid YAML"),
    ("[1, 2]\n", "f.yaml: the file holds a list, not a YAML mapping"),
    ("plain words\n", "f.yaml: the file holds a str, not a YAML mapping"),
    ("", "f.yaml: the file is empty"),
    ("a: 1\n---\nb: 2\n", "f.yaml: line 2, column 1: not valid YAML: expected a single document"),
])
def test_messages(text: str, expected: str) -> None:
    assert err(text).startswith(expected)


def test_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^nope\.yaml: no such file$"):
        load_spec("nope.yaml")
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(SpecError, match="not a text file"):
        load_spec(binary)
    good = tmp_path / "g.yaml"
    good.write_text(GOOD)
    assert load_spec(good).study == "s"


def test_format_path() -> None:
    assert format_path(("steps", "V3", "seeds", 1)) == "steps.V3.seeds[1]"
    assert format_path(()) == ""
