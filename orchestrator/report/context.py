"""One study read for analysis: the typed Spec (validated once), the current runs of each
step and the attempts the analysis uses. Lookup and selection only; no statistics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from orchestrator.core.errors import SpecError
from orchestrator.core.imported import IMPORTED_KEY
from orchestrator.core.results import AttemptResult, StudyResults
from orchestrator.core.spec import Pair, Spec
from orchestrator.core.states import TERMINAL, AttemptState
from orchestrator.report.metrics import lookup, metric_value
from orchestrator.report.values import RunOutcome

TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)


@dataclass(frozen=True)
class Study:
    results: StudyResults
    spec: Spec
    metric: str
    floor: float
    """The spec's noise_floor (0 when unset)."""
    alpha: float
    margin: float
    """Equivalence margin: analysis.margin, else the noise floor."""
    order: tuple[str, ...]
    runs: dict[str, tuple[RunOutcome, ...]]
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)
    """Values computed once per analysis (metric values per step, config signatures)."""

    @classmethod
    def build(cls, results: StudyResults, metric: str | None = None,
              noise_floor: float | None = None) -> Study:
        spec = typed_spec(results)
        an = spec.analysis
        floor = noise_floor if noise_floor is not None else an.noise_floor
        margin = an.margin if an.margin is not None else (floor or 0.0)
        by_run: dict[tuple[str, int], list[AttemptResult]] = {}
        for a in results.attempts:
            by_run.setdefault((a.step, a.seed), []).append(a)
        runs: dict[str, list[RunOutcome]] = {}
        for (step, seed), atts in by_run.items():
            atts.sort(key=lambda a: (a.attempt_no, a.attempt_id))
            ok = [a for a in atts if a.state == AttemptState.SUCCEEDED]
            runs.setdefault(step, []).append(RunOutcome(
                step=step, seed=seed, state=atts[-1].state, latest=atts[-1],
                used=ok[-1] if ok else None, attempts=len(atts)))
        order = list(results.steps)
        order += [s for s in runs if s not in order]
        return cls(results=results, spec=spec, metric=metric or an.metric,
                   floor=float(floor or 0.0), alpha=an.alpha, margin=float(margin),
                   order=tuple(order),
                   runs={s: tuple(sorted(rs, key=lambda r: r.seed)) for s, rs in runs.items()})

    def parent(self, step: str | None) -> str | None:
        s = self.spec.steps.get(step or "")
        return s.parent if s is not None else None

    def used(self, step: str | None) -> tuple[AttemptResult, ...]:
        key = ("used", step)
        if key not in self.memo:
            self.memo[key] = tuple(r.used for r in self.runs.get(step or "", ())
                                   if r.used is not None)
        out: tuple[AttemptResult, ...] = self.memo[key]
        return out

    def values(self, step: str, metric: str) -> dict[int, float]:
        """seed -> metric value of the attempts used (a copy: callers may change it)."""
        key = ("values", step, metric)
        if key not in self.memo:
            self.memo[key] = {a.seed: v for a in self.used(step)
                              if (v := metric_value(a.result, metric)) is not None}
        return dict(self.memo[key])

    def mean(self, step: str | None, metric: str) -> float | None:
        xs = list(self.values(step or "", metric).values())
        return sum(xs) / len(xs) if xs else None

    def signature(self, a: AttemptResult, key: str) -> str:
        """The JSON of one config section of an attempt (what confounders compare)."""
        memo_key = ("sig", a.attempt_id, key)
        if memo_key not in self.memo:
            self.memo[memo_key] = json.dumps(lookup(a.config, key), sort_keys=True)
        out: str = self.memo[memo_key]
        return out

    def expect_of(self, step: str) -> dict[str, tuple[float, float]]:
        s = self.spec.steps.get(step)
        return dict(s.expect) if s is not None else {}

    def root_chain(self, step: str) -> tuple[str, ...]:
        chain = [step]
        seen = {step}
        while (p := self.parent(chain[0])) is not None and p not in seen:
            chain.insert(0, p)
            seen.add(p)
        return tuple(chain)

    def imported(self) -> tuple[str, ...]:
        """Steps whose runs were imported rather than trained here."""
        return tuple(s for s in self.order
                     if any(IMPORTED_KEY in (r.latest.config or {}) for r in self.runs.get(s, ())))

    def roots(self) -> tuple[str, ...]:
        return tuple(s for s, step in self.spec.steps.items() if step.parent is None)

    def pairs(self) -> Sequence[Pair]:
        return self.spec.analysis.pairs

    def why_missing(self, step: str) -> str:
        runs = self.runs.get(step, ())
        if step not in self.order:
            return "is not a step of this study"
        if not runs:
            return "not submitted"
        states = ",".join(sorted({r.state for r in runs}))
        return f"has no succeeded run ({states})"

    def finished(self, steps: Sequence[str]) -> bool:
        runs = [r for s in steps for r in self.runs.get(s, ())]
        return bool(runs) and all(r.state in TERMINAL_NAMES for r in runs)


def typed_spec(results: StudyResults) -> Spec:
    """The study's stored spec as a typed Spec; a stored spec that no longer validates (an
    older recip wrote it) is a SpecError that says how to fix it."""
    try:
        return Spec.model_validate(results.spec or {})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "spec"
        raise SpecError(
            f"study {results.name!r}: its stored spec does not validate at {where}: "
            f"{first.get('msg')} (re-submit the study's spec with `recip queue submit`)"
        ) from None
