"""What a validated spec becomes: a StudyPlan of RunPlans (one per step x seed).

Produced by `orchestrator.core.resolve`, consumed by `QueueRepo.submit` and by the plan
renderer. Frozen values; the config dicts are the resolved run configs of
docs/architecture.md and must not be mutated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunPlan:
    step: str
    seed: int
    config: dict[str, Any]
    config_hash: str
    parent: str | None = None
    description: str = ""
    priority: int = 0
    max_attempts: int = 3
    budget_seconds: float | None = None
    """Training-time budget, for GPU-hour estimates and the worker's timeout."""


@dataclass(frozen=True)
class StudyPlan:
    name: str
    description: str
    spec_hash: str
    spec: dict[str, Any]
    """The validated spec as JSON (analysis pairs, rules, expectations live here)."""
    runs: tuple[RunPlan, ...]
    source: str | None = None
    code_policy: str = "head"
    """`head`: attempts run whatever commit the worker has; `pinned`: only `pinned_sha`."""
    pinned_sha: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    """Command-line overrides applied (--preset, --time, ...); part of every run's identity."""

    @property
    def controls(self) -> frozenset[frozenset[str]]:
        """The step pairs the spec declares as intended controls (`analysis.pairs` with
        `control: true`, e.g. an A/A pair of steps that differ only in name), unordered."""
        analysis = self.spec.get("analysis")
        pairs = analysis.get("pairs") if isinstance(analysis, dict) else None
        return frozenset(frozenset((str(p.get("a")), str(p.get("b"))))
                         for p in pairs or () if isinstance(p, dict) and p.get("control"))

    @property
    def steps(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.runs:
            seen.setdefault(r.step, None)
        return list(seen)
