"""Flags (what went wrong in a step's runs) and the spec's troubleshooting rules, which fire
on verdicts and flags. Pure functions of a `Study`, its decided comparisons and (optionally)
the metric series."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.core.results import AttemptResult, MetricSeries, MetricSummaries
from orchestrator.core.spec import Rule
from orchestrator.report.confounders import fmt_set
from orchestrator.report.context import TERMINAL_NAMES, Study
from orchestrator.report.metrics import is_gate_stat, lower_is_better, split_stat, summaries_of
from orchestrator.report.values import (
    Comparison,
    ExpectCheck,
    Flag,
    Key,
    RuleOutcome,
    RunOutcome,
)

THROUGHPUT_DROP = 0.05
GATE_OPEN = 1e-2
GATE_CLOSED = 1e-3
GRAD_ZERO = 1e-12
SPAM_CLIP = "spam_clip_frac"
SPAM_CLIP_HIGH = 0.5
SPAM_CLIP_STEPS = 100
KV_KEEP = "kv_keep_ratio"
KV_KEEP_GRADS = ("kv_keep_ratio_lm_grad", "kv_keep_ratio_cost_grad")
KV_PINNED_TOL = 0.01
KV_PINNED_TAIL = 0.25
COMPARE_CONDITIONS = ("worse_than", "not_better_than", "better_than")
FLAG_KINDS: dict[str, tuple[str, ...]] = {
    "diverged": ("diverged",), "failed": ("failed", "diverged"),
    "gate_collapsed": ("gate_collapsed",), "no_gradient": ("no_gradient",),
    "slower": ("throughput",),
}
SERIES_CONDITIONS = frozenset({"gate_collapsed", "no_gradient"})


def failure(run: RunOutcome) -> str | None:
    latest = run.latest
    status = latest.result.get("status") if latest.result else None
    if latest.failure_kind == "diverged" or status == "diverged":
        return "diverged"
    if run.used is not None or latest.state not in TERMINAL_NAMES:
        return None
    if latest.state == "failed":
        return f"failed ({latest.failure_kind})" if latest.failure_kind else "failed"
    return latest.state.replace("_", " ")


def flags(study: Study, expectations: Sequence[ExpectCheck], series: MetricSeries | None,
          summaries: MetricSummaries | None = None) -> tuple[Flag, ...]:
    """Per-step flags; with the series, also the series flags (the stats/ and grad/ families
    read from `summaries`, default: summarised from `series`)."""
    if series is not None and summaries is None:
        summaries = summaries_of(series)
    out: list[Flag] = []
    for step in study.order:
        for run in study.runs.get(step, ()):
            kind = failure(run)
            if kind is not None:
                latest = run.latest
                detail = latest.error_message or latest.result.get("error_message") or ""
                msg = f"seed {run.seed}: {kind}" + (f": {detail}" if detail else "")
                out.append(Flag("diverged" if kind == "diverged" else "failed", step, msg,
                                run.seed))
        parent = study.parent(step)
        if parent is not None:
            tps = study.mean(step, "tokens_per_s")
            ptps = study.mean(parent, "tokens_per_s")
            if tps is not None and ptps and tps < (1 - THROUGHPUT_DROP) * ptps:
                out.append(Flag("throughput", step, f"throughput {100 * (tps / ptps - 1):+.1f}%"
                                f" vs {parent} ({tps:,.0f} vs {ptps:,.0f} tokens/s)"))
        if series is not None:
            out += series_flags(step, study.used(step), series, summaries or {})
    for e in expectations:
        if e.verdict in ("below", "above"):
            out.append(Flag("outside_expected", e.step, f"{e.metric} {e.mean:.4g} {e.verdict} "
                            f"the expected [{e.lo:g}, {e.hi:g}] (n={e.n})"))
    return tuple(out)


def series_flags(step: str, used: Sequence[AttemptResult], series: MetricSeries,
                 summaries: MetricSummaries) -> list[Flag]:
    """Gate collapse and mixing scalars without gradient (from each stats/... and grad/...
    series' SeriesSummary), SPAM clipping most of the gradient for 100+ steps and a learned
    KV keep ratio pinned at a bound (from the series)."""
    collapsed: dict[str, set[str]] = {}
    no_grad: dict[str, set[str]] = {}
    out: list[Flag] = []
    for x in used:
        for name, summary in summaries.get(x.attempt_id, {}).items():
            prefix, key, layer = split_stat(name)
            where = f"{layer or '-'}/seed {x.seed}"
            if prefix == "stats" and is_gate_stat(key):
                if abs(summary.last) < GATE_CLOSED and summary.max_abs >= GATE_OPEN:
                    collapsed.setdefault(key, set()).add(where)
            elif prefix == "grad" and summary.n >= 2 and summary.max_abs <= GRAD_ZERO:
                no_grad.setdefault(key, set()).add(where)
        names = series.get(x.attempt_id, {})
        for name, points in names.items():
            if not any(math.isfinite(v) for _, v in points):
                continue
            if name.split("/")[0] == SPAM_CLIP:
                stretch = longest_above(points, SPAM_CLIP_HIGH)
                if stretch is not None and stretch[1] - stretch[0] >= SPAM_CLIP_STEPS:
                    out.append(Flag("spam_clipping", step, f"SPAM clipped more than "
                                    f"{SPAM_CLIP_HIGH:.0%} of the gradient for "
                                    f"{stretch[1] - stretch[0]} steps (iterations "
                                    f"{stretch[0]}-{stretch[1]}) at seed {x.seed}", x.seed))
            elif name.split("/")[0] == KV_KEEP:
                pinned = kv_pinned(points, kv_bounds(x.config))
                if pinned is not None:
                    grads = ", ".join(f"{g.removeprefix(KV_KEEP + '_')} {names[g][-1][1]:+.3g}"
                                      for g in KV_KEEP_GRADS if names.get(g))
                    out.append(Flag("kv_keep_pinned", step, f"learned KV keep ratio pinned at "
                                    f"its {pinned[0]} bound {pinned[1]:.3g} ({name}, seed "
                                    f"{x.seed})" + (f"; last {grads}" if grads else ""),
                                    x.seed))
    for key, places in sorted(collapsed.items()):
        out.append(Flag("gate_collapsed", step, f"gate {key} collapsed to ~0 "
                        f"(|last| < {GATE_CLOSED:g}) at {fmt_set(places)}"))
    for key, places in sorted(no_grad.items()):
        out.append(Flag("no_gradient", step, f"mixing scalar {key} never got gradient "
                        f"at {fmt_set(places)}"))
    return out


def longest_above(points: Sequence[tuple[int, float]], level: float) -> tuple[int, int] | None:
    """(first, last) iteration of the longest run of consecutive logged points above level."""
    best: tuple[int, int] | None = None
    start: int | None = None
    last = 0
    for it, v in points:
        if math.isfinite(v) and v > level:
            start = it if start is None else start
            last = it
            if best is None or last - start > best[1] - best[0]:
                best = (start, last)
        else:
            start = None
    return best


def kv_bounds(config: Mapping[str, Any]) -> tuple[float, float]:
    """The range a learned KV keep ratio can take, from the kv_prune knobs of the config:
    explicit `keep_ratio_min`/`keep_ratio_max` when given, else the recency window
    (`recency_frac`, or `recency` / block_size: the kept set never shrinks below it) and 1."""
    model = config.get("model") or {}
    knobs = model.get("attn_knobs") or {}
    block = model.get("block_size") or 0
    lo = knobs.get("keep_ratio_min")
    if lo is None:
        frac = knobs.get("recency_frac")
        rec = knobs.get("recency", 64)
        lo = frac if frac is not None else (min(1.0, rec / block) if block else 0.0)
    hi = knobs.get("keep_ratio_max", 1.0)
    return float(lo), float(hi)


def kv_pinned(points: Sequence[tuple[int, float]],
              bounds: tuple[float, float]) -> tuple[str, float] | None:
    """("lower"|"upper", bound) when the last quarter (>= 3 points) of the ratio's series
    sits within 0.01 of one bound."""
    values = [v for _, v in points if math.isfinite(v)]
    if len(values) < 3:
        return None
    tail = values[-max(3, math.ceil(KV_PINNED_TAIL * len(values))):]
    for which, bound in zip(("lower", "upper"), bounds, strict=True):
        if all(abs(v - bound) <= KV_PINNED_TOL for v in tail):
            return which, bound
    return None


# --- rules --------------------------------------------------------------------------------


def rule(study: Study, raw: Rule, comparisons: Mapping[Key, Comparison],
         expectations: Sequence[ExpectCheck], flags_: Sequence[Flag],
         series: MetricSeries | None) -> RuleOutcome:
    """Evaluate one spec rule; a rule without `step` covers every step."""
    step, say, cond = raw.step, raw.say, raw.condition
    label = step or "*"
    if cond in COMPARE_CONDITIONS:
        assert step is not None and raw.other is not None
        c = comparisons[(step, raw.other, raw.metric or study.metric, study.margin,
                         study.alpha)]
        return compare_rule(label, cond, raw.other, say, c)
    steps = [step] if step is not None else list(study.order)
    if cond == "outside_expected":
        checks = [e for e in expectations if e.step in steps
                  and (raw.metric is None or e.metric == raw.metric)]
        bad = [e for e in checks if e.verdict in ("below", "above")]
        done = [e for e in checks if e.verdict in ("inside", "below", "above")]
        status = "fired" if bad else ("quiet" if checks and len(done) == len(checks)
                                     else "pending")
        evidence = "; ".join(f"{e.step} {e.metric} {_num(e.mean)} vs [{e.lo:g}, {e.hi:g}]"
                             + (f" ({e.note})" if e.note else "")
                             for e in (bad or checks)) or "no expected range declared"
        return RuleOutcome(label, cond, say, status, evidence)
    kinds = FLAG_KINDS[cond]
    hits = [f for f in flags_ if f.step in steps and f.kind in kinds]
    needs_series = cond in SERIES_CONDITIONS
    if hits:
        status = "fired"
    elif not study.finished(steps) or (needs_series and series is None):
        status = "pending"
    else:
        status = "quiet"
    evidence = "; ".join(f"{f.step} {f.message}" if step is None else f.message
                         for f in hits) or (
        "metric series not loaded" if needs_series and series is None else "")
    return RuleOutcome(label, cond, say, status, evidence)


def compare_rule(label: str, cond: str, target: str, say: str, c: Comparison) -> RuleOutcome:
    """worse_than fires on `worse`; better_than on `better`; not_better_than when the interval
    rules out a gain (or `equivalent`). The opposite evidence makes the rule quiet; neither
    is `inconclusive`, with the seeds per side that would decide."""
    name = f"{cond} {target}"
    if c.verdict == "pending":
        return RuleOutcome(label, name, say, "pending", c.note)
    evidence = (f"{c.a} - {c.b} = {_signed(c.delta)} {_ci(c.ci)}, p {_p(c.p)} "
                f"(adjusted {_p(c.p_adj)}): {c.verdict}")
    if c.verdict == "confounded":
        return RuleOutcome(label, name, say, "confounded", evidence + f" ({c.note})")
    gain = None
    if c.ci is not None:
        lo, hi = c.ci
        gain = (-hi, -lo) if lower_is_better(_metric_of(c)) else (lo, hi)
    no_gain = c.verdict in ("worse", "equivalent") or (gain is not None and gain[1] <= 0)
    no_loss = c.verdict in ("better", "equivalent") or (gain is not None and gain[0] >= 0)
    fired, quiet = {"worse_than": (c.verdict == "worse", no_loss),
                    "better_than": (c.verdict == "better", no_gain),
                    "not_better_than": (no_gain, c.verdict == "better")}[cond]
    if fired:
        return RuleOutcome(label, name, say, "fired", evidence)
    if quiet:
        return RuleOutcome(label, name, say, "quiet", evidence)
    need = (f"; needs ~{c.seeds_needed} seeds per side to decide" if c.seeds_needed
            else "; the seeds that would decide cannot be estimated")
    return RuleOutcome(label, name, say, "inconclusive", evidence + need, c.seeds_needed)


def _metric_of(c: Comparison) -> str:
    return c.readings[0].metric if c.readings else ""


def _signed(x: float | None) -> str:
    return "?" if x is None else f"{x:+.4f}"


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:.4f}"


def _p(x: float | None) -> str:
    return "?" if x is None else "<1e-4" if x < 1e-4 else f"{x:.3g}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "[no interval]" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"
