"""Seeds spent where they decide: the planning and the loop behind `recip run FILE
--until-decided [--max-seeds N]`, and the one-line decision summary `recip status` and the
report print. Pure: no typer, no database, no workers (the caller passes those in as
functions), so the loop is tested with a fake round.

A comparison is still open when its verdict is `inconclusive`; more seeds are planned for it
only when its `seeds_needed` (seeds per side for power 0.8 at the observed delta and spread,
from `orchestrator.report.stats.compare`) fits under the cap. Both of its steps get the
seeds they lack up to that number; a step in several open comparisons gets the most any of
them needs. Confounded comparisons (different code on each side) and ones whose need cannot
be estimated are not helped by seeds and are reported as such.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from orchestrator.core.results import StudyResults

OPEN = "inconclusive"
DEFAULT_MAX_SEEDS = 8
MAX_ROUNDS = 50
"""A guard only: the cap bounds the rounds already (each round adds at least one seed)."""


class ComparisonLike(Protocol):
    """What the planning reads of one comparison of the report (equal-budget reading,
    verdict after the study's corrections)."""

    @property
    def a(self) -> str: ...
    @property
    def b(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def n_a(self) -> int: ...
    @property
    def n_b(self) -> int: ...
    @property
    def seeds_needed(self) -> int | None: ...


class ReportLike(Protocol):
    @property
    def comparisons(self) -> Sequence[ComparisonLike]: ...


@dataclass(frozen=True)
class Open:
    """One comparison that is not decided yet, and what more seeds would do for it."""

    label: str
    a: str
    b: str
    verdict: str
    n: int
    """Seeds per side it has now (the smaller side)."""
    needed: int | None
    """Seeds per side it needs (None: cannot be estimated)."""

    @property
    def more(self) -> int | None:
        return None if self.needed is None else max(self.needed - self.n, 1)


@dataclass(frozen=True)
class Decision:
    """Where a study's comparisons stand."""

    total: int
    decided: int
    open: tuple[Open, ...]

    @property
    def all_decided(self) -> bool:
        return self.decided == self.total


def decision(report: ReportLike) -> Decision:
    """How many of the report's comparisons are decided, and the open ones."""
    comps = list(report.comparisons)
    still = tuple(
        Open(label=c.label or f"{c.a} vs {c.b}", a=c.a, b=c.b, verdict=c.verdict,
             n=min(c.n_a, c.n_b), needed=c.seeds_needed if c.verdict == OPEN else None)
        for c in comps if c.verdict in (OPEN, "confounded", "pending"))
    return Decision(total=len(comps), decided=len(comps) - len(still), open=still)


def plan_more_seeds(report: ReportLike, cap: int,
                    steps: Sequence[str] | None = None) -> dict[str, int]:
    """step -> how many more seeds to add: for every inconclusive comparison whose
    `seeds_needed` is at most `cap`, each of its sides (among `steps`, the study's own
    steps, when given: an imported baseline gets none) up to that many seeds."""
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    known = set(steps) if steps is not None else None
    out: dict[str, int] = {}
    for c in report.comparisons:
        if c.verdict != OPEN or c.seeds_needed is None or c.seeds_needed > cap:
            continue
        target = max(c.seeds_needed, min(c.n_a, c.n_b) + 1)  # at least one more seed
        for step, n in ((c.a, c.n_a), (c.b, c.n_b)):
            if known is not None and step not in known:
                continue
            more = min(target, cap) - n
            if more > 0:
                out[step] = max(out.get(step, 0), more)
    return out


def hours_per_seed(results: StudyResults) -> dict[str, float]:
    """step -> GPU-hours one more seed costs: the run's time budget, else the mean training
    time its finished attempts took (an iteration or token budget)."""
    budget: dict[str, float] = {}
    took: dict[str, list[float]] = {}
    for a in results.attempts:
        train = a.config.get("train")
        b = train.get("budget") if isinstance(train, dict) else None
        seconds = b.get("seconds") if isinstance(b, dict) else None
        if isinstance(seconds, int | float) and seconds > 0:
            budget.setdefault(a.step, float(seconds))
        spent = a.result.get("train_s")
        if a.state == "succeeded" and isinstance(spent, int | float) and math.isfinite(spent):
            took.setdefault(a.step, []).append(float(spent))
    out = {s: v / 3600.0 for s, v in budget.items()}
    for s, xs in took.items():
        out.setdefault(s, sum(xs) / len(xs) / 3600.0)
    return out


def _fmt_hours(h: float) -> str:
    return f"{h:.1f}" if h >= 0.1 else f"{h:.2f}" if h >= 0.01 else f"{h:.3f}"


def describe_open(o: Open, hours: Mapping[str, float], cap: int | None = None) -> str:
    """`V4 vs V3 needs ~4 more seeds per side (about 0.8 GPU-hours)`, or why seeds won't do."""
    if o.verdict == "confounded":
        return f"{o.label} is confounded (different code on each side): more seeds do not help"
    if o.verdict == "pending":
        return f"{o.label} is waiting for runs"
    if o.needed is None or o.more is None:
        return f"{o.label} is inconclusive; the seeds it needs cannot be estimated yet"
    per = hours.get(o.a, 0.0) + hours.get(o.b, 0.0)
    cost = f" (about {_fmt_hours(o.more * per)} GPU-hours)" if per > 0 else ""
    over = f", over the --max-seeds {cap} cap" if cap is not None and o.needed > cap else ""
    return (f"{o.label} needs ~{o.more} more seed{'s' if o.more != 1 else ''} per side"
            f" ({o.n + o.more} in all){over}{cost}")


def decision_line(report: ReportLike, hours: Mapping[str, float], *,
                  cap: int | None = None, most: int = 3) -> str | None:
    """`4 of 6 comparisons decided; V4 vs V3 needs ~4 more seeds per side (about 0.8
    GPU-hours)`; None for a study without comparisons or none with results yet."""
    d = decision(report)
    if d.total == 0 or all(o.verdict == "pending" for o in d.open) and d.decided == 0:
        return None
    head = f"{d.decided} of {d.total} comparison{'s' if d.total != 1 else ''} decided"
    if not d.open:
        return head
    shown = sorted(d.open, key=lambda o: (o.more is None, o.more or 0, o.label))
    parts = [describe_open(o, hours, cap) for o in shown[:most]]
    if len(shown) > most:
        parts.append(f"{len(shown) - most} more open")
    return "; ".join([head, *parts])


# --- the loop -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stopped:
    """Why `--until-decided` stopped, after how many seed-adding rounds."""

    reason: str
    rounds: int
    all_decided: bool
    interrupted: bool = False


def until_decided(*, analyse: Callable[[], ReportLike], steps: Callable[[], Sequence[str]],
                  add: Callable[[Mapping[str, int]], Mapping[str, Sequence[int]]],
                  run_round: Callable[[], bool], cap: int, hours: Callable[[], Mapping[str, float]],
                  say: Callable[[str], None], max_rounds: int = MAX_ROUNDS) -> Stopped:
    """After the first round (already run): analyse, add the planned seeds (`add` returns
    step -> seeds it added), run a round (`run_round` returns False when interrupted);
    repeat until every comparison is decided, nothing left fits under `cap`, or nothing
    could be added."""
    rounds = 0
    while True:
        report = analyse()
        d = decision(report)
        if d.total == 0:
            return Stopped("the study has no comparisons to decide", rounds, True)
        if d.all_decided:
            return Stopped(f"all {d.total} comparisons decided", rounds, True)
        plan = plan_more_seeds(report, cap, steps())
        if not plan or rounds >= max_rounds:
            why = "; ".join(describe_open(o, hours(), cap) for o in d.open)
            return Stopped(f"{d.decided} of {d.total} comparisons decided and more seeds "
                           f"under --max-seeds {cap} cannot decide the rest: {why}",
                           rounds, False)
        added = {s: tuple(v) for s, v in add(plan).items() if v}
        if not added:
            return Stopped(f"{d.decided} of {d.total} comparisons decided; every open one "
                           f"is at the --max-seeds {cap} cap", rounds, False)
        rounds += 1
        say(f"round {rounds + 1}: {decision_line(report, hours(), cap=cap)}; adding "
            + ", ".join(f"{s} +{len(v)}" for s, v in added.items()))
        if not run_round():
            return Stopped("interrupted", rounds, False, interrupted=True)


def study_decision(results: StudyResults, *, cap: int | None = None) -> str | None:
    """The decision line of one study (`4 of 6 comparisons decided; ...`), from the final
    metrics only (no metric series: the equal-budget verdicts), or None without comparisons."""
    from orchestrator.report.analysis import analyze

    return decision_line(analyze(results), hours_per_seed(results), cap=cap)
