"""`recip show` text: newest run and attempt first, each config as its difference from the
parent step's current config (issue 13 #8)."""

from __future__ import annotations

from typing import Any

from orchestrator.cli.render.history import config_diff, show_lines
from orchestrator.queue.history import AttemptRecord, RunHistory, StudyHistory

BASE = {"study": "s", "step": "V0", "seed": 1,
        "model": {"attn": "causal", "mlp": "gelu", "mlp_knobs": {}, "n_embd": 128},
        "train": {"lr": 6e-4, "budget": {"seconds": 30.0}}}


def child(**train: Any) -> dict[str, Any]:
    return {**BASE, "step": "V1", "model": {**BASE["model"], "mlp": "rmlp", "mlp_knobs": {"R_ff": 64}},
            "train": {**BASE["train"], **train}}


def attempt(no: int, state: str) -> AttemptRecord:
    return AttemptRecord(attempt_id=10 + no, attempt_no=no, state=state, failure_kind=None,
                         exit_code=None, error_type=None, error_message=None, code_sha=None,
                         code_dirty=None, diff_hash=None, worker_id=None, host=None, gpu=None,
                         pid=None, artifact_dir=None, env={}, result={}, created_at=None,
                         claimed_at=None, started_at=None, finished_at=None)


def attempt_json(run: RunHistory, a: AttemptRecord, history: StudyHistory) -> dict[str, Any]:
    return {"advice": None, "result": {}}


def test_config_diff_lists_only_what_differs_from_the_parent() -> None:
    assert config_diff(child(), BASE) == ["model.mlp gelu -> rmlp", 'model.mlp_knobs.R_ff <unset> -> 64']
    assert config_diff(BASE, None)[0] == 'model.attn causal'  # no parent: every leaf once
    assert config_diff(BASE, BASE) == []


def test_show_lists_the_newest_run_and_attempt_first_with_config_diffs() -> None:
    old = RunHistory(run_id=2, step="V1", seed=1, config_hash="a" * 64, config=child(),
                     max_attempts=3, current=False, attempts=(attempt(1, "succeeded"),), parent="V0")
    new = RunHistory(run_id=5, step="V1", seed=1, config_hash="b" * 64, config=child(lr=1e-3),
                     max_attempts=3, current=True,
                     attempts=(attempt(1, "failed"), attempt(2, "succeeded")), parent="V0")
    history = StudyHistory(name="s", spec_hash="c" * 64, code_policy="head", pinned_sha=None,
                           source=None, runs=(old, new))
    lines = show_lines(history, [old, new], {"V0": BASE}, attempt_json)
    heads = [line for line in lines if line.startswith("V1 seed")]
    assert heads[0].startswith("V1 seed 1   run 5   config bbbbbbbbbbbb")
    assert heads[1].startswith("V1 seed 1   run 2 (superseded by a changed config)")
    at = lines.index(heads[0])
    assert lines[at + 1] == "  config vs V0: model.mlp gelu -> rmlp"
    assert lines[at + 2:at + 4] == ["    model.mlp_knobs.R_ff <unset> -> 64", "    train.lr 0.0006 -> 0.001"]
    attempts = [line.split()[1] for line in lines[at:] if line.startswith("  attempt")]
    assert attempts[:2] == ["2", "1"]
    assert all(len(line) < 200 for line in lines)  # no one-line config dump
