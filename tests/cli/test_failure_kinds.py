"""Failures are classified where they happen and shown with advice: a step whose model
cannot be allocated ends `failed: oom`, a step whose loss goes NaN ends `failed: diverged`;
neither is retried automatically (the same code would fail the same way); `recip status`
and `recip show` say which and what to do. Real trainer processes, a real WorkerLoop, SQLite.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.cli.app import run
from orchestrator.cli.queue_cmd import build_plan
from orchestrator.core.states import FailureKind
from orchestrator.queue.repo import QueueRepo
from tests.e2e.helpers import CORPUS
from workers.loop import WorkerLoop, WorkerSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _spec(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    path = tmp_path / "kinds.yaml"
    path.write_text(f"""\
study: kinds
defaults:
  model: {{n_layer: 1, n_head: 2, n_embd: 32, block_size: 32}}
  data: {{dataset: 'text:{corpus}', tokenizer: byte}}
  train: {{budget: {{iters: 30}}, batch_size: 4, warmup: 1, eval_every: 10, eval_batches: 2,
           log_every: 1}}
  optimizer: {{name: adamw}}
  wandb: {{mode: disabled}}
steps:
  huge: {{description: a model far larger than this host's memory,
          model: {{n_layer: 1, n_head: 1, n_embd: 1073741824, block_size: 32}}}}
  nan: {{description: an absurd learning rate, train: {{lr: 1.0e+12, warmup: 0}}}}
""")
    return path


def test_oom_and_divergence_are_classified(tmp_path: Path, sqlite_url: str,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RECIP_DATA_DIR", str(tmp_path / "data"))
    with QueueRepo.open(sqlite_url) as repo:
        repo.submit(build_plan(_spec(tmp_path)), datetime.now(UTC))
        settings = WorkerSettings(worker_id="box:cpu0", runs_dir=tmp_path / "runs", lease_s=30,
                                  poll_s=0.2, idle_poll_s=0.2, until_empty=True, study="kinds")
        report = WorkerLoop(repo, settings).run()
        assert sorted((o.step, o.state, o.failure_kind) for o in report.outcomes) == [
            ("huge", "failed", "oom"), ("nan", "failed", "diverged")]
        history = {r.step: r.attempts for r in repo.history("kinds").runs}
    assert [len(a) for a in history.values()] == [1, 1]  # no automatic retry
    huge, nan = history["huge"][0], history["nan"][0]
    assert huge.error_type == "RuntimeError" and "allocate" in (huge.error_message or "")
    assert nan.error_type == "Diverged" and nan.result["status"] == "diverged"

    assert run(["status", "kinds", "--db", sqlite_url]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "failed:oom" in rows["huge"] and "failed:diverged" in rows["nan"]
    for step, kind in (("huge", FailureKind.OOM), ("nan", FailureKind.DIVERGED)):
        assert run(["show", "kinds", step, "--db", sqlite_url]) == 0
        out = capsys.readouterr().out
        assert f"  attempt 1  failed: {kind}" in out and f"    advice: {kind.advice}" in out
        assert run(["show", "kinds", step, "--json", "--db", sqlite_url]) == 0
        [shown] = json.loads(capsys.readouterr().out)
        assert shown["failure_kind"] == kind.value and shown["advice"] == kind.advice
