"""Every comparison of a study, decided together: `compare` per reading, the sequential
correction for seeds added after a look, Holm across the study's comparisons, confounders.

Readings (orchestrator.report.values.Reading): `budget` (the spec's metric at the end of
each run), `tokens` (each run's val-loss curve at the smallest final token count of the
runs on both sides; an eval's token count is its iteration x the run's tokens per
iteration, since metric rows are stored per iteration), `flops` (the same at equal training
FLOPs, when the sides' flops_per_token differ). Each basis is its own Holm family.

Per comparison and basis: p from `compare` (paired on shared seeds, else Welch); when seeds
were added after a look, p is scaled by alpha / alpha_k (alpha_k the look's O'Brien-Fleming
increment, `stats.sequential_alpha`); Holm adjusts the family's scaled p; the verdict and
interval come from `compare` at the level `stats.holm_alpha` gives back (so the interval
excludes 0 exactly when the adjusted p is below alpha)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from orchestrator.core.imported import IMPORTED_KEY
from orchestrator.core.results import AttemptResult, MetricSeries, SeedLook
from orchestrator.report import confounders as conf
from orchestrator.report.context import Study
from orchestrator.report.metrics import (
    CURVE,
    best_until,
    interp,
    is_loss,
    lower_is_better,
    metric_value,
    token_curve,
)
from orchestrator.report.stats import (
    CompareResult,
    compare,
    holm,
    holm_alpha,
    obf_spent,
    sequential_alpha,
)
from orchestrator.report.values import Comparison, Key, Reading

TOKENS_DIFFER = 0.05
FLOPS_DIFFER = 1e-3
BASES = ("budget", "tokens", "flops")


@dataclass(frozen=True)
class Planned:
    a: str
    b: str
    label: str
    kind: str
    """parent | pair | control | baseline | rule (a rule's own comparison, not listed)."""
    metric: str
    margin: float
    alpha: float

    @property
    def key(self) -> Key:
        return (self.a, self.b, self.metric, self.margin, self.alpha)


@dataclass(frozen=True)
class Sample:
    """The values one reading compares."""

    basis: str
    metric: str
    a: dict[int, float]
    b: dict[int, float]
    at: float | None = None
    note: str = ""


def plan(study: Study) -> list[Planned]:
    """The study's comparisons: each step vs its parent, declared pairs and controls, each
    spec root vs each imported baseline, then comparisons only a rule asks for."""
    m, margin, alpha = study.metric, study.margin, study.alpha
    out = [Planned(s, p, f"{s} vs {p}", "parent", m, margin, alpha)
           for s in study.order if (p := study.parent(s)) is not None]
    for pair in study.pairs():
        out.append(Planned(pair.a, pair.b, pair.label or f"{pair.a} vs {pair.b}",
                           "control" if pair.control else "pair", m,
                           margin if pair.margin is None else pair.margin,
                           alpha if pair.alpha is None else pair.alpha))
    for base in study.imported():
        for root in study.roots():
            out.append(Planned(root, base, f"{root} vs {base} (imported)", "baseline", m,
                               margin, alpha))
    seen = {p.key for p in out}
    for rule in study.spec.analysis.rules:
        other = rule.other
        if rule.step is None or other is None:
            continue
        asked = Planned(rule.step, other, f"{rule.step} vs {other}", "rule", rule.metric or m,
                        margin, alpha)
        if asked.key not in seen:
            seen.add(asked.key)
            out.append(asked)
    return out


def decide(study: Study, planned: Sequence[Planned],
           series: MetricSeries | None) -> dict[Key, Comparison]:
    """Comparison per planned key, every reading decided with the study's corrections."""
    by_key = {p.key: p for p in reversed(planned)}
    planned = list(by_key.values())[::-1]
    samples = {p.key: readings_of(study, p, series) for p in planned}
    levels: dict[Key, tuple[float, tuple[int, ...], str]] = {}
    raw: dict[tuple[Key, str], CompareResult] = {}
    for p in planned:
        budget = samples[p.key][0]
        levels[p.key] = _sequential(p, budget, study.results.looks)
        for s in samples[p.key]:
            if s.a and s.b:
                raw[(p.key, s.basis)] = compare(s.a, s.b, lower_is_better=lower_is_better(s.metric),
                                                margin=p.margin, alpha=p.alpha,
                                                estimate_seeds=False)
    final: dict[tuple[Key, str], tuple[CompareResult, float | None]] = {}
    alpha = study.alpha
    for basis in BASES:
        fam = [(k, r) for (k, b), r in raw.items() if b == basis and r.p is not None]
        scaled = [min(1.0, (r.p or 0.0) * alpha / max(levels[k][0], 1e-300)) for k, r in fam]
        adj = holm(scaled)
        order = sorted(range(len(fam)), key=lambda i: scaled[i])
        rank = {i: r for r, i in enumerate(order)}
        for i, (k, _) in enumerate(fam):
            pa = adj[i]
            assert pa is not None
            level = holm_alpha(scaled[i], pa, rank[i], len(fam), alpha) * levels[k][0] / alpha
            final[(k, basis)] = (_recompare(samples[k], basis, by_key[k],
                                            level), pa)
        for (k, b), r in raw.items():
            if b == basis and r.p is None:
                final[(k, basis)] = (_recompare(samples[k], basis, by_key[k],
                                                levels[k][0]), None)
    return {p.key: _comparison(study, p, samples[p.key], final, levels[p.key])
            for p in planned}


def readings_of(study: Study, p: Planned, series: MetricSeries | None) -> list[Sample]:
    """The budget sample, then the equal-token and equal-FLOP samples when readable."""
    out = [Sample("budget", p.metric, study.values(p.a, p.metric), study.values(p.b, p.metric))]
    if series is None or not is_loss(p.metric):
        return out
    ua, ub = study.used(p.a), study.used(p.b)
    curves = {}
    for x in (*ua, *ub):
        key = ("curve", x.attempt_id)
        if key not in study.memo:
            study.memo[key] = token_curve(x, series.get(x.attempt_id, {}).get(CURVE, []))
        curves[x.attempt_id] = study.memo[key]
    if not ua or not ub or not all(curves[x.attempt_id] for x in (*ua, *ub)):
        return out
    best = p.metric.startswith("best_")
    ppl = p.metric.endswith("_ppl")
    name = ("best " if best else "") + CURVE + (" (as ppl)" if ppl else "")

    def read(xs: Sequence[AttemptResult], scale: Mapping[int, float], at: float) -> dict[int, float]:
        vals = {}
        for x in xs:
            c = [(t * scale[x.attempt_id], v) for t, v in curves[x.attempt_id]]
            v = best_until(c, at) if best else interp(c, at)
            if v is not None:
                vals[x.seed] = math.exp(v) if ppl and v < 700 else v
        return vals

    ones = {x.attempt_id: 1.0 for x in (*ua, *ub)}
    at = min(curves[x.attempt_id][-1][0] for x in (*ua, *ub))
    out.append(Sample("tokens", name, read(ua, ones, at), read(ub, ones, at), at,
                      "eval tokens = iteration x tokens per iteration"))
    fpt = {x.attempt_id: metric_value(x.result, "flops_per_token") for x in (*ua, *ub)}
    if all(fpt.values()):
        fa = statistics.fmean(fpt[x.attempt_id] or 0.0 for x in ua)
        fb = statistics.fmean(fpt[x.attempt_id] or 0.0 for x in ub)
        if abs(fa / fb - 1) > FLOPS_DIFFER:
            scale = {k: v or 0.0 for k, v in fpt.items()}
            at_f = min(curves[x.attempt_id][-1][0] * scale[x.attempt_id] for x in (*ua, *ub))
            out.append(Sample("flops", name, read(ua, scale, at_f), read(ub, scale, at_f), at_f,
                              f"flops_per_token {fa:.3g} vs {fb:.3g}"))
    return out


def _recompare(samples: Sequence[Sample], basis: str, p: Planned, level: float) -> CompareResult:
    """The final test of one reading at its corrected level; only the equal-budget reading
    (the one seeds are added for) estimates seeds_needed."""
    s = next(x for x in samples if x.basis == basis)
    level = min(max(level, 1e-12), 0.999)
    return compare(s.a, s.b, lower_is_better=lower_is_better(s.metric), margin=p.margin,
                   alpha=level, estimate_seeds=basis == "budget")


def _sequential(p: Planned, budget: Sample,
                looks: Sequence[SeedLook]) -> tuple[float, tuple[int, ...], str]:
    """(level, seeds per side at each look, rule text) of a comparison; (alpha, (), '')
    for a fixed sample: no declared design and no look that grew this comparison's sample.

    Declared design (a look without seeds, recorded before the first analysis): every look
    of its comparisons, look 0 included, is tested at its O'Brien-Fleming increment, so the
    false-decision rate over all looks stays within alpha. Seeds added without one: look 0
    was analysed as a fixed sample at the full alpha, and the later looks spend
    alpha(t_k) - alpha(t_{k-1}); the rate is then bounded by 2 alpha - alpha(t_0), which the
    text states."""
    touching = [lk for lk in looks if p.a in lk.steps or p.b in lk.steps]
    declared = any(not lk.seeds for lk in touching)
    adding = [lk for lk in touching if lk.seeds]

    def n_after(k: int) -> int:
        later = adding[k + 1:]
        drop_a = {s for lk in later if p.a in lk.steps for s in lk.seeds}
        drop_b = {s for lk in later if p.b in lk.steps for s in lk.seeds}
        xa = set(budget.a) - drop_a
        xb = set(budget.b) - drop_b
        shared = xa & xb
        return len(shared) if len(shared) >= 2 else min(len(xa), len(xb))

    ns: list[int] = []
    for k in range(-1, len(adding)):
        n = n_after(k)
        if n > 0 and (not ns or n > ns[-1]):
            ns.append(n)
    if not ns or (len(ns) < 2 and not declared):
        return p.alpha, (), ""
    cap = touching[-1].max_seeds
    level = sequential_alpha(ns, cap, p.alpha)
    plan_text = f"max {cap} seeds per side" if cap else "no cap: this look spends what is left"
    text = (f"O'Brien-Fleming alpha spending (Lan-DeMets) over {len(ns)} look(s) at n = "
            f"{', '.join(map(str, ns))} ({plan_text}); this look is tested at "
            f"{level:.4g} of {p.alpha:g}")
    if not declared:
        bound = 2 * p.alpha - obf_spent(ns[0] / max(cap or ns[-1], ns[-1]), p.alpha)
        text += (f"; look 0 was a fixed-sample analysis at {p.alpha:g} (no declared design), "
                 f"so the false-decision rate is bounded by {bound:.3g}, not {p.alpha:g}")
    return max(level, 1e-300), tuple(ns), text


def _reading(s: Sample, r: CompareResult | None, p_raw: float | None,
             p_adj: float | None) -> Reading:
    if r is None:
        return Reading(basis=s.basis, metric=s.metric, verdict="pending", at=s.at,
                       n_a=len(s.a), n_b=len(s.b), note=s.note)
    return Reading(basis=s.basis, metric=s.metric, verdict=r.verdict, at=s.at, delta=r.delta,
                   ci=r.ci, p=p_raw, p_adj=p_adj, df=r.df, n_a=r.n_a, n_b=r.n_b,
                   paired=r.paired, method=r.method, seeds_needed=r.seeds_needed,
                   alpha=r.alpha, margin=r.margin, note=s.note)


def _comparison(study: Study, p: Planned, samples: Sequence[Sample],
                final: Mapping[tuple[Key, str], tuple[CompareResult, float | None]],
                seq: tuple[float, tuple[int, ...], str]) -> Comparison:
    readings = []
    for s in samples:
        got = final.get((p.key, s.basis))
        r, pa = got if got is not None else (None, None)
        readings.append(_reading(s, r, r.p if r is not None else None, pa))
    budget = readings[0]
    ua, ub = study.used(p.a), study.used(p.b)
    base = Comparison(a=p.a, b=p.b, label=p.label, kind=p.kind, verdict="pending",
                      n_a=budget.n_a, n_b=budget.n_b, margin=p.margin,
                      readings=tuple(readings))
    if p.kind == "baseline":
        ref = next((str(r.latest.config[IMPORTED_KEY].get("ref"))
                    for r in study.runs.get(p.b, ())), p.b)
        cfg_a = [r.latest.config or {} for r in study.runs.get(p.a, ())]
        cfg_b = [r.latest.config or {} for r in study.runs.get(p.b, ())]
        extra = conf.config_confounders(p.a, p.b, cfg_a, cfg_b,
                                        results=budget.verdict != "pending")
        base = replace(base, confounders=extra, note=f"{p.b} imported from {ref}")
    if budget.verdict == "pending":
        missing = [s for s, xs in ((p.a, samples[0].a), (p.b, samples[0].b)) if not xs]
        why = "; ".join(f"{s} {study.why_missing(s)}" for s in missing)
        return replace(base, note=why or base.note)
    found = conf.result_confounders(
        p.a, p.b, ua, ub, signature=study.signature,
        means=(lambda m: study.mean(p.a, m), lambda m: study.mean(p.b, m)))
    mean_b = statistics.fmean(samples[0].b.values())
    verdict = budget.verdict
    note = base.note
    if conf.code_differs(ua, ub):
        verdict = "confounded"
        note = "; ".join(x for x in (note, "different code on the two sides: not a verdict "
                                     "on the mechanism") if x)
    elif budget.verdict in ("better", "worse") and budget.ci is not None and p.margin > 0 \
            and -p.margin < budget.ci[0] and budget.ci[1] < p.margin:
        note = "; ".join(x for x in (note, f"inside the margin ±{p.margin:g}: real but "
                                     "smaller than what the study counts as a difference") if x)
    return replace(
        base, verdict=verdict, delta=budget.delta,
        delta_pct=100 * budget.delta / mean_b if mean_b and budget.delta is not None else None,
        ci=budget.ci, p=budget.p, p_adj=budget.p_adj, df=budget.df, paired=budget.paired,
        method=budget.method, seeds_needed=budget.seeds_needed, alpha=budget.alpha,
        confounders=tuple(dict.fromkeys(found + base.confounders)), note=note,
        interpretation=_interpret(p, readings, study.mean(p.a, "tokens"),
                                  study.mean(p.b, "tokens")),
        sequential=seq[2], looks=seq[1])


def _interpret(p: Planned, readings: Sequence[Reading], ta: float | None,
               tb: float | None) -> str:
    """When the sides saw more than 5 % different token counts and the equal-budget and
    equal-token readings disagree, which one is throughput and which is quality."""
    budget = readings[0]
    tokens = next((r for r in readings if r.basis == "tokens"), None)
    if tokens is None or tokens.verdict == "pending" or tokens.verdict == budget.verdict:
        return ""
    if not ta or not tb or abs(ta / tb - 1) <= TOKENS_DIFFER:
        return ""
    return (f"{p.a} trained on {100 * (ta / tb - 1):+.0f}% tokens vs {p.b}: at equal budget "
            f"{budget.verdict} (throughput and quality together), at equal tokens "
            f"{tokens.verdict} (quality per token); the difference between the two is "
            f"throughput")
