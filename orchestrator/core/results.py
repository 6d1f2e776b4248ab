"""Read models for the analysis: what `QueueRepo.study_results()` returns and
`orchestrator.report` consumes. Pure values; no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    overrides: dict[str, Any] = field(default_factory=dict)
    """The command-line overrides of the submit that made the current runs (`--preset`,
    `--time`, ..., `run_scale`); {} when the study runs as written."""


def overrides_lines(overrides: dict[str, Any], spec: dict[str, Any] | None = None) -> list[str]:
    """Human lines for the overrides a study ran under: the flags, the preset's run scale,
    and, when the size or budget was overridden, that the spec's goal text and expectations
    were written for the spec's own scale. [] when the study runs as written."""
    flags = []
    for key, value in overrides.items():
        if key == "run_scale":
            continue
        if key == "set":
            flags += [f"--set {path}={v}" for path, v in value.items()]
        else:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            flags.append(f"--{key.replace('_', '-')} {shown}")
    lines = [f"overrides: {' '.join(flags)}"] if flags else []
    scale = overrides.get("run_scale")
    if scale:
        lines.append(f"run scale of preset {overrides.get('preset')}: "
                     + " ".join(f"{k}={v}" for k, v in scale.items()))
    if any(k in overrides for k in ("preset", "time", "max_iters", "dataset")):
        model = ((spec or {}).get("defaults") or {}).get("model") or {}
        budget = (((spec or {}).get("defaults") or {}).get("train") or {}).get("budget") or {}
        written = ", ".join(x for x in (
            f"preset {model['preset']}" if model.get("preset") else "",
            " ".join(f"{k} {v}" for k, v in budget.items() if v is not None)) if x)
        lines.append("the spec's description, goals and expectations were written for its own "
                     f"scale{f' ({written})' if written else ''}, not for this run")
    return lines


MetricSeries = dict[int, dict[str, list[tuple[int, float]]]]
"""attempt_id -> metric name -> [(iteration, value), ...] in iteration order."""


@dataclass(frozen=True)
class SeriesSummary:
    """What the report's series flags read of a mechanism-stat or gradient series, over
    its finite points: how many, the largest magnitude, the last one. The database computes
    it (`queue.reads.metric_summaries`) so `recip report` does not move every point of
    stats/... and grad/... to Python; `summarise` below is the same in Python."""

    n: int
    max_abs: float
    last_step: int
    last: float


MetricSummaries = dict[int, dict[str, SeriesSummary]]
"""attempt_id -> metric name -> its SeriesSummary (names with a finite point only)."""


def summarise(points: Sequence[tuple[int, float]]) -> SeriesSummary | None:
    """The SeriesSummary of a series' finite points (None when it has none): the definition
    `queue.reads.metric_summaries` computes in SQL."""
    finite = [(it, v) for it, v in points if math.isfinite(v)]
    if not finite:
        return None
    last_step, last = max(finite)
    return SeriesSummary(n=len(finite), max_abs=max(abs(v) for _, v in finite),
                         last_step=last_step, last=last)
