"""The planning behind `--until-decided`: seeds only for open comparisons whose need fits
under the cap, the one-line decision summary, and the loop's stop reasons (a fake round)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from orchestrator.cli.decide import (
    decision_line,
    hours_per_seed,
    plan_more_seeds,
    until_decided,
)
from orchestrator.core.results import AttemptResult, StudyResults


@dataclass(frozen=True)
class C:
    a: str
    b: str
    verdict: str
    n_a: int = 2
    n_b: int = 2
    seeds_needed: int | None = None
    label: str = ""


@dataclass(frozen=True)
class R:
    comparisons: tuple[C, ...]


def test_seeds_go_only_to_open_comparisons_that_fit_under_the_cap():
    rep = R((
        C("V1", "V0", "better"),
        C("V2", "V0", "inconclusive", seeds_needed=5),
        C("V3", "V2", "inconclusive", seeds_needed=3),
        C("V4", "V3", "inconclusive", seeds_needed=40),   # over the cap
        C("V5", "V0", "inconclusive", seeds_needed=None),  # cannot be estimated
        C("V6", "V0", "equivalent"),
        C("V7", "V0", "confounded", seeds_needed=None),
    ))
    assert plan_more_seeds(rep, cap=8) == {"V2": 3, "V0": 3, "V3": 1}
    assert plan_more_seeds(rep, cap=4) == {"V3": 1, "V2": 1}
    assert plan_more_seeds(rep, cap=50)["V4"] == 38


def test_an_imported_baseline_side_gets_no_seeds_and_a_met_need_still_gets_one_more():
    rep = R((C("V0", "gpt2-imported", "inconclusive", n_a=3, n_b=3, seeds_needed=3),))
    assert plan_more_seeds(rep, cap=8, steps=["V0"]) == {"V0": 1}
    assert plan_more_seeds(R((C("V1", "V0", "inconclusive", seeds_needed=2),)), cap=2) == {}
    with pytest.raises(ValueError):
        plan_more_seeds(rep, cap=0)


def test_the_decision_line_names_the_open_comparison_and_its_cost():
    rep = R((C("V1", "V0", "better"), C("V2", "V0", "worse"), C("V3", "V0", "equivalent"),
             C("V5", "V1", "better"), C("V4", "V3", "inconclusive", seeds_needed=6,
                                        label="V4 vs V3"),
             C("V6", "V0", "inconclusive", seeds_needed=None, label="V6 vs V0")))
    hours = {"V4": 0.1, "V3": 0.1}
    assert decision_line(rep, hours) == (
        "4 of 6 comparisons decided; V4 vs V3 needs ~4 more seeds per side (6 in all) "
        "(about 0.8 GPU-hours); V6 vs V0 is inconclusive; the seeds it needs cannot be "
        "estimated yet")
    assert decision_line(R(()), {}) is None
    assert decision_line(R((C("V1", "V0", "pending"),)), {}) is None  # nothing ran yet
    assert decision_line(R((C("V1", "V0", "better"),)), {}) == "1 of 1 comparison decided"
    assert "over the --max-seeds 5 cap" in (decision_line(rep, hours, cap=5) or "")


def _attempt(step: str, seed: int, seconds: float | None, train_s: float) -> AttemptResult:
    return AttemptResult(
        study="s", step=step, seed=seed, run_id=seed, attempt_id=seed, attempt_no=1,
        state="succeeded", config_hash="h",
        config={"train": {"budget": {"seconds": seconds, "iters": 100}}},
        result={"train_s": train_s})


def test_hours_per_seed_from_the_time_budget_else_the_measured_time():
    res = StudyResults(name="s", description="", spec={}, spec_hash="x", steps=("V0", "V1"),
                       attempts=(_attempt("V0", 1, 1800.0, 1700.0),
                                 _attempt("V1", 1, None, 3600.0),
                                 _attempt("V1", 2, None, 7200.0)))
    assert hours_per_seed(res) == {"V0": 0.5, "V1": 1.5}


class FakeStudy:
    """Comparisons that become decided once both sides have `decides_at` seeds."""

    def __init__(self, needs: dict[tuple[str, str], int | None], seeds: int = 2) -> None:
        self.needs = needs
        self.seeds = {s: seeds for pair in needs for s in pair}
        self.rounds = 0
        self.added: list[dict[str, int]] = []

    def analyse(self) -> R:
        out = []
        for (a, b), need in self.needs.items():
            n = min(self.seeds[a], self.seeds[b])
            done = need is not None and n >= need
            out.append(C(a, b, "better" if done else "inconclusive", self.seeds[a],
                         self.seeds[b], None if done else need))
        return R(tuple(out))

    def add(self, plan: dict[str, int]) -> dict[str, list[int]]:
        self.added.append(dict(plan))
        got = {}
        for s, n in plan.items():
            got[s] = list(range(self.seeds[s] + 1, self.seeds[s] + n + 1))
            self.seeds[s] += n
        return got

    def run_round(self) -> bool:
        self.rounds += 1
        return True


def _loop(study: FakeStudy, cap: int, said: list[str]):
    return until_decided(analyse=study.analyse, steps=lambda: list(study.seeds),
                         add=study.add, run_round=study.run_round, cap=cap,
                         hours=lambda: {}, say=said.append)


def test_the_loop_adds_seeds_until_decided_and_says_why_it_stopped():
    study = FakeStudy({("V1", "V0"): 4, ("V2", "V0"): 3})
    said: list[str] = []
    stop = _loop(study, cap=8, said=said)
    assert stop.all_decided and stop.reason == "all 2 comparisons decided"
    assert study.added == [{"V1": 2, "V0": 2, "V2": 1}] and stop.rounds == study.rounds == 1
    assert said[0].startswith("round 2: 0 of 2 comparisons decided; ")


def test_the_loop_stops_at_the_cap_and_names_what_stays_open():
    study = FakeStudy({("V1", "V0"): 3, ("V2", "V0"): 12})
    stop = _loop(study, cap=6, said=[])
    assert not stop.all_decided and stop.rounds == 1
    assert stop.reason.startswith("1 of 2 comparisons decided and more seeds under "
                                  "--max-seeds 6 cannot decide the rest: V2 vs V0 needs ~")
    assert "over the --max-seeds 6 cap" in stop.reason
    interrupted = FakeStudy({("V1", "V0"): 3})
    interrupted.run_round = lambda: False  # type: ignore[method-assign]
    assert _loop(interrupted, cap=6, said=[]).interrupted


def test_a_study_already_decided_adds_nothing():
    study = FakeStudy({("V1", "V0"): 2})
    stop = _loop(study, cap=6, said=[])
    assert stop.all_decided and stop.rounds == 0 and study.added == []


def test_the_loop_under_a_declared_design_keeps_a_a_false_decisions_within_alpha():
    """Monte Carlo of --until-decided on one paired A/A comparison (2 pre-registered seeds,
    cap 8, a large shared per-seed component): each look at the level the declared design
    spends (stats.sequential_alpha), seeds from plan_more_seeds. The rate of `better` /
    `worse` over all looks stays within alpha + 3 Monte Carlo s.e.; testing every look at
    the full alpha instead (optional stopping) is visibly worse."""
    import numpy as np

    from orchestrator.report.stats import compare, sequential_alpha

    cap, trials, alpha = 8, 1500, 0.05

    def trial(rng: np.random.Generator, sequential: bool) -> int:
        shared = rng.normal(0, 1, cap)
        a = {s + 1: shared[s] + rng.normal(0, 0.3) for s in range(cap)}
        b = {s + 1: shared[s] + rng.normal(0, 0.3) for s in range(cap)}
        n, ns = 2, [2]
        while True:
            level = sequential_alpha(ns, cap, alpha) if sequential else alpha
            r = compare({k: a[k] for k in range(1, n + 1)}, {k: b[k] for k in range(1, n + 1)},
                        alpha=level)
            if r.verdict in ("better", "worse"):
                return 1
            plan = plan_more_seeds(R((C("A", "B", r.verdict, n, n, r.seeds_needed),)), cap)
            if not plan:
                return 0
            n += plan["A"]
            ns.append(n)

    rng = np.random.default_rng(12)
    rate = sum(trial(rng, True) for _ in range(trials)) / trials
    assert rate <= alpha + 3 * (alpha * (1 - alpha) / trials) ** 0.5
    rng = np.random.default_rng(12)
    naive = sum(trial(rng, False) for _ in range(trials)) / trials
    assert naive > rate + 0.02
