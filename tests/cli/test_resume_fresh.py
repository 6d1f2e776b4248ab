"""`recip resume --fresh STEPS` (the new attempts carry no checkpoint), the checkpoint-fallback
event and its `recip show` line, and `--code-root` that names no checkout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.app import run
from orchestrator.core.states import AttemptState, FailureKind
from orchestrator.queue.repo import QueueRepo
from tests.cli.test_resume import LEASE, checkout  # noqa: F401 - the fixture

FALLBACK = {"skipped": [{"path": "/runs/wt/V0/seed1/attempt2/checkpoint.pt",
                         "error": "checkpoint ... cannot be read (...)"}],
            "resumed_from": None, "fresh_start": True}


def _run_attempt(repo: QueueRepo, clock: Any, *, result: dict[str, Any] | None = None,
                 kind: FailureKind = FailureKind.EXCEPTION) -> Any:
    claimed = repo.claim("w1", clock.now(), LEASE)
    assert claimed is not None
    repo.start(claimed.attempt_id, "w1", clock.now(), LEASE,
               artifact_dir=f"/runs/attempt{claimed.attempt_no}", code_sha="ab" * 20,
               code_dirty=False, diff_hash=None, host="box", gpu=None, pid=1, env={})
    clock.advance(5)
    repo.finish(claimed.attempt_id, "w1", clock.now(), AttemptState.FAILED, failure_kind=kind,
                exit_code=1, error_type="CheckpointCorrupt", error_message="does not fit",
                result=result or {"status": "failed"})
    clock.advance(1)
    return claimed


def test_resume_fresh_queues_attempts_that_ignore_earlier_checkpoints(
        repo: QueueRepo, db_url: str, plan_factory: Any, fake_clock: Any, checkout: Path,  # noqa: F811
        capfd: pytest.CaptureFixture[str]) -> None:
    repo.submit(plan_factory(steps=("V0", "V1"), max_attempts=1), fake_clock.now())
    first = _run_attempt(repo, fake_clock)
    assert first.previous_artifact_dir is None
    _run_attempt(repo, fake_clock)  # V1
    # a plain resume carries the checkpoint of the attempt before
    assert run(["resume", "study", "--steps", "V1", "--code-root", str(checkout),
                "--db", db_url]) == 0
    again = _run_attempt(repo, fake_clock)
    assert (again.step, again.previous_artifact_dir) == ("V1", "/runs/attempt1")
    capfd.readouterr()
    # --fresh: the new attempt of V0 starts from scratch
    assert run(["resume", "study", "--fresh", "V0", "--code-root", str(checkout),
                "--db", db_url]) == 0
    out, err = capfd.readouterr()
    assert "V0 seed 1: #1 failed:exception -> attempt 2 queued" in out
    assert "from scratch (--fresh)" in out and "V1" not in out
    fresh = repo.claim("w1", fake_clock.now(), LEASE)
    assert fresh is not None and (fresh.step, fresh.attempt_no) == ("V0", 2)
    assert fresh.previous_artifact_dir is None
    assert [e["kind"] for e in repo.events(fresh.attempt_id)][:3] == [
        "queued", "fresh_start", "claimed"]


def test_fresh_needs_steps_and_agrees_with_steps(repo: QueueRepo, db_url: str,
                                                 plan_factory: Any, fake_clock: Any,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    repo.submit(plan_factory(steps=("V0", "V1")), fake_clock.now())
    assert run(["resume", "study", "--fresh", ",", "--db", db_url]) == 2
    assert "name at least one step, e.g. --fresh V1" in capfd.readouterr().err
    assert run(["resume", "study", "--fresh", "V0", "--steps", "V1", "--db", db_url]) == 2
    assert "--fresh STEPS already selects the steps; drop --steps" in capfd.readouterr().err


def test_a_checkpoint_fallback_is_an_event_and_a_show_line(
        repo: QueueRepo, db_url: str, plan_factory: Any, fake_clock: Any,
        capfd: pytest.CaptureFixture[str]) -> None:
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    claimed = _run_attempt(repo, fake_clock, result={"status": "failed",
                                                     "checkpoint_fallback": FALLBACK})
    events = {e["kind"]: e["payload"] for e in repo.events(claimed.attempt_id)}
    assert events["checkpoint_fallback"] == FALLBACK
    assert run(["show", "study", "V0", "--db", db_url]) == 0
    out = capfd.readouterr().out
    assert ("    checkpoint: unreadable /runs/wt/V0/seed1/attempt2/checkpoint.pt: started from "
            "scratch") in out.splitlines()


def test_code_root_must_exist(repo: QueueRepo, db_url: str, plan_factory: Any,
                              fake_clock: Any, capfd: pytest.CaptureFixture[str]) -> None:
    """(A directory outside git stays allowed, with a warning: test_resume_outside_git.)"""
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    _run_attempt(repo, fake_clock)
    before = repo.history("study")
    assert run(["resume", "study", "--code-root", "/nonexistent", "--db", db_url]) == 1
    out, err = capfd.readouterr()
    assert out == "" and err == ("error: --code-root /nonexistent: no such directory; name the "
                                 "checkout the workers run (or drop --code-root for this one)\n")
    assert repo.history("study") == before
