"""The canonical id builder."""

from __future__ import annotations

import hashlib
from pathlib import Path

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


H = "ab" * 32


def test_labels_and_attempt_dir() -> None:
    assert ids.run_label("s", "V1", 2) == "s/V1/seed2"
    assert ids.attempt_label("s", "V1", 2, 3) == "s/V1/seed2/attempt3"
    assert ids.attempt_dir("runs", study="s", step="V1", seed=2, config_hash=H, run_id=7,
                           attempt_no=3) == Path(f"runs/s/V1/seed2/{H[:12]}-run7/attempt3")
    assert ids.attempt_dir(Path("/data/runs"), study="s", step="V1", seed=0, config_hash=H,
                           run_id=1, attempt_no=1) == Path(f"/data/runs/s/V1/seed0/{H[:12]}-run1/attempt1")


def test_attempt_dirs_of_two_runs_of_one_step_and_seed_differ() -> None:
    # the README order: the main job's smoke runs, then `--time 10 --seeds 1` of the same study
    a = ids.attempt_dir("runs", study="s", step="V1", seed=1, config_hash=H, run_id=1, attempt_no=1)
    b = ids.attempt_dir("runs", study="s", step="V1", seed=1, config_hash="cd" * 32, run_id=5,
                        attempt_no=1)
    assert a != b and a.parent.parent == b.parent.parent


@pytest.mark.parametrize(("study", "step", "seed", "n", "run_id", "chash"), [
    ("..", "V1", 1, 1, 1, H), ("s", "../x", 1, 1, 1, H), ("s", "a/b", 1, 1, 1, H),
    ("s", "V1", -1, 1, 1, H), ("s", "V1", 1, 0, 1, H), ("s", "V1", 1, 1, 0, H),
    ("s", "V1", 1, 1, 1, "../../etc"),
])
def test_attempt_dir_refuses_unsafe_parts(study: str, step: str, seed: int, n: int, run_id: int,
                                          chash: str) -> None:
    with pytest.raises(ValueError):
        ids.attempt_dir("runs", study=study, step=step, seed=seed, config_hash=chash,
                        run_id=run_id, attempt_no=n)


def test_wandb_run_id_is_deterministic_per_attempt_and_differs_across_databases_and_configs() -> None:
    def rid(db: str = "sqlite:////a/recip.db", chash: str = H, n: int = 1, seed: int = 1) -> str:
        return ids.wandb_run_id(db_identity=db, study="s", step="V1", seed=seed, config_hash=chash,
                                attempt_no=n)

    a = rid()
    assert a == rid() and len(a) == 16 and int(a, 16) >= 0
    others = {rid(db="sqlite:////b/recip.db"), rid(db="postgresql+psycopg://u:***@h/db"),
              rid(chash="cd" * 32), rid(n=2), rid(seed=2)}
    assert a not in others and len(others) == 5
    assert ids.wandb_run_name("s", "V1", 1, 2) == "s/V1/seed1/attempt2"
