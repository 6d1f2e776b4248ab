"""What a study's results say, per step and per comparison: pure functions from
`StudyResults` (+ `MetricSeries`) to a frozen `Report`. No I/O.

Per step: the metric's mean, sample std and n over seeds (the latest succeeded attempt of
each current run). Every comparison goes through `orchestrator.report.stats.compare`
(paired t on shared seeds, else Welch) at equal budget and, with the series, at equal
tokens / FLOPs; Holm across the study's comparisons and O'Brien-Fleming alpha spending for
seeds added after a look (`verdicts`); confounders (`confounders`); flags and rules
(`rules`). Missing data is never an error: it makes a comparison, check or rule "pending".
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace

from orchestrator.core.results import MetricSeries, MetricSummaries, StudyResults
from orchestrator.core.states import TERMINAL
from orchestrator.report.confounders import commits
from orchestrator.report.context import Study
from orchestrator.report.flags import step_scale_note
from orchestrator.report.metrics import lower_is_better, metric_value
from orchestrator.report.rules import flags, rule
from orchestrator.report.stats import compare
from orchestrator.report.values import (
    ChainCheck,
    Comparison,
    Cumulative,
    ExpectCheck,
    Report,
    StepSummary,
)
from orchestrator.report.verdicts import decide, plan

__all__ = ["Report", "analyze", "metric_value", "method_text"]

TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)


def analyze(results: StudyResults, series: MetricSeries | None = None, *,
            summaries: MetricSummaries | None = None, metric: str | None = None,
            noise_floor: float | None = None) -> Report:
    """Build the Report of a study; `series` (val_loss, the KV keep ratio, the SPAM clip
    fraction, and stats/... and grad/... unless `summaries` gives those as SeriesSummary)
    enables the equal-token readings and the series flags; without it those stay
    unevaluated."""
    study = Study.build(results, metric, noise_floor)
    planned = plan(study)
    decided = decide(study, planned, series)
    comparisons = tuple(replace(decided[p.key], kind=p.kind, label=p.label)
                        for p in planned if p.kind != "rule")
    expectations = _expectations(study)
    flags_ = flags(study, expectations, series, summaries)
    rules = tuple(rule(study, r, decided, expectations, flags_, series)
                  for r in study.spec.analysis.rules)
    return Report(
        study=results.name, description=results.description, metric=study.metric,
        noise_floor=study.floor, steps=tuple(_summary(study, s) for s in study.order),
        comparisons=comparisons, cumulative=_cumulative(study),
        chains=_chains(study, comparisons), expectations=expectations, rules=rules,
        flags=flags_,
        used_attempts={s: tuple((r.seed, r.used.attempt_id) for r in study.runs.get(s, ())
                                if r.used is not None) for s in study.order},
        alpha=study.alpha, margin=study.margin,
        method=method_text(study.alpha, study.margin,
                           sum(1 for c in decided.values() if c.p is not None),
                           bool(results.looks)),
        time_budget=any(((a.config.get("train") or {}).get("budget") or {}).get("seconds")
                        for s in study.order for a in study.used(s)),
    )


def method_text(alpha: float, margin: float, family: int, looks: bool) -> str:
    """The report's header: how every verdict was reached; `family` = the tests Holm
    adjusts at equal budget (those with data on both sides)."""
    eq = (f"equivalent = a TOST at {alpha:g} puts it inside ±{margin:g}" if margin > 0 else
          "no equivalence margin (set analysis.margin or noise_floor)")
    seq = ("; seeds added after a look: O'Brien-Fleming alpha spending on n/n_max, looks "
           "combined by Bonferroni" if looks else "")
    return (f"paired t on shared seeds (else Welch); better/worse = the {1 - alpha:.0%} "
            f"interval of the delta excludes 0, {eq}, else inconclusive; Holm across "
            f"{family} comparison(s) per reading (raw and adjusted p shown){seq}; read at "
            f"equal budget and at equal tokens (eval tokens = iteration x tokens per "
            f"iteration); different code on the two sides = confounded")


# --- per step -----------------------------------------------------------------------------


def _summary(study: Study, step: str) -> StepSummary:
    runs = study.runs.get(step, ())
    used = study.used(step)
    values = sorted(study.values(step, study.metric).items())
    xs = [v for _, v in values]
    states: dict[str, int] = {}
    for r in runs:
        states[r.state] = states.get(r.state, 0) + 1
    n_ok = sum(1 for r in runs if r.used is not None)
    n_dead = sum(1 for r in runs if r.used is None and r.state in TERMINAL_NAMES)
    if not runs:
        status = "not submitted"
    elif n_ok == len(runs):
        status = "done"
    elif n_ok:
        status = "partial"
    elif n_dead == len(runs):
        status = "failed"
    else:
        status = "pending"
    spec_step = study.spec.steps.get(step)
    config = runs[0].latest.config if runs else {}
    return StepSummary(
        step=step, parent=study.parent(step),
        description=spec_step.description if spec_step is not None else "", status=status,
        mean=statistics.fmean(xs) if xs else None,
        std=statistics.stdev(xs) if len(xs) >= 2 else None, n=len(xs), values=tuple(values),
        runs=len(runs), states=tuple(sorted(states.items())),
        tokens_per_s=study.mean(step, "tokens_per_s"),
        params_total=study.mean(step, "params.total"), iters=study.mean(step, "iters"),
        tokens=study.mean(step, "tokens"), train_s=study.mean(step, "train_s"),
        commits=tuple(sorted(commits(used))),
        mechanisms=_mechanisms(config),
    )


def _mechanisms(config: dict[str, object]) -> str:
    model = config.get("model") or {}
    assert isinstance(model, dict)
    parts = []
    for slot in ("attn", "mlp"):
        name = model.get(slot)
        if not name:
            continue
        knobs = model.get(f"{slot}_knobs") or {}
        inner = ",".join(f"{k}={v}" for k, v in sorted(knobs.items()))
        parts.append(f"{name}({inner})" if inner else str(name))
    return " + ".join(parts)


def _expectations(study: Study) -> tuple[ExpectCheck, ...]:
    out = []
    for step in study.order:
        note = step_scale_note(study, step)
        for name, (lo, hi) in study.expect_of(step).items():
            xs = list(study.values(step, name).values())
            mean = statistics.fmean(xs) if xs else None
            if mean is None:
                verdict = "pending"
            elif note:
                verdict = "not comparable"
            else:
                verdict = "below" if mean < lo else "above" if mean > hi else "inside"
            out.append(ExpectCheck(step=step, metric=name, lo=lo, hi=hi, verdict=verdict,
                                   mean=mean, n=len(xs), note=note or ""))
    return tuple(out)


# --- chains -------------------------------------------------------------------------------


def _cumulative(study: Study) -> tuple[Cumulative, ...]:
    """Each step against the root of its chain, its interval (unadjusted: descriptive) read
    against the predicted gain from the expected ranges."""
    out = []
    lib = lower_is_better(study.metric)
    for step in study.order:
        chain = study.root_chain(step)
        if len(chain) < 2:
            continue
        root = chain[0]
        predicted = None
        mine, base = study.expect_of(step).get(study.metric), study.expect_of(root).get(study.metric)
        if mine is not None and base is not None:
            ref = (base[0] + base[1]) / 2
            predicted = (mine[0] - ref, mine[1] - ref)
        va, vb = study.values(step, study.metric), study.values(root, study.metric)
        r = compare(va, vb, lower_is_better=lib, alpha=study.alpha, estimate_seeds=False) \
            if va and vb else None
        if r is None or r.delta is None:
            verdict = "pending"
        elif predicted is None:
            verdict = "no prediction"
        else:
            lo, hi = r.ci if r.ci is not None else (r.delta, r.delta)
            if hi < predicted[0] or lo > predicted[1]:
                gained_less = (lo > predicted[1]) == lib
                verdict = "short of prediction" if gained_less else "beyond prediction"
            else:
                verdict = "as predicted"
        out.append(Cumulative(step=step, root=root, chain=chain, verdict=verdict,
                              delta=r.delta if r else None, ci=r.ci if r else None,
                              predicted=predicted))
    return tuple(out)


def _chains(study: Study, comparisons: Sequence[Comparison]) -> tuple[ChainCheck, ...]:
    """Every root-to-leaf chain of 3+ steps: monotone when no link is `worse` than its
    parent (the Holm-adjusted parent comparisons)."""
    parents = {study.parent(s) for s in study.order}
    verdict = {(c.a, c.b): c.verdict for c in comparisons if c.kind == "parent"}
    out = []
    for leaf in study.order:
        if leaf in parents:
            continue
        chain = study.root_chain(leaf)
        if len(chain) < 3:
            continue
        breaks, pending = [], []
        for prev, cur in zip(chain, chain[1:], strict=False):
            v = verdict.get((cur, prev), "pending")
            if v == "worse":
                breaks.append(cur)
            elif v == "pending":
                pending.append(cur)
        monotone = False if breaks else (None if pending else True)
        out.append(ChainCheck(chain=chain, monotone=monotone, breaks=tuple(breaks),
                              pending=tuple(pending)))
    return tuple(out)
