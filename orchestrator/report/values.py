"""The frozen values a study's analysis produces (`analyze` -> `Report`). Pure data; the
JSON export is `dataclasses.asdict` of these, so a field rename is a format change."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.core.results import AttemptResult

Key = tuple[str, str, str, float, float]
"""(a, b, metric, margin, alpha) of a comparison: one test, however many times the spec
asks for it (a declared pair on a parent link is the parent comparison)."""


@dataclass(frozen=True)
class RunOutcome:
    """One current run (step x seed): its latest attempt and the attempt the analysis uses."""

    step: str
    seed: int
    state: str
    latest: AttemptResult
    used: AttemptResult | None
    """The latest succeeded attempt, or None."""
    attempts: int


@dataclass(frozen=True)
class Flag:
    kind: str
    """failed, diverged, gate_collapsed, no_gradient, throughput, outside_expected,
    spam_clipping, kv_keep_pinned."""
    step: str
    message: str
    seed: int | None = None


@dataclass(frozen=True)
class StepSummary:
    step: str
    parent: str | None
    description: str
    status: str
    """done | partial | pending | failed | not submitted."""
    mean: float | None
    std: float | None
    n: int
    values: tuple[tuple[int, float], ...]
    """(seed, metric value) of each run used."""
    runs: int
    states: tuple[tuple[str, int], ...]
    """Runs by the state of their latest attempt."""
    tokens_per_s: float | None = None
    params_total: float | None = None
    iters: float | None = None
    tokens: float | None = None
    train_s: float | None = None
    commits: tuple[str, ...] = ()
    mechanisms: str = ""


@dataclass(frozen=True)
class Reading:
    """One reading of a comparison: the test of a - b on one basis.

    `budget`: the spec's metric at the end of each run (equal time/iterations/tokens as the
    budget says: a mechanism's speed cost is part of the answer); `tokens`: each run's
    val-loss curve read at the same token count (quality per token); `flops`: at the same
    training FLOPs (when the two sides' flops_per_token differ)."""

    basis: str
    """budget | tokens | flops."""
    metric: str
    verdict: str
    """better | worse | equivalent | inconclusive | pending."""
    at: float | None = None
    """tokens (or FLOPs) at which the curves are read; None for `budget`."""
    delta: float | None = None
    ci: tuple[float, float] | None = None
    """Two-sided interval of the delta at `alpha` (the level after Holm / alpha spending)."""
    p: float | None = None
    """Raw two-sided p."""
    p_adj: float | None = None
    """p after the sequential correction and Holm across the study's comparisons."""
    df: float | None = None
    n_a: int = 0
    n_b: int = 0
    paired: bool = False
    method: str = ""
    seeds_needed: int | None = None
    alpha: float | None = None
    margin: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    label: str
    kind: str
    """parent | pair | control | baseline (a spec root step vs an imported run)."""
    verdict: str
    """better | worse | equivalent | inconclusive | confounded | pending (equal budget)."""
    delta: float | None = None
    delta_pct: float | None = None
    ci: tuple[float, float] | None = None
    p: float | None = None
    p_adj: float | None = None
    df: float | None = None
    n_a: int = 0
    n_b: int = 0
    paired: bool = False
    method: str = ""
    seeds_needed: int | None = None
    alpha: float | None = None
    margin: float = 0.0
    readings: tuple[Reading, ...] = ()
    """budget first, then tokens and flops when they could be read."""
    confounders: tuple[str, ...] = ()
    note: str = ""
    interpretation: str = ""
    """What the readings say together (throughput vs quality) when they disagree."""
    sequential: str = ""
    """The alpha-spending rule applied, when seeds were added after a look; else ''."""
    looks: tuple[int, ...] = ()
    """Seeds per side at each look (look 0 = the spec's seeds) when seeds were added."""

    def reading(self, basis: str) -> Reading | None:
        return next((r for r in self.readings if r.basis == basis), None)


@dataclass(frozen=True)
class Cumulative:
    step: str
    root: str
    chain: tuple[str, ...]
    verdict: str
    """as predicted | short of prediction | beyond prediction | no prediction | pending."""
    delta: float | None = None
    ci: tuple[float, float] | None = None
    predicted: tuple[float, float] | None = None


@dataclass(frozen=True)
class ChainCheck:
    chain: tuple[str, ...]
    monotone: bool | None
    """True: no link is `worse` than its parent; False: one is; None: links pending."""
    breaks: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExpectCheck:
    step: str
    metric: str
    lo: float
    hi: float
    verdict: str
    """inside | below | above | pending | not comparable (runs at another scale)."""
    mean: float | None = None
    n: int = 0
    note: str = ""


@dataclass(frozen=True)
class RuleOutcome:
    step: str
    condition: str
    """e.g. `worse_than baseline`, `diverged`."""
    say: str
    status: str
    """fired | quiet | inconclusive | confounded | pending."""
    evidence: str = ""
    seeds_needed: int | None = None
    """Seeds per side that would decide an inconclusive comparison rule."""


@dataclass(frozen=True)
class Report:
    study: str
    description: str
    metric: str
    noise_floor: float
    steps: tuple[StepSummary, ...]
    comparisons: tuple[Comparison, ...] = ()
    cumulative: tuple[Cumulative, ...] = ()
    chains: tuple[ChainCheck, ...] = ()
    expectations: tuple[ExpectCheck, ...] = ()
    rules: tuple[RuleOutcome, ...] = ()
    flags: tuple[Flag, ...] = ()
    used_attempts: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    """step -> ((seed, attempt_id), ...) of the attempts whose results are used."""
    alpha: float = 0.05
    margin: float = 0.0
    method: str = ""
    """One paragraph: the test, the multiplicity and sequential corrections, the readings."""
    time_budget: bool = False
    """Some run stopped on a time budget (curves.png then puts tokens on the x axis)."""

    def step(self, name: str) -> StepSummary:
        for s in self.steps:
            if s.step == name:
                return s
        raise KeyError(name)

    def comparison(self, a: str, b: str, kind: str | None = None) -> Comparison:
        for c in self.comparisons:
            if c.a == a and c.b == b and kind in (None, c.kind):
                return c
        raise KeyError((a, b))

    def flags_of(self, step: str) -> tuple[Flag, ...]:
        return tuple(f for f in self.flags if f.step == step)

    @property
    def decided(self) -> tuple[int, int]:
        """(decided, total) over the comparisons that have data (not pending)."""
        live = [c for c in self.comparisons if c.verdict != "pending"]
        return sum(c.verdict in ("better", "worse", "equivalent") for c in live), len(live)
