"""`recip baseline import`: a W&B run stored once as an imported step, with the comparability
check in `recip report`, on SQLite and PostgreSQL.

The offline source is the run directory of a REAL attempt (tests/tracking/offline_attempt.py).
The W&B API path is exercised up to the network: with the server unreachable it must fail in
one line, and its mapping runs on a TrackedRun shaped like an upstream (old trainer) run.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.cli.app import run
from orchestrator.core.plan import RunPlan, StudyPlan
from orchestrator.core.states import AttemptState
from orchestrator.queue.repo import QueueRepo
from orchestrator.tracking.baseline import fetch_api_run, to_imported
from orchestrator.tracking.model import TrackedRun
from tests.tracking.offline_attempt import OfflineAttempt, make_offline_attempt
from tests.tracking.test_wandb import closed_port

STUDY = "ra_base"


@pytest.fixture
def attempt(tmp_path_factory: pytest.TempPathFactory) -> OfflineAttempt:
    return make_offline_attempt(tmp_path_factory)


def _config(base: dict[str, Any], step: str, **train: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(base)
    cfg.update(study=STUDY, step=step, seed=1)
    cfg["train"].update(train)
    return cfg


def submit_study(url: str, base: dict[str, Any], clock: Any, **v0_train: Any) -> None:
    from orchestrator.core.ids import config_hash

    v0 = _config(base, "V0", **v0_train)
    v1 = _config(base, "V1", **v0_train)
    v1["model"]["attn"] = "ra"
    runs = tuple(RunPlan(step=c["step"], seed=1, config=c, config_hash=config_hash(c),
                         parent="V0" if c["step"] == "V1" else None) for c in (v0, v1))
    spec = {"study": STUDY, "steps": {"V0": {"description": "baseline"},
                                      "V1": {"parent": "V0"}}}
    plan = StudyPlan(name=STUDY, description="", spec_hash="1" * 64, spec=spec, runs=runs)
    with QueueRepo.open(url) as repo:
        repo.submit(plan, clock.now())


def train_v0(url: str, clock: Any, best_val_loss: float, tokens: int) -> None:
    """Finish V0's attempt as a worker would (the trainer itself is covered elsewhere)."""
    with QueueRepo.open(url) as repo:
        claimed = repo.claim("w1", clock.now(), timedelta(seconds=30))
        assert claimed is not None and claimed.step == "V0"
        repo.start(claimed.attempt_id, "w1", clock.now(), timedelta(seconds=30),
                   artifact_dir="/nonexistent", code_sha="a" * 40, code_dirty=False,
                   diff_hash=None, host="h", gpu=None, pid=1, env={})
        repo.finish(claimed.attempt_id, "w1", clock.advance(60), AttemptState.SUCCEEDED,
                    exit_code=0, result={"status": "succeeded", "best_val_loss": best_val_loss,
                                         "tokens": tokens, "effective_batch_tokens": 128,
                                         "device": "cpu", "iters": 20})


def count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def _import(url: str, attempt: OfflineAttempt, capsys: Any, *extra: str) -> dict[str, Any]:
    rc = run(["baseline", "import", str(attempt.outdir), "--into", STUDY, "--db", url, "--json",
              *extra])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return dict(json.loads(out), _err=err)


def test_offline_import_is_stored_once_with_its_full_history(attempt, db_url, fake_clock,
                                                              capsys) -> None:
    submit_study(db_url, attempt.config, fake_clock)
    first = _import(db_url, attempt, capsys)
    assert first["created"] is True and first["step"] == "baseline" and first["seed"] == 7
    assert first["_err"].startswith(f"imported {attempt.outdir / 'wandb'}")

    # every numeric value of every logged row, e.g. all val_loss and loss points
    logged = [json.loads(x) for x in (attempt.outdir / "metrics.jsonl").read_text().splitlines()]
    with QueueRepo.open(db_url) as repo:
        series = repo.metric_series([first["attempt_id"]], names=["val_loss", "loss"])
    got = series[first["attempt_id"]]
    for name in ("val_loss", "loss"):
        want = [(r["iter"], r["values"][name]) for r in logged if r["values"].get(name) is not None]
        assert [s for s, _ in got[name]] == [s for s, _ in want]
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(got[name], want, strict=True))
    assert first["metrics"] == count(db_url, "metrics")
    assert first["result"]["best_val_loss"] == pytest.approx(min(v for _, v in got["val_loss"]))

    runs, attempts, metrics = (count(db_url, t) for t in ("runs", "attempts", "metrics"))
    again = _import(db_url, attempt, capsys)
    assert again["created"] is False and again["metrics"] == 0
    assert again["attempt_id"] == first["attempt_id"]
    assert "already in ra_base as step baseline: nothing added" in again["_err"]
    assert (count(db_url, "runs"), count(db_url, "attempts"), count(db_url, "metrics")) == (
        runs, attempts, metrics)
    # under another step name it is still the same run: stored once
    assert _import(db_url, attempt, capsys, "--step", "gpt2_ref")["created"] is False

    assert run(["baseline", "ls", STUDY, "--db", db_url, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["step"], r["seed"], r["source"]) for r in rows] == [("baseline", 7, "wandb-offline")]


def test_report_checks_comparability(attempt, sqlite_url, fake_clock, capsys) -> None:
    # V0 trains twice the batch under a time budget: both must be named as confounders
    submit_study(sqlite_url, attempt.config, fake_clock, batch_size=8,
                 budget={"seconds": 60.0, "iters": None, "tokens": None})
    imported = _import(sqlite_url, attempt, capsys)
    (check,) = imported["comparability"]
    assert check["comparison"] == "V0 vs baseline (imported)" and check["verdict"] == "pending"
    text = "; ".join(check["confounders"])
    assert "budgets differ" in text and "effective batch differs: V0 256 vs baseline 128" in text
    assert "model sizes" not in text                       # same L2 H2 C64 T32 shape

    train_v0(sqlite_url, fake_clock, best_val_loss=2.5, tokens=5120)
    assert run(["report", STUDY, "--format", "json", "--db", sqlite_url]) == 0
    rep = json.loads(capsys.readouterr().out)
    (c,) = [c for c in rep["comparisons"] if c["kind"] == "baseline"]
    assert (c["a"], c["b"]) == ("V0", "baseline")
    assert c["delta"] == pytest.approx(2.5 - imported["result"]["best_val_loss"])
    joined = "; ".join(c["confounders"])
    assert "budgets differ" in joined and "achieved tokens" in joined
    assert "code commits differ" in joined                 # aaaaaaa vs the attempt's commit
    assert run(["report", STUDY, "--format", "md", "--db", sqlite_url]) == 0
    assert "| V0 vs baseline (imported) | baseline |" in capsys.readouterr().out


def test_step_of_the_spec_and_unknown_study_are_one_line(attempt, sqlite_url, fake_clock,
                                                         capsys) -> None:
    submit_study(sqlite_url, attempt.config, fake_clock)
    assert run(["baseline", "import", str(attempt.outdir), "--into", STUDY, "--step", "V0",
                "--db", sqlite_url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: step 'V0' is a step of study 'ra_base''s spec; import the baseline "
                   "under another name, e.g. --step baseline"]
    assert run(["baseline", "import", str(attempt.outdir), "--into", "nope",
                "--db", sqlite_url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no study 'nope'")
    assert run(["baseline", "import", "not/a/dir/nor/a/run", "--into", STUDY,
                "--db", sqlite_url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 'not/a/dir/nor/a/run' is not a W&B run path")


def test_api_import_without_network_is_one_line(sqlite_url, attempt, fake_clock, capsys,
                                                monkeypatch) -> None:
    submit_study(sqlite_url, attempt.config, fake_clock)
    port = closed_port()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert run(["baseline", "import", "mcgrof-citizen/gpt2-kv-pruning/6dvbpfuh", "--into", STUDY,
                "--db", sqlite_url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot reach W&B at http://127.0.0.1:{port}")
    with pytest.raises(Exception, match="not a W&B run path"):
        fetch_api_run("just-a-name")


def upstream_run(n_rows: int = 2000, run_id: str = "6dvbpfuh") -> TrackedRun:
    """What wandb.Api() returns for an old-trainer run: flat vars(args) config, a summary and
    `scan_history` rows keyed by `iteration`."""
    history = []
    for i in range(n_rows):
        row: dict[str, Any] = {"_step": i, "iteration": 10 * i, "train_loss": 6.0 - i / 1000,
                               "learning_rate": 6e-4}
        if i % 50 == 0:
            row["val_loss"] = 6.1 - i / 1000
        history.append(row)
    return TrackedRun(
        source="wandb", ref=f"mcgrof-citizen/gpt2-kv-pruning/{run_id}", run_id=run_id,
        project="gpt2-kv-pruning", entity="mcgrof-citizen", name="gpt2_adamwspam_stepV0",
        config={"model_name": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768,
                "block_size": 1024, "batch_size": 8, "gradient_accumulation": 4,
                "learning_rate": 6e-4, "max_iters": 10000, "max_time": 7200,
                "dataset": "finewebedu", "optimizer": "adamwspam"},
        tags=(), summary={"final/best_val_loss": 3.6154, "_runtime": 7260.0}, history=tuple(history),
        commit="9d98fd2", host="gpu-box", gpu="NVIDIA A100", state="finished")


def test_upstream_run_maps_onto_the_resolved_config() -> None:
    imp = to_imported(upstream_run())
    assert imp.identity == "wandb:gpt2-kv-pruning/6dvbpfuh" and imp.seed == 0
    assert imp.config["model"] == {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024}
    assert imp.config["train"]["budget"] == {"seconds": 7200.0, "iters": 10000, "tokens": None}
    assert imp.config["train"]["batch_size"] == 8 and imp.config["train"]["grad_accum"] == 4
    assert imp.config["data"] == {"dataset": "finewebedu"}
    res = imp.result
    assert res["best_val_loss"] == 3.6154                    # the summary says it
    assert res["effective_batch_tokens"] == 8 * 4 * 1024
    assert res["iters"] == 19990 and res["tokens"] == 19990 * 8 * 4 * 1024
    assert res["device"] == "NVIDIA A100" and res["train_s"] == 7260.0
    names = {n for n, _, _ in imp.metrics}
    assert names == {"train_loss", "lr", "val_loss"}         # learning_rate -> lr, no _step
    assert sum(1 for n, _, _ in imp.metrics if n == "train_loss") == 2000   # not a 500 sample
    assert max(s for _, s, _ in imp.metrics) == 19990        # steps are iterations


def test_rerun_can_never_train_an_imported_config() -> None:
    from workers.train.config import TrainConfig

    with pytest.raises(ValueError, match="imported"):
        TrainConfig.from_dict(to_imported(upstream_run()).config)


def test_another_run_into_the_same_step_supersedes(db_url, attempt, fake_clock) -> None:
    from orchestrator.queue.imports import import_run, imported_identities

    submit_study(db_url, attempt.config, fake_clock)
    with QueueRepo.open(db_url) as repo:
        a = import_run(repo, STUDY, "gpt2", to_imported(upstream_run(50, "aaaa")), fake_clock.now())
        b = import_run(repo, STUDY, "gpt2", to_imported(upstream_run(50, "bbbb")),
                       fake_clock.advance(1))
        assert a.created and b.created and b.superseded == 1 and b.run_id != a.run_id
        assert imported_identities(repo, STUDY) == {"wandb:gpt2-kv-pruning/bbbb": "gpt2"}
        c = import_run(repo, STUDY, "gpt2", to_imported(upstream_run(50, "aaaa")),
                       fake_clock.advance(1))
        assert c.created and c.run_id == a.run_id and c.superseded == 1   # history kept
        results = repo.study_results(STUDY)
    used = [x for x in results.attempts if x.step == "gpt2"]
    assert [x.run_id for x in used] == [a.run_id]
