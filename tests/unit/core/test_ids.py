"""The canonical id builder."""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

import pytest

from orchestrator.core import ids


def test_config_hash_is_sha256_of_sorted_compact_json() -> None:
    cfg = {"b": 1, "a": {"y": [1, 2.5], "x": None}}
    expected = hashlib.sha256(b'{"a":{"x":null,"y":[1,2.5]},"b":1}').hexdigest()
    assert ids.config_hash(cfg) == expected
    assert ids.config_hash({"a": {"x": None, "y": [1, 2.5]}, "b": 1}) == expected
    assert ids.config_hash({"a": {"x": None, "y": [2.5, 1]}, "b": 1}) != expected
    assert ids.short(expected) == expected[:8]


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError):
        ids.config_hash({"lr": float("nan")})


def test_attempt_dir() -> None:
    assert ids.attempt_dir("s", "V1", 2, 3) == PurePosixPath("runs/s/V1/seed2/attempt3")
    assert ids.attempt_dir("s", "V1", 0, 1, root="/data/runs") == PurePosixPath(
        "/data/runs/s/V1/seed0/attempt1")


@pytest.mark.parametrize(("study", "step", "seed", "n"), [
    ("..", "V1", 1, 1), ("s", "../x", 1, 1), ("s", "a/b", 1, 1), ("s", "V1", -1, 1),
    ("s", "V1", 1, 0),
])
def test_attempt_dir_refuses_unsafe_parts(study: str, step: str, seed: int, n: int) -> None:
    with pytest.raises(ValueError):
        ids.attempt_dir(study, step, seed, n)


def test_wandb_run_id_is_deterministic_per_attempt() -> None:
    a = ids.wandb_run_id("s", "V1", 1, 1, "abc")
    assert a == ids.wandb_run_id("s", "V1", 1, 1, "abc") and len(a) == 16
    assert a != ids.wandb_run_id("s", "V1", 1, 2, "abc")
