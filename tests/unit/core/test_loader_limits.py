"""Hostile spec text: size cap, nesting depth, alias bombs, non-finite numbers, names by full
match, strict number types; and a property test: any text gives a Spec or one SpecError line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.errors import SpecError
from orchestrator.core.loader import (
    DEFAULT_MAX_BYTES,
    MAX_BYTES_ENV,
    MAX_DEPTH,
    load_spec,
    spec_from_text,
)
from orchestrator.core.resolve import Overrides, parse_set, resolve
from orchestrator.core.spec import Spec

BASE = "study: s\nsteps: {V0: {}}\n"


def err(text: str, limit_s: float = 1.0) -> str:
    t0 = time.monotonic()
    with pytest.raises(SpecError) as e:
        spec_from_text(text, file="f.yaml")
    assert time.monotonic() - t0 < limit_s
    msg = e.value.message
    assert "\n" not in msg
    return msg


def alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return BASE + "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once() -> None:
    assert err(alias_bomb(9)) == (
        "f.yaml: line 7: YAML aliases expand to more than 100,000 values: a study spec needs "
        "a few hundred; write the values out or use fewer aliases")


def test_aliases_that_stay_small_are_fine_and_walked_once() -> None:
    spec = spec_from_text("study: s\nx: &t {train: {lr: 0.001}}\nsteps:\n  V0: *t\n  V1: *t\n"
                          .replace("x: &t", "defaults: &t"))
    assert spec.steps["V1"].train is not None and spec.steps["V1"].train.lr == 0.001


def test_a_recursive_alias_is_refused() -> None:
    assert err("study: s\nsteps: &a {V0: *a}\n").endswith(
        "a YAML alias refers to the node that contains it: remove the recursion")


@pytest.mark.parametrize("text", [
    "study: s\nsteps: " + "[" * 5000 + "]" * 5000 + "\n",
    "study: s\nsteps: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
    "study: s\nsteps: " + "[" * 1_000_000 + "\n",
    "study: s\n" + "".join(" " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + " " * 80 + "v\n",
])
def test_deep_nesting_is_refused_naming_the_limit(text: str) -> None:
    msg = err(text)
    assert f"nested deeper than {MAX_DEPTH} levels" in msg and "flatten" in msg
    assert msg.startswith("f.yaml: line ")


def test_the_size_cap_reads_no_further_than_the_limit(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = time.monotonic()
    with pytest.raises(SpecError) as e:
        load_spec("/dev/zero")
    assert time.monotonic() - t0 < 1.0
    assert e.value.message == (
        f"/dev/zero: larger than {DEFAULT_MAX_BYTES:,} bytes: a study spec is a few KB; check "
        f"the path, or raise {MAX_BYTES_ENV}")
    big = tmp_path / "big.yaml"
    big.write_text(BASE + "description: " + "x" * 2000 + "\n")
    monkeypatch.setenv(MAX_BYTES_ENV, "1000")
    with pytest.raises(SpecError, match="larger than 1,000 bytes"):
        load_spec(big)
    monkeypatch.setenv(MAX_BYTES_ENV, "100000")
    assert isinstance(load_spec(big), Spec)
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    with pytest.raises(SpecError, match=f"{MAX_BYTES_ENV}='lots' is not a number of bytes"):
        load_spec(big)


@pytest.mark.parametrize(("extra", "path", "word"), [
    ("defaults: {train: {budget: {seconds: .inf}}}", "defaults.train.budget.seconds", ".inf"),
    ("defaults: {train: {lr: .inf}}", "defaults.train.lr", ".inf"),
    ("defaults: {train: {grad_clip: -.inf}}", "defaults.train.grad_clip", "-.inf"),
    ("defaults: {train: {lr: .nan}}", "defaults.train.lr", ".nan"),
    ("defaults: {train: {lr: 1e999}}", "defaults.train.lr", "1e999"),
    ("steps: {V0: {attention: {ra: {R: .inf}}}}", "steps.V0.attention.ra.R", ".inf"),
    ("steps: {V0: {expect: {val_loss: [1, .inf]}}}", "steps.V0.expect.val_loss[1]", ".inf"),
    ("analysis: {noise_floor: .NaN}", "analysis.noise_floor", ".NaN"),
])
def test_every_float_must_be_finite_naming_the_key(extra: str, path: str, word: str) -> None:
    text = BASE.replace("steps: {V0: {}}\n", "") + extra + "\n"
    if "steps:" not in text:
        text += "steps: {V0: {}}\n"
    assert err(text) == f"f.yaml: {path}: {word} is not a finite number: write a finite value"


def test_huge_integers_are_refused_not_parsed() -> None:
    assert err(BASE + "defaults: {train: {max_iters: " + "9" * 5000 + "}}\n") == (
        "f.yaml: defaults.train.max_iters: integer of 5000 characters is too large: "
        "write at most 40 digits")


@pytest.mark.parametrize("assignment", ["train.lr=.inf", "train.lr=.nan", "train.grad_clip=1e999",
                                        "train.budget={seconds: .inf}"])
def test_set_overrides_must_be_finite(assignment: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_set(assignment)
    assert e.value.message.startswith("--set: train.")
    assert "is not a finite number: write a finite value" in e.value.message


def test_set_reads_yaml12_floats_and_time_must_be_finite() -> None:
    assert parse_set("train.lr=3e-4") == ("train.lr", 3e-4)
    spec = spec_from_text(BASE.replace("{V0: {}}", "{V0: {train: {budget: {iters: 5}}}}"))
    for bad in (float("inf"), float("nan")):
        with pytest.raises(SpecError) as e:
            resolve(spec, presets={"tiny": {"n_layer": 1, "n_head": 1, "n_embd": 8,
                                            "block_size": 8}}, vocab={"gpt2": 50257},
                    overrides=Overrides(time=bad))
        assert e.value.message == f"--time: must be a finite number of seconds, got {bad}"


@pytest.mark.parametrize(("text", "expected"), [
    ('study: s\nsteps: {"V0\\n": {}}\n',
     "f.yaml: steps['V0\\n']: invalid step id 'V0\\n': use letters, digits, '_', '.', '-', "
     "starting with a letter or digit"),
    ('study: "s\\n"\nsteps: {V0: {}}\n',
     "f.yaml: study: invalid name 's\\n': use letters, digits, '_', '.', '-', starting with a "
     "letter or digit"),
    ('study: s\nsteps: {"V0 ": {}}\n',
     "f.yaml: steps['V0 ']: invalid step id 'V0 ': use letters, digits, '_', '.', '-', "
     "starting with a letter or digit"),
])
def test_names_match_in_full(text: str, expected: str) -> None:
    assert err(text) == expected


BOOL_HINT = ("(YAML reads yes, no, on, off, true and false as booleans): write a number")


@pytest.mark.parametrize(("extra", "expected"), [
    ("defaults: {seeds: [true]}", f"defaults.seeds[0]: expected an integer, got the boolean "
                                  f"true {BOOL_HINT}"),
    ("steps: {V0: {seeds: [1, yes]}}", f"steps.V0.seeds[1]: expected an integer, got the "
                                       f"boolean true {BOOL_HINT}"),
    ("defaults: {train: {batch_size: no}}", f"defaults.train.batch_size: expected an integer, "
                                            f"got the boolean false {BOOL_HINT}"),
    ("defaults: {train: {lr: on}}", f"defaults.train.lr: expected a number, got the boolean "
                                    f"true {BOOL_HINT}"),
    ('defaults: {train: {lr: "6e-4"}}', "defaults.train.lr: expected a number, got the quoted "
                                        "string '6e-4': write it without quotes"),
    ("defaults: {train: {batch_size: '8'}}", "defaults.train.batch_size: expected an integer, "
                                             "got the quoted string '8': write it without quotes"),
    ('defaults: {seeds: ["1"]}', "defaults.seeds[0]: expected an integer, got the quoted "
                                 "string '1': write it without quotes"),
    ("defaults: {max_attempts: '3'}", "defaults.max_attempts: expected an integer, got the "
                                      "quoted string '3': write it without quotes"),
    ("defaults: {seeds: [1.5]}", "defaults.seeds[0]: expected an integer, got 1.5: write a "
                                 "whole number"),
    ('defaults: {train: {compile: "yes"}}', "defaults.train.compile: expected true or false, "
                                            "got 'yes'"),
    ("defaults: {model: {bias: 1}}", "defaults.model.bias: expected true or false, got 1"),
])
def test_strict_types_name_the_key(extra: str, expected: str) -> None:
    text = ("study: s\n" if extra.startswith("steps:") else BASE) + extra + "\n"
    assert err(text) == f"f.yaml: {expected}"


def test_yaml12_numbers_stay_accepted() -> None:
    spec = spec_from_text(BASE + "defaults: {train: {lr: 3e-4, min_lr: 0, grad_clip: 1, "
                                 "weight_decay: 1e-1}, seeds: [0, 7]}\n")
    t = spec.defaults.train
    assert (t.lr, t.min_lr, t.grad_clip, t.weight_decay) == (3e-4, 0.0, 1.0, 0.1)
    assert spec.defaults.seeds == [0, 7]


# --- property: any text -> a Spec or one SpecError line, quickly ---------------------------

TOKENS = [*"abV0123456789.-_:[]{},&*!|>'\"#?@ \n\t%", "study: ", "steps: ", "V0: ", "\n  ",
          "- ", ".inf", "&a ", "*a", "!!float ", "<<: ", "yes", "1e5"]
YAMLISH = st.lists(st.sampled_from(TOKENS), max_size=120).map("".join)


def _load(text: str) -> None:
    t0 = time.monotonic()
    try:
        result = spec_from_text(text, file="h.yaml")
    except SpecError as e:
        assert "\n" not in e.message and e.message.startswith("h.yaml")
    else:
        assert isinstance(result, Spec)
    assert time.monotonic() - t0 < 2.0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_any_text_gives_a_spec_or_one_spec_error(text: str) -> None:
    _load(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(YAMLISH)
def test_yaml_shaped_text_gives_a_spec_or_one_spec_error(text: str) -> None:
    _load(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=20))
def test_any_value_under_a_spec_key_gives_a_spec_or_one_spec_error(value: object) -> None:
    import json

    for key in ("defaults", "steps", "analysis"):
        _load(f"study: s\nsteps: {{V0: {{}}}}\n{key}: {json.dumps(value)}\n"
              if key != "steps" else f"study: s\nsteps: {json.dumps(value)}\n")


@pytest.mark.parametrize("name", ["V0\n", "V0\r\n", "ok\n"])
def test_path_guards_match_names_in_full(name: str) -> None:
    """A name that slipped past the spec (an old database, a hand-made plan) never becomes a
    directory: the artifact-path guards match in full too."""
    from orchestrator.core import ids
    from orchestrator.core.spec import DataSection

    with pytest.raises(ValueError, match="unsafe"):
        ids.attempt_dir("runs", study="study", step=name, seed=1, config_hash="ab" * 32,
                        run_id=1, attempt_no=1)
    with pytest.raises(ValueError, match="unsafe"):
        ids.attempt_dir("runs", study=name, step="V0", seed=1, config_hash="ab" * 32,
                        run_id=1, attempt_no=1)
    with pytest.raises(ValueError, match="unknown dataset"):
        DataSection(dataset="kjv\n")
