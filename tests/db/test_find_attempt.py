"""QueueRepo.find_attempt: the attempt `recip logs` shows, read in the queue layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli.app import run
from orchestrator.core.errors import UnknownStep, UnknownStudy
from orchestrator.queue.repo import QueueRepo

ROOT = Path(__file__).resolve().parents[2]


def test_find_attempt_picks_the_lowest_seed_and_names_what_exists(sqlite_url: str) -> None:
    assert run(["queue", "submit", str(ROOT / "ablations" / "smoke.yaml"), "--no-check",
                "--db", sqlite_url]) == 0
    with QueueRepo.open(sqlite_url) as repo:
        ref = repo.find_attempt("smoke", "V1")
        assert (ref.seed, ref.attempt_no, ref.state, ref.artifact_dir) == (1, 1, "queued", None)
        assert repo.find_attempt("smoke", "V1", seed=2).seed == 2
        with pytest.raises(UnknownStep, match=r"no step 'V9' in study smoke \(steps: V0, V1\)"):
            repo.find_attempt("smoke", "V9")
        with pytest.raises(UnknownStep, match=r"has no seed 7 \(seeds: 1, 2\)"):
            repo.find_attempt("smoke", "V1", seed=7)
        with pytest.raises(UnknownStep, match="has no attempt 3"):
            repo.find_attempt("smoke", "V1", attempt=3)
        with pytest.raises(UnknownStudy):
            repo.find_attempt("nope", "V1")
