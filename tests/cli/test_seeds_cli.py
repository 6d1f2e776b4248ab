"""`recip seeds add` through the real CLI boundary on real databases: new runs keep the
study's overrides, present seeds are skipped, bad input is one line that changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.cli.app import run
from orchestrator.core import ids

SPEC = """\
study: grow
defaults:
  model: {preset: tiny}
  data: {dataset: kjv, tokenizer: byte}
  train: {budget: {seconds: 60}, batch_size: 4, lr: 6e-4}
  seeds: [1, 2]
steps:
  V0: {description: baseline}
  V1: {parent: V0, mlp: {rmlp: {R_ff: 64}}}
  V2: {parent: V0, attention: {unified_ra: {R: 4}}}
"""


def stored(url: str) -> dict[tuple[str, int], tuple[str, dict]]:
    from orchestrator.queue.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT step_key, seed, config_hash, config_json FROM runs")).all()
    finally:
        engine.dispose()
    return {(s, k): (h, c if isinstance(c, dict) else json.loads(c)) for s, k, h, c in rows}


@pytest.fixture
def submitted(tmp_path: Path, db_url: str) -> str:
    spec = tmp_path / "grow.yaml"
    spec.write_text(SPEC)
    assert run(["queue", "submit", str(spec), "--no-check", "--db", db_url, "--time", "7",
                "--set", "train.eval_batches=3"]) == 0
    return db_url


def test_seeds_add_copies_the_submitted_config_with_its_overrides(
        submitted: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = stored(submitted)
    capsys.readouterr()
    assert run(["seeds", "add", "grow", "--steps", "V0,V1", "--count", "2",
                "--db", submitted]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == ("study grow: added seeds 3, 4 to V0, V1 (4 runs queued, "
                                   "recorded as a look: the report corrects for it)")
    after = stored(submitted)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {("V0", 3), ("V0", 4), ("V1", 3), ("V1", 4)}
    chash, config = after[("V1", 4)]
    assert config["seed"] == 4 and config["train"]["budget"]["seconds"] == 7
    assert config["train"]["eval_batches"] == 3
    assert config["model"]["mlp"] == "rmlp"
    assert chash == ids.config_hash(config)


def test_explicit_seeds_twice_add_once(submitted: str, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    assert run(["seeds", "add", "grow", "--seeds", "2,5", "--db", submitted, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == {"V0": [5], "V1": [5], "V2": [5]} and out["runs"] == 3
    assert out["present"] == {"V0": [2], "V1": [2], "V2": [2]}
    runs = stored(submitted)
    assert run(["seeds", "add", "grow", "--seeds", "2,5", "--db", submitted]) == 0
    assert capsys.readouterr().err == (
        "nothing new: study grow already has seeds 2, 5 of these steps\n")
    assert stored(submitted) == runs


@pytest.mark.parametrize(("args", "message"), [
    (("grow",), "error: give one of --count N or --seeds 4,5, e.g. `recip seeds add grow "
                "--count 2`"),
    (("grow", "--count", "1", "--seeds", "3"), "error: give one of --count N or --seeds 4,5"),
    (("grow", "--count", "0"), "error: --count must be at least 1, got 0"),
    (("grow", "--seeds", "3,x"), "error: --seeds: expected comma-separated integers"),
    (("grow", "--seeds", "3,3"), "error: --seeds must be distinct integers >= 0, got '3,3'"),
    (("grow", "--steps", "V9", "--count", "1"), "error: no step 'V9' in study 'grow'"),
    (("nope", "--count", "1"), "error: no study 'nope'"),
    (("grow", "--seeds", "3,4,5", "--max-seeds", "3"),
     "error: adding these seeds would give V0, V1, V2 more than --max-seeds 3 seeds"),
])
def test_bad_input_is_one_line_and_changes_nothing(
        submitted: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
        message: str) -> None:
    runs = stored(submitted)
    capsys.readouterr()
    assert run(["seeds", "add", *args, "--db", submitted]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(message), err
    assert "Traceback" not in err
    assert stored(submitted) == runs
