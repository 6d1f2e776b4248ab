"""Helpers for the worker tests (the databases come from tests/conftest.py: `repo`)."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.core.plan import RunPlan, StudyPlan


def plan(study: str = "wt", steps: tuple[str, ...] = ("V0",), seeds: tuple[int, ...] = (1,),
         budget_s: float | None = 30.0, max_attempts: int = 3) -> StudyPlan:
    """A small study whose configs the fake runner reads (train.log_every, budget)."""
    runs = []
    for step in steps:
        for seed in seeds:
            config = {"study": study, "step": step, "seed": seed,
                      "train": {"log_every": 10, "budget": {"seconds": budget_s},
                                "max_iters": 1000}}
            runs.append(RunPlan(step=step, seed=seed, config=config,
                                config_hash=f"{step}-{seed}-{budget_s}",
                                budget_seconds=budget_s, max_attempts=max_attempts))
    return StudyPlan(name=study, description="worker tests", spec_hash="s" * 16,
                     spec={"study": study}, runs=tuple(runs))


def utc(seconds: float = 0.0) -> datetime:
    from datetime import timedelta

    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
