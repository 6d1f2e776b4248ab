"""`recip queue submit | ls | cancel` through the real CLI boundary on real databases."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from models.presets import PRESETS, TOKENIZER_VOCAB
from orchestrator.cli.app import run
from orchestrator.core.loader import load_spec
from orchestrator.core.resolve import Overrides, resolve

TABLES = ("studies", "runs", "attempts", "events", "metrics", "workers")

SPEC = """\
study: smoke
description: RA and R-MLP against the baseline
defaults:
  model: {preset: tiny}
  data: {dataset: kjv, tokenizer: byte}
  train: {budget: {seconds: 60}, batch_size: 4, lr: 6e-4}
  seeds: [1, 2]
steps:
  V0: {description: baseline}
  V1: {parent: V0, attention: {unified_ra: {R: 4}}}
  V3: {parent: V1, mlp: {rmlp: {R_ff: 64}}}
"""


def row_counts(url: str) -> dict[str, int]:
    from orchestrator.queue.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                    for t in TABLES}
    finally:
        engine.dispose()


def configs(url: str) -> list[dict[str, Any]]:
    from orchestrator.queue.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT config_json FROM runs ORDER BY id")).scalars()
            return [r if isinstance(r, dict) else json.loads(r) for r in rows]
    finally:
        engine.dispose()


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "smoke.yaml"
    path.write_text(SPEC)
    return path


def submit(spec: Path, url: str, *extra: str) -> int:
    return run(["queue", "submit", str(spec), "--no-check", "--db", url, *extra])


def test_plan_prints_runs_and_writes_nothing(spec_file: Path, db_url: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    before = row_counts(db_url)
    assert submit(spec_file, db_url, "--plan") == 0
    out, err = capsys.readouterr()
    plan = resolve(load_spec(spec_file), presets=PRESETS, vocab=TOKENIZER_VOCAB)
    lines = out.splitlines()
    assert lines[0].startswith(f"study smoke   spec {plan.spec_hash[:8]}   code head")
    assert lines[1].split() == ["step", "seed", "mechanisms", "config", "budget", "gpu-h"]
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == 6
    assert [(r[0], r[1], r[-3]) for r in rows] == [
        (p.step, str(p.seed), p.config_hash[:8]) for p in plan.runs]
    assert "unified_ra(R=4) + rmlp(R_ff=64)" in out and "causal + gelu" in out
    assert all(len(line) <= 100 for line in lines)
    assert err == "6 runs, 0.10 GPU-hours. Nothing queued (--plan).\n"
    assert row_counts(db_url) == before


def test_plan_does_not_even_create_the_database(spec_file: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "never.db"
    assert submit(spec_file, f"sqlite:///{db}", "--plan") == 0
    assert not db.exists()


def test_submit_then_resubmit_is_a_noop(spec_file: Path, db_url: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert submit(spec_file, db_url) == 0
    out, err = capsys.readouterr()
    assert "V3       1  unified_ra(R=4) + rmlp(R_ff=64)" in out
    assert err.splitlines()[0] == "study smoke: created with 6 runs; 6 attempts queued"
    counts = row_counts(db_url)
    assert (counts["studies"], counts["runs"], counts["attempts"]) == (1, 6, 6)
    stored = configs(db_url)
    plan = resolve(load_spec(spec_file), presets=PRESETS, vocab=TOKENIZER_VOCAB)
    assert stored == [r.config for r in plan.runs]

    assert submit(spec_file, db_url) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "nothing new: study smoke already has these 6 runs\n"
    assert row_counts(db_url) == counts


def test_changed_step_gets_new_runs_with_a_clear_message(
        spec_file: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert submit(spec_file, sqlite_url) == 0
    spec_file.write_text(SPEC.replace("R_ff: 64", "R_ff: 128"))
    capsys.readouterr()
    assert submit(spec_file, sqlite_url) == 0
    out, err = capsys.readouterr()
    assert "rmlp(R_ff=128)" in out
    assert err.splitlines()[0] == "study smoke: 2 new runs, 4 unchanged; 2 attempts queued"
    assert err.splitlines()[1].startswith("changed since the last submit: V3 (new runs;")
    assert row_counts(sqlite_url)["runs"] == 8


def test_overrides_become_part_of_each_runs_config(
        spec_file: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert submit(spec_file, sqlite_url, "--time", "30", "--seeds", "7", "--preset", "small",
                  "--steps", "V0,V1") == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1] == "overrides: --preset small --time 30.0 --seeds 7"
    assert out.splitlines()[2].startswith("run scale of preset small: batch_size=8 grad_accum=1 ")
    stored = configs(sqlite_url)
    assert [(c["step"], c["seed"]) for c in stored] == [("V0", 7), ("V1", 7)]
    assert all(c["train"]["budget"] == {"seconds": 30.0, "iters": None, "tokens": None}
               for c in stored)
    assert all(c["model"]["n_embd"] == PRESETS["small"]["n_embd"] for c in stored)
    # the same spec without overrides is different runs
    plain = resolve(load_spec(spec_file), presets=PRESETS, vocab=TOKENIZER_VOCAB,
                    overrides=Overrides(seeds=(7,)))
    capsys.readouterr()
    assert submit(spec_file, sqlite_url, "--seeds", "7", "--steps", "V0,V1") == 0
    assert "2 new runs" in capsys.readouterr().err
    assert configs(sqlite_url)[2:] == [r.config for r in plan_runs(plain, ("V0", "V1"))]


def plan_runs(plan: Any, steps: tuple[str, ...]) -> list[Any]:
    return [r for r in plan.runs if r.step in steps]


@pytest.mark.parametrize(("args", "message"), [
    (["--steps", "V1,V9"], "error: --steps: no step 'V9' in study 'smoke' (steps: V0, V1, V3)"),
    (["--seeds", "1,x"], "error: --seeds: expected comma-separated integers, e.g. --seeds 1,2, got '1,x'"),
    (["--seeds", "2,2"], "error: --seeds: seeds must be distinct and >= 0, got [2, 2]"),
    (["--preset", "huge"], "error: --preset: unknown preset 'huge' (known: tiny, small, gpt2-124m)"),
    (["--time", "0"], "error: --time: must be > 0 seconds, got 0.0"),
    (["--dataset", "imagenet"], "error: --dataset: unknown dataset 'imagenet' (use kjv, text:PATH or hf:NAME)"),
])
def test_bad_options_are_one_line_errors(spec_file: Path, sqlite_url: str, args: list[str],
                                         message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    before = row_counts(sqlite_url)
    assert submit(spec_file, sqlite_url, *args) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", message + "\n")
    assert row_counts(sqlite_url) == before


def test_unmigrated_database_names_the_fix(spec_file: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.db").touch()  # exists, but has no schema: never migrated implicitly
    url = f"sqlite:///{tmp_path}/empty.db"
    assert submit(spec_file, url) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "recip db upgrade" in err and err.count("\n") == 1


def test_submit_creates_a_missing_sqlite_database(spec_file: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # the embedded default works on a fresh machine: `recip queue submit` needs no setup
    url = f"sqlite:///{tmp_path}/fresh.db"
    assert submit(spec_file, url) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"created {url}"
    assert (tmp_path / "fresh.db").exists()


def test_password_is_never_printed(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+psycopg://alice:hunter2@127.0.0.1:1/nowhere"
    assert submit(spec_file, url) == 1
    out, err = capsys.readouterr()
    assert "hunter2" not in out + err and err.startswith("error: ")


def test_ls_lists_studies(spec_file: Path, sqlite_url: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["queue", "ls", "--db", sqlite_url]) == 0
    assert capsys.readouterr() == ("", f"no studies in {sqlite_url}; submit one with "
                                       "`recip queue submit FILE`\n")
    submit(spec_file, sqlite_url)
    capsys.readouterr()
    assert run(["queue", "ls", "--db", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^smoke\s+6\s+6 queued\s+\d{4}-\d\d-\d\d \d\d:\d\d\s+RA and R-MLP", out,
                     re.M)
    assert run(["queue", "ls", "--json", "--db", sqlite_url]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(d["study"], d["runs"], d["counts"]) for d in data] == [("smoke", 6, {"queued": 6})]


def test_cancel(spec_file: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    submit(spec_file, db_url)
    capsys.readouterr()
    assert run(["queue", "cancel", "smoke", "--steps", "V1", "--db", db_url]) == 0
    assert capsys.readouterr().err == "study smoke (steps V1): 2 attempts cancelled\n"
    assert run(["queue", "cancel", "smoke", "--db", db_url]) == 0
    assert capsys.readouterr().err == "study smoke: 4 attempts cancelled\n"
    assert run(["queue", "cancel", "nope", "--db", db_url]) == 1
    assert capsys.readouterr().err.startswith("error: no study 'nope' in ")
    assert run(["queue", "cancel", "smoke", "--steps", "V9", "--db", db_url]) == 1
    assert "V9" in capsys.readouterr().err


def test_submit_runs_the_model_check(tmp_path: Path, sqlite_url: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("R_ff: 64", "R_FF: 64"))
    before = row_counts(sqlite_url)
    assert run(["queue", "submit", str(bad), "--db", sqlite_url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: {bad}: steps.V3.mlp.rmlp.R_FF: ") and "R_FF" in err
    assert err.count("\n") == 1
    assert row_counts(sqlite_url) == before
