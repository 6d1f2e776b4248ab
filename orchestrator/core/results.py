"""Read models for the analysis: what `QueueRepo.study_results()` returns and
`orchestrator.report` consumes. Pure values; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AttemptResult:
    """One attempt of a current run, with what its trainer reported (result.json)."""

    study: str
    step: str
    seed: int
    run_id: int
    attempt_id: int
    attempt_no: int
    state: str
    config_hash: str
    config: dict[str, Any]
    result: dict[str, Any] = field(default_factory=dict)
    """result.json as the worker stored it ({} when the attempt wrote none)."""
    failure_kind: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    code_sha: str | None = None
    code_dirty: bool | None = None
    diff_hash: str | None = None
    device: str | None = None
    host: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class SeedLook:
    """One seed-adding look at a study (`recip seeds add`, one round of `--until-decided`).

    The spec's own seeds are the pre-registered sample (look 0, not recorded here). Each
    later look records when it was taken, which steps got more seeds, which seeds were added
    and the per-side cap (`max_seeds`, None when uncapped). The report analyses a comparison
    whose sample grew after a look with an alpha-spending rule across its looks, never as if
    the sample had been fixed in advance.

    A look with no `seeds` is a declared design: recorded before the first analysis (`recip
    run --until-decided --max-seeds N` at submit), it says that `steps` may get seeds up to
    `max_seeds`, so look 0 of their comparisons is already a sequential look (tested at the
    alpha its information fraction spends, not at the full alpha)."""

    at: datetime
    steps: tuple[str, ...]
    seeds: tuple[int, ...]
    max_seeds: int | None = None


@dataclass(frozen=True)
class StudyResults:
    """Everything the analysis of one study needs, in one read.

    `attempts` holds, for each current run (the newest run of each step x seed), every
    attempt in attempt order; the analysis uses the latest succeeded one and shows the rest
    as history."""

    name: str
    description: str
    spec: dict[str, Any]
    spec_hash: str
    steps: tuple[str, ...]
    """Step ids in spec order (including steps with no attempt yet)."""
    attempts: tuple[AttemptResult, ...] = ()
    looks: tuple[SeedLook, ...] = ()
    """Seed-adding looks in time order (filled from the database's events)."""


MetricSeries = dict[int, dict[str, list[tuple[int, float]]]]
"""attempt_id -> metric name -> [(iteration, value), ...] in iteration order."""
