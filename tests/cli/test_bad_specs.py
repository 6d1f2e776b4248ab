"""The corpus of broken specs: each gives one line naming file and YAML path, exit 1, no rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.cli.app import run

CORPUS = Path(__file__).parent / "bad_specs"

EXPECTED = {
    "unknown_key.yaml": "defaults.train.batch_sise: unknown key 'batch_sise'; did you mean "
                        "'batch_size'? (known: budget, batch_size, grad_accum, lr, min_lr, warmup, "
                        "schedule_horizon, max_iters, weight_decay, grad_clip, eval_every, "
                        "eval_batches, log_every, checkpoint_every, stats_every, coupling_warmup, "
                        "device, dtype, compile)",
    "unknown_top_level_key.yaml": "stepz: unknown key 'stepz'; did you mean 'steps'? (known: "
                                  "study, description, code, pinned_sha, defaults, steps, "
                                  "analysis) (+1 more problem)",
    "wrong_type.yaml": "defaults.train.lr: expected a number, got the string 'fast'",
    "unknown_parent.yaml": "steps.V3.parent: unknown parent 'V9' (steps: V0, V1, V2)",
    "cycle.yaml": "steps.V1.parent: parent cycle V1 -> V2 -> V1: one step of the cycle needs "
                  "no parent",
    "duplicate_step.yaml": "steps.V1: duplicate step id 'V1' (lines 7 and 8): rename or "
                           "remove one",
    "budget_negative.yaml": "defaults.train.budget.seconds: input should be greater than 0, "
                            "got -60",
    "budget_empty.yaml": "defaults.train.budget: empty budget: set at least one of seconds, "
                         "iters, tokens",
    "budget_missing.yaml": "defaults.train.budget: no budget: set train.budget to at least one "
                           "of seconds, iters, tokens (e.g. `budget: {seconds: 60}`)",
    "empty_steps.yaml": "steps: no steps: add at least one, e.g. `steps: {V0: {description: "
                        "baseline}}`",
    "not_yaml.yaml": "line 4, column 8: not valid YAML: while parsing a flow mapping expected "
                     "',' or '}', but got ':'",
    "binary.yaml": "not a text file (not UTF-8); a study spec is YAML",
    "list_not_mapping.yaml": "the file holds a list, not a YAML mapping; a study spec starts "
                             "with `study: NAME`",
    "seeds_duplicate.yaml": "defaults.seeds: duplicate seed(s) 2: list each seed once",
    "seeds_string.yaml": "steps.V0.seeds: input should be a valid list, got '1,2'",
    "unknown_preset.yaml": "defaults.model.preset: unknown preset 'gpt2-xxl' (known: tiny, "
                           "small, gpt2-124m)",
    "two_mechanisms.yaml": "steps.V1.attention: one mechanism per slot, got 2: ra, mla; write "
                           "e.g. {ra: {R: 4}}",
    "rule_unknown_step.yaml": "analysis.rules[0].worse_than: unknown step 'V00' (steps: V0, V1)",
    "bad_study_name.yaml": "study: invalid name 'my study': use letters, digits, '_', '.', '-', "
                           "starting with a letter or digit",
}


def test_every_corpus_file_has_an_expectation() -> None:
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(EXPECTED)


def _rows(url: str) -> int:
    from orchestrator.queue.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return sum(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                       for t in ("studies", "runs", "attempts", "events"))
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_spec(name: str, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / name
    rc = run(["queue", "submit", str(path), "--db", sqlite_url])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out == ""
    assert err == f"error: {path}: {EXPECTED[name]}\n"
    assert _rows(sqlite_url) == 0
    # --plan fails the same way
    assert run(["queue", "submit", str(path), "--plan", "--db", sqlite_url]) == 1
    assert capsys.readouterr() == ("", f"error: {path}: {EXPECTED[name]}\n")


def test_unreadable_and_missing_files(tmp_path: Path, sqlite_url: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert run(["queue", "submit", str(missing), "--db", sqlite_url]) == 1
    assert capsys.readouterr() == ("", f"error: {missing}: no such file\n")
    assert run(["queue", "submit", str(tmp_path), "--db", sqlite_url]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path}: is a directory, not a spec file\n"
    assert _rows(sqlite_url) == 0


def test_debug_shows_the_traceback(sqlite_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / "cycle.yaml"
    assert run(["--debug", "queue", "submit", str(path), "--db", sqlite_url]) == 1
    err = capfd.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith(f"error: {path}: {EXPECTED['cycle.yaml']}")
