"""What a study's results say, per step and per comparison: pure functions from
`StudyResults` (+ `MetricSeries`) to frozen `Report` values. No I/O.

Statistics (design.md §6): per step the metric's mean, sample std and n over seeds, using the
latest succeeded attempt of each current run. A comparison's delta is mean(a) - mean(b); its
spread is the standard error of that difference, sqrt(s_a^2/n_a + s_b^2/n_b); the delta is
"noise" when |delta| < max(noise_floor, 2 * spread). With a single seed on either side the
spread is unknown and the floor is at least `SINGLE_SEED_FLOOR` (mechanisms.md §15: two or
more seeds for any claimed difference below ~0.02 nats). Missing data is never an error:
it makes a comparison, check or rule "pending".
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.core.imported import IMPORTED_KEY
from orchestrator.core.results import AttemptResult, MetricSeries, StudyResults
from orchestrator.core.states import TERMINAL, AttemptState

DEFAULT_METRIC = "best_val_loss"
SINGLE_SEED_FLOOR = 0.02
NOISE_Z = 2.0
CONFOUND_REL = 0.05
THROUGHPUT_DROP = 0.05
GATE_OPEN = 1e-2
GATE_CLOSED = 1e-3
GRAD_ZERO = 1e-12
HIGHER_IS_BETTER = frozenset({"tokens_per_s"})
GATE_WORDS = ("gate", "w_rec", "w_std", "alpha", "attn_scale")
SUCCEEDED = AttemptState.SUCCEEDED.value
COMPARE_CONDITIONS = ("worse_than", "not_better_than", "better_than")
FLAG_CONDITIONS = ("outside_expected", "diverged", "gate_collapsed", "no_gradient", "failed",
                   "slower")
CONDITIONS = COMPARE_CONDITIONS + FLAG_CONDITIONS
SHAPE_KEYS = (("L", "n_layer"), ("H", "n_head"), ("C", "n_embd"), ("T", "block_size"),
              ("V", "vocab_size"))


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
    """failed, diverged, gate_collapsed, no_gradient, throughput, outside_expected."""
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
class Comparison:
    a: str
    b: str
    label: str
    kind: str
    """parent | pair | baseline (a spec root step vs an imported run)."""
    verdict: str
    """better | worse | noise | pending."""
    delta: float | None = None
    delta_pct: float | None = None
    spread: float | None = None
    """Standard error of the difference of the means (None with one seed on a side)."""
    threshold: float | None = None
    """|delta| below this is noise."""
    n_a: int = 0
    n_b: int = 0
    confounders: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Cumulative:
    step: str
    root: str
    chain: tuple[str, ...]
    verdict: str
    """as predicted | short of prediction | beyond prediction | no prediction | pending."""
    delta: float | None = None
    spread: float | None = None
    predicted: tuple[float, float] | None = None


@dataclass(frozen=True)
class ChainCheck:
    chain: tuple[str, ...]
    monotone: bool | None
    """True: no link got significantly worse; False: one did; None: links pending."""
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
    """fired | quiet | pending | invalid."""
    evidence: str = ""


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


# --- public entry points ------------------------------------------------------------------


def analyze(results: StudyResults, series: MetricSeries | None = None, *,
            metric: str | None = None, noise_floor: float | None = None) -> Report:
    """Build the Report of a study; `series` (val_loss, stats/..., grad/...) enables the
    series-based flags (gate collapse, no gradient); without it those stay unevaluated."""
    ctx = _Context.build(results, metric, noise_floor)
    summaries = tuple(ctx.summary(s) for s in ctx.order)
    comparisons: list[Comparison] = []
    for s in ctx.order:
        parent = ctx.parent(s)
        if parent is not None:
            comparisons.append(ctx.compare(s, parent, f"{s} vs {parent}", "parent"))
    for pair in ctx.analysis.get("pairs") or ():
        a, b = str(pair.get("a")), str(pair.get("b"))
        comparisons.append(ctx.compare(a, b, str(pair.get("label") or f"{a} vs {b}"), "pair"))
    comparisons += ctx.baseline_comparisons()
    expectations = ctx.expectations()
    flags = ctx.flags(expectations, series)
    rules = tuple(ctx.rule(r, expectations, flags, series) for r in ctx.analysis.get("rules") or ())
    return Report(
        study=results.name, description=results.description, metric=ctx.metric,
        noise_floor=ctx.floor, steps=summaries, comparisons=tuple(comparisons),
        cumulative=ctx.cumulative(), chains=ctx.chains(), expectations=expectations,
        rules=rules, flags=flags,
        used_attempts={s: tuple((r.seed, r.used.attempt_id) for r in ctx.runs.get(s, ())
                                if r.used is not None) for s in ctx.order},
    )


def flags_for_runs(results: StudyResults) -> dict[tuple[str, int], tuple[str, ...]]:
    """Short per-run flags for `recip status` (no metric series needed): failure state,
    divergence, throughput regression > 5 % vs the parent, outside the expected range,
    a different code commit than the parent's runs."""
    ctx = _Context.build(results, None, None)
    out: dict[tuple[str, int], tuple[str, ...]] = {}
    for step in ctx.order:
        parent = ctx.parent(step)
        parent_tps = _mean(_values(ctx.used(parent), "tokens_per_s")) if parent else None
        parent_shas = {r.used.code_sha for r in ctx.used(parent) if r.used} if parent else set()
        expect = ctx.expect_of(step) if ctx.scale_note(step) is None else {}
        for run in ctx.runs.get(step, ()):
            flags: list[str] = []
            kind = _failure(run)
            if kind:
                flags.append(kind)
            if run.used is not None:
                res = run.used.result
                tps = metric_value(res, "tokens_per_s")
                if tps is not None and parent_tps and tps < (1 - THROUGHPUT_DROP) * parent_tps:
                    flags.append(f"tok/s {100 * (tps / parent_tps - 1):+.0f}% vs {parent}")
                for name, (lo, hi) in expect.items():
                    v = metric_value(res, name)
                    if v is not None and not lo <= v <= hi:
                        flags.append(f"{name} outside [{lo:g}, {hi:g}]")
                sha = run.used.code_sha
                if parent_shas and sha and parent_shas - {sha}:
                    flags.append(f"commit differs from {parent}")
            if run.attempts > 1:
                flags.append(f"attempt {run.latest.attempt_no}")
            if flags:
                out[(step, run.seed)] = tuple(flags)
    return out


def metric_value(result: Mapping[str, Any], name: str) -> float | None:
    """A finite number from a result dict: a key, a dotted path (`params.total`), or a
    perplexity derived from its loss (`best_val_ppl` = exp(best_val_loss))."""
    if name.endswith("_ppl") and name not in result:
        loss = metric_value(result, name[: -len("_ppl")] + "_loss")
        return math.exp(loss) if loss is not None and loss < 700 else None
    node: Any = result
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    value = float(node)
    return value if math.isfinite(value) else None


def lower_is_better(metric: str) -> bool:
    return metric.split(".")[-1] not in HIGHER_IS_BETTER


def split_stat(name: str) -> tuple[str, str, str | None]:
    """`stats/attn.w_rec_mean/L3` -> ("stats", "attn.w_rec_mean", "L3")."""
    prefix, _, rest = name.partition("/")
    key, sep, layer = rest.rpartition("/")
    if not sep or not layer.startswith("L"):
        return prefix, rest, None
    return prefix, key, layer


def is_gate_stat(key: str) -> bool:
    stat = key.split(".", 1)[-1]
    return (any(w in stat for w in GATE_WORDS) and "coupling" not in stat
            and not stat.endswith(("_std", "_min", "_max")))


# --- internals ----------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _std(xs: Sequence[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) >= 2 else None


def _values(runs: Iterable[RunOutcome], metric: str) -> list[float]:
    out = []
    for r in runs:
        if r.used is not None:
            v = metric_value(r.used.result, metric)
            if v is not None:
                out.append(v)
    return out


def _failure(run: RunOutcome) -> str | None:
    latest = run.latest
    status = latest.result.get("status") if latest.result else None
    if latest.failure_kind == "diverged" or status == "diverged":
        return "diverged"
    if run.used is not None or latest.state not in TERMINAL:
        return None
    if latest.state == "failed":
        return f"failed ({latest.failure_kind})" if latest.failure_kind else "failed"
    return latest.state.replace("_", " ")


def _rel(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return abs(a - b) / abs(b)


def _fmt_set(xs: Iterable[Any]) -> str:
    items = sorted({str(x) for x in xs})
    return ",".join(items) if items else "?"


def _mechanisms(config: Mapping[str, Any]) -> str:
    model = config.get("model") or {}
    parts = []
    for slot in ("attn", "mlp"):
        name = model.get(slot)
        if not name:
            continue
        knobs = model.get(f"{slot}_knobs") or {}
        inner = ",".join(f"{k}={v}" for k, v in sorted(knobs.items()))
        parts.append(f"{name}({inner})" if inner else str(name))
    return " + ".join(parts)


@dataclass(frozen=True)
class _Context:
    results: StudyResults
    metric: str
    floor: float
    order: tuple[str, ...]
    runs: dict[str, tuple[RunOutcome, ...]]
    spec_steps: dict[str, Any]
    analysis: dict[str, Any]

    @classmethod
    def build(cls, results: StudyResults, metric: str | None,
              noise_floor: float | None) -> _Context:
        spec = results.spec or {}
        analysis = dict(spec.get("analysis") or {})
        floor = noise_floor if noise_floor is not None else analysis.get("noise_floor")
        by_run: dict[tuple[str, int], list[AttemptResult]] = {}
        for a in results.attempts:
            by_run.setdefault((a.step, a.seed), []).append(a)
        runs: dict[str, list[RunOutcome]] = {}
        for (step, seed), atts in by_run.items():
            atts.sort(key=lambda a: (a.attempt_no, a.attempt_id))
            ok = [a for a in atts if a.state == SUCCEEDED]
            runs.setdefault(step, []).append(RunOutcome(
                step=step, seed=seed, state=atts[-1].state, latest=atts[-1],
                used=ok[-1] if ok else None, attempts=len(atts)))
        order = list(results.steps)
        order += [s for s in runs if s not in order]
        return cls(
            results=results,
            metric=metric or str(analysis.get("metric") or DEFAULT_METRIC),
            floor=float(floor) if floor is not None else 0.0,
            order=tuple(order),
            runs={s: tuple(sorted(rs, key=lambda r: r.seed)) for s, rs in runs.items()},
            spec_steps=dict(spec.get("steps") or {}),
            analysis=analysis,
        )

    # -- per step

    def parent(self, step: str) -> str | None:
        p = (self.spec_steps.get(step) or {}).get("parent")
        return str(p) if p else None

    def used(self, step: str | None) -> tuple[RunOutcome, ...]:
        return tuple(r for r in self.runs.get(step or "", ()) if r.used is not None)

    def expect_of(self, step: str) -> dict[str, tuple[float, float]]:
        raw = (self.spec_steps.get(step) or {}).get("expect") or {}
        out = {}
        for name, rng in raw.items():
            if isinstance(rng, Sequence) and len(rng) == 2:
                lo, hi = float(rng[0]), float(rng[1])
                out[str(name)] = (min(lo, hi), max(lo, hi))
        return out

    def summary(self, step: str) -> StepSummary:
        runs = self.runs.get(step, ())
        used = self.used(step)
        values = [(r.seed, v) for r in used
                  if r.used and (v := metric_value(r.used.result, self.metric)) is not None]
        xs = [v for _, v in values]
        states: dict[str, int] = {}
        for r in runs:
            states[r.state] = states.get(r.state, 0) + 1
        n_ok = sum(1 for r in runs if r.used is not None)
        n_dead = sum(1 for r in runs if r.used is None and r.state in TERMINAL)
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
        spec_step = self.spec_steps.get(step) or {}
        config = runs[0].latest.config if runs else {}
        return StepSummary(
            step=step, parent=self.parent(step),
            description=str(spec_step.get("description") or ""), status=status,
            mean=_mean(xs), std=_std(xs), n=len(xs), values=tuple(values), runs=len(runs),
            states=tuple(sorted(states.items())),
            tokens_per_s=_mean(_values(used, "tokens_per_s")),
            params_total=_mean(_values(used, "params.total")),
            iters=_mean(_values(used, "iters")), tokens=_mean(_values(used, "tokens")),
            train_s=_mean(_values(used, "train_s")),
            commits=tuple(sorted({(r.used.code_sha or "?")[:7] for r in used if r.used})),
            mechanisms=_mechanisms(config),
        )

    # -- comparisons

    def compare(self, a: str, b: str, label: str, kind: str,
                metric: str | None = None) -> Comparison:
        metric = metric or self.metric
        xa, xb = _values(self.used(a), metric), _values(self.used(b), metric)
        missing = [s for s, xs in ((a, xa), (b, xb)) if not xs]
        if missing:
            why = "; ".join(f"{s} {self._why_missing(s)}" for s in missing)
            return Comparison(a=a, b=b, label=label, kind=kind, verdict="pending",
                              n_a=len(xa), n_b=len(xb), note=why)
        ma, mb = statistics.fmean(xa), statistics.fmean(xb)
        delta = ma - mb
        sa, sb = _std(xa), _std(xb)
        spread = (math.sqrt(sa**2 / len(xa) + sb**2 / len(xb))
                  if sa is not None and sb is not None else None)
        threshold = max(self.floor, NOISE_Z * spread if spread is not None else SINGLE_SEED_FLOOR)
        if abs(delta) < threshold:
            verdict = "noise"
        else:
            verdict = "better" if (delta < 0) == lower_is_better(metric) else "worse"
        note = "" if spread is not None else "one seed on a side: spread unknown"
        return Comparison(
            a=a, b=b, label=label, kind=kind, verdict=verdict, delta=delta,
            delta_pct=100 * delta / mb if mb else None, spread=spread, threshold=threshold,
            n_a=len(xa), n_b=len(xb), confounders=self.confounders(a, b), note=note)

    # -- imported baselines (a W&B run stored by `recip baseline import`)

    def imported(self) -> tuple[str, ...]:
        """Steps whose runs were imported rather than trained here."""
        return tuple(s for s in self.order
                     if any(IMPORTED_KEY in (r.latest.config or {}) for r in self.runs.get(s, ())))

    def baseline_comparisons(self) -> list[Comparison]:
        """Each root step of the spec (no parent) against each imported baseline, with the
        comparability check: model size, budget, effective batch and data from the configs
        (known before any result), plus the result-based confounders once both have run."""
        out = []
        roots = [s for s in self.spec_steps if self.parent(s) is None]
        for base in self.imported():
            ref = next((str(r.latest.config[IMPORTED_KEY].get("ref"))
                        for r in self.runs.get(base, ())), base)
            for root in roots:
                c = self.compare(root, base, f"{root} vs {base} (imported)", "baseline")
                extra = self.config_confounders(root, base, results=c.verdict != "pending")
                note = c.note or f"{base} imported from {ref}"
                out.append(replace(c, confounders=tuple(dict.fromkeys(c.confounders + extra)),
                                   note=note))
        return out

    def config_confounders(self, a: str, b: str, *, results: bool) -> tuple[str, ...]:
        """Differences between the two steps' configs; budget/data/batch only when the
        result-based check (`confounders`) did not run."""
        cfg = {s: [r.latest.config or {} for r in self.runs.get(s, ())] for s in (a, b)}
        out: list[str] = []
        shapes = {s: {_shape(c) for c in cfg[s]} for s in (a, b)}
        if shapes[a] != shapes[b] or len(shapes[a]) > 1:
            out.append(f"model sizes differ: {a} {_fmt_set(shapes[a])} vs {b} {_fmt_set(shapes[b])}")
        if not results:
            for key, what in (("train.budget", "budgets"), ("data", "data")):
                sides = {s: {json.dumps(_lookup(c, key), sort_keys=True) for c in cfg[s]}
                         for s in (a, b)}
                if sides[a] != sides[b] or len(sides[a]) > 1:
                    out.append(f"{what} differ: {a} {_fmt_set(sides[a])} vs {b} "
                               f"{_fmt_set(sides[b])}")
            eb = {s: {_config_batch(c) for c in cfg[s]} for s in (a, b)}
            if eb[a] != eb[b] or len(eb[a]) > 1:
                out.append(f"effective batch differs: {a} {_fmt_set(eb[a])} vs {b} "
                           f"{_fmt_set(eb[b])}")
        return tuple(out)

    def _why_missing(self, step: str) -> str:
        runs = self.runs.get(step, ())
        if step not in self.order:
            return "is not a step of this study"
        if not runs:
            return "not submitted"
        states = _fmt_set(r.state for r in runs)
        return f"has no succeeded run ({states})"

    def confounders(self, a: str, b: str) -> tuple[str, ...]:
        ua, ub = self.used(a), self.used(b)
        atts = {a: [r.used for r in ua if r.used], b: [r.used for r in ub if r.used]}
        out: list[str] = []
        shas = {s: {(x.code_sha or "?")[:7] for x in atts[s]} for s in (a, b)}
        if len(shas[a] | shas[b]) > 1:
            out.append(f"code commits differ: {a} {_fmt_set(shas[a])} vs {b} {_fmt_set(shas[b])}")
        dirty = [s for s in (a, b) if any(x.code_dirty for x in atts[s])]
        if dirty:
            out.append(f"uncommitted changes in {', '.join(dirty)}")
        for key, what in (("train.budget", "budgets"), ("data", "data")):
            sides = {s: {json.dumps(_lookup(x.config, key), sort_keys=True) for x in atts[s]}
                     for s in (a, b)}
            if sides[a] != sides[b] or len(sides[a]) > 1:
                out.append(f"{what} differ: {a} {_fmt_set(sides[a])} vs {b} {_fmt_set(sides[b])}")
        eb = {s: {_effective_batch(x) for x in atts[s]} for s in (a, b)}
        if eb[a] != eb[b] or len(eb[a]) > 1:
            out.append(f"effective batch differs: {a} {_fmt_set(eb[a])} vs {b} {_fmt_set(eb[b])}")
        dev = {s: {x.result.get("device") or x.device or "?" for x in atts[s]} for s in (a, b)}
        if dev[a] != dev[b] or len(dev[a]) > 1:
            out.append(f"devices differ: {a} {_fmt_set(dev[a])} vs {b} {_fmt_set(dev[b])}")
        for name, what in (("tokens", "achieved tokens"), ("params.total", "parameter counts")):
            ma, mb = _mean(_values(ua, name)), _mean(_values(ub, name))
            rel = _rel(ma, mb)
            if rel is not None and rel > CONFOUND_REL and ma is not None and mb is not None:
                out.append(f"{what} {100 * (ma / mb - 1):+.1f}%: {a} {ma:,.0f} vs {b} {mb:,.0f}")
        return tuple(out)

    # -- chains

    def root_chain(self, step: str) -> tuple[str, ...]:
        chain = [step]
        seen = {step}
        while (p := self.parent(chain[0])) is not None and p not in seen:
            chain.insert(0, p)
            seen.add(p)
        return tuple(chain)

    def cumulative(self) -> tuple[Cumulative, ...]:
        out = []
        for step in self.order:
            chain = self.root_chain(step)
            if len(chain) < 2:
                continue
            root = chain[0]
            predicted = None
            mine, base = self.expect_of(step).get(self.metric), self.expect_of(root).get(self.metric)
            if mine is not None and base is not None:
                ref = (base[0] + base[1]) / 2
                predicted = (mine[0] - ref, mine[1] - ref)
            c = self.compare(step, root, "", "cumulative")
            if c.delta is None:
                verdict = "pending"
            elif predicted is None:
                verdict = "no prediction"
            elif predicted[0] <= c.delta <= predicted[1]:
                verdict = "as predicted"
            else:
                gained_less = (c.delta > predicted[1]) == lower_is_better(self.metric)
                verdict = "short of prediction" if gained_less else "beyond prediction"
            out.append(Cumulative(step=step, root=root, chain=chain, verdict=verdict,
                                  delta=c.delta, spread=c.spread, predicted=predicted))
        return tuple(out)

    def chains(self) -> tuple[ChainCheck, ...]:
        parents = {self.parent(s) for s in self.order}
        out = []
        for leaf in self.order:
            if leaf in parents:
                continue
            chain = self.root_chain(leaf)
            if len(chain) < 3:
                continue
            breaks, pending = [], []
            for prev, cur in zip(chain, chain[1:], strict=False):
                verdict = self.compare(cur, prev, "", "parent").verdict
                if verdict == "worse":
                    breaks.append(cur)
                elif verdict == "pending":
                    pending.append(cur)
            monotone = False if breaks else (None if pending else True)
            out.append(ChainCheck(chain=chain, monotone=monotone, breaks=tuple(breaks),
                                  pending=tuple(pending)))
        return tuple(out)

    # -- checks and flags

    def scale_note(self, step: str) -> str | None:
        """Why a step's expected ranges do not apply to its runs: they ran at another model
        preset or dataset than the spec declares (a smoke run with --preset/--dataset)."""
        spec = self.results.spec or {}
        defaults = spec.get("defaults") or {}
        declared = {"model.preset": _lookup(defaults, "model.preset"),
                    "data.dataset": _lookup(defaults, "data.dataset")}
        for s in self.root_chain(step):
            for key in declared:
                v = _lookup(self.spec_steps.get(s) or {}, key)
                if v is not None:
                    declared[key] = v
        ran: dict[str, set[str]] = {k: set() for k in declared}
        for run in self.used(step):
            assert run.used is not None
            for key in declared:
                ran[key].add(str(_lookup(run.used.config, key)))
        diffs = [f"{key} {_fmt_set(ran[key])} (expected for {declared[key]})"
                 for key in declared if declared[key] is not None and ran[key]
                 and ran[key] != {str(declared[key])}]
        return "runs at " + ", ".join(diffs) if diffs else None

    def expectations(self) -> tuple[ExpectCheck, ...]:
        out = []
        for step in self.order:
            note = self.scale_note(step)
            for name, (lo, hi) in self.expect_of(step).items():
                xs = _values(self.used(step), name)
                mean = _mean(xs)
                if mean is None:
                    verdict = "pending"
                elif note:
                    verdict = "not comparable"
                else:
                    verdict = "below" if mean < lo else "above" if mean > hi else "inside"
                out.append(ExpectCheck(step=step, metric=name, lo=lo, hi=hi, verdict=verdict,
                                       mean=mean, n=len(xs), note=note or ""))
        return tuple(out)

    def flags(self, expectations: Sequence[ExpectCheck],
              series: MetricSeries | None) -> tuple[Flag, ...]:
        out: list[Flag] = []
        for step in self.order:
            for run in self.runs.get(step, ()):
                kind = _failure(run)
                if kind is not None:
                    latest = run.latest
                    detail = latest.error_message or latest.result.get("error_message") or ""
                    msg = f"seed {run.seed}: {kind}" + (f": {detail}" if detail else "")
                    out.append(Flag("diverged" if kind == "diverged" else "failed", step,
                                    msg, run.seed))
            parent = self.parent(step)
            if parent is not None:
                tps, ptps = (_mean(_values(self.used(s), "tokens_per_s")) for s in (step, parent))
                if tps is not None and ptps and tps < (1 - THROUGHPUT_DROP) * ptps:
                    out.append(Flag("throughput", step, f"throughput {100 * (tps / ptps - 1):+.1f}%"
                                    f" vs {parent} ({tps:,.0f} vs {ptps:,.0f} tokens/s)"))
            if series is not None:
                out += self._series_flags(step, series)
        for e in expectations:
            if e.verdict in ("below", "above"):
                out.append(Flag("outside_expected", e.step, f"{e.metric} {e.mean:.4g} {e.verdict} "
                                f"the expected [{e.lo:g}, {e.hi:g}] (n={e.n})"))
        return tuple(out)

    def _series_flags(self, step: str, series: MetricSeries) -> list[Flag]:
        collapsed: dict[str, set[str]] = {}
        no_grad: dict[str, set[str]] = {}
        for run in self.used(step):
            assert run.used is not None
            for name, points in series.get(run.used.attempt_id, {}).items():
                prefix, key, layer = split_stat(name)
                values = [v for _, v in points if math.isfinite(v)]
                if not values:
                    continue
                where = f"{layer or '-'}/seed {run.seed}"
                if prefix == "stats" and is_gate_stat(key):
                    if (abs(values[-1]) < GATE_CLOSED and max(abs(v) for v in values) >= GATE_OPEN):
                        collapsed.setdefault(key, set()).add(where)
                elif prefix == "grad" and len(values) >= 2:
                    if all(abs(v) <= GRAD_ZERO for v in values):
                        no_grad.setdefault(key, set()).add(where)
        out = []
        for key, places in sorted(collapsed.items()):
            out.append(Flag("gate_collapsed", step, f"gate {key} collapsed to ~0 "
                            f"(|last| < {GATE_CLOSED:g}) at {_fmt_set(places)}"))
        for key, places in sorted(no_grad.items()):
            out.append(Flag("no_gradient", step, f"mixing scalar {key} never got gradient "
                            f"at {_fmt_set(places)}"))
        return out

    # -- rules

    def rule(self, raw: Mapping[str, Any], expectations: Sequence[ExpectCheck],
             flags: Sequence[Flag], series: MetricSeries | None) -> RuleOutcome:
        """Evaluate one spec rule; a rule without `step` covers every step."""
        step = str(raw["step"]) if raw.get("step") else None
        say = str(raw.get("say") or "")
        metric = str(raw["metric"]) if raw.get("metric") else None
        conds = [(k, v) for k, v in raw.items()
                 if k not in ("step", "say", "metric") and v is not None and v is not False]
        label = step or "*"
        if len(conds) != 1 or conds[0][0] not in CONDITIONS:
            got = ", ".join(k for k, _ in conds) or "none"
            return RuleOutcome(label, got, say, "invalid",
                               f"a rule needs exactly one of {', '.join(CONDITIONS)}")
        cond, target = conds[0]
        if cond in COMPARE_CONDITIONS:
            if step is None:
                return RuleOutcome(label, cond, say, "invalid", f"{cond} needs `step:`")
            c = self.compare(step, str(target), "", "rule", metric)
            fired = {"worse_than": c.verdict == "worse",
                     "not_better_than": c.verdict in ("worse", "noise"),
                     "better_than": c.verdict == "better"}[cond]
            evidence = (c.note if c.verdict == "pending" else
                        f"{step} - {target} = {_signed(c.delta)} "
                        f"(±{_num(c.spread)}, noise < {_num(c.threshold)}): {c.verdict}")
            status = "pending" if c.verdict == "pending" else ("fired" if fired else "quiet")
            return RuleOutcome(label, f"{cond} {target}", say, status, evidence)
        steps = [step] if step is not None else list(self.order)
        if cond == "outside_expected":
            checks = [e for e in expectations if e.step in steps
                      and (metric is None or e.metric == metric)]
            bad = [e for e in checks if e.verdict in ("below", "above")]
            done = [e for e in checks if e.verdict in ("inside", "below", "above")]
            status = "fired" if bad else ("quiet" if checks and len(done) == len(checks)
                                         else "pending")
            evidence = "; ".join(f"{e.step} {e.metric} {_num(e.mean)} vs [{e.lo:g}, {e.hi:g}]"
                                 + (f" ({e.note})" if e.note else "")
                                 for e in (bad or checks)) or "no expected range declared"
            return RuleOutcome(label, cond, say, status, evidence)
        kinds = {"diverged": ("diverged",), "failed": ("failed", "diverged"),
                 "gate_collapsed": ("gate_collapsed",), "no_gradient": ("no_gradient",),
                 "slower": ("throughput",)}[cond]
        hits = [f for f in flags if f.step in steps and f.kind in kinds]
        runs = [r for s in steps for r in self.runs.get(s, ())]
        finished = bool(runs) and all(r.state in TERMINAL for r in runs)
        needs_series = cond in ("gate_collapsed", "no_gradient")
        if hits:
            status = "fired"
        elif not finished or (needs_series and series is None):
            status = "pending"
        else:
            status = "quiet"
        evidence = "; ".join(f"{f.step} {f.message}" if step is None else f.message
                             for f in hits) or (
            "metric series not loaded" if needs_series and series is None else "")
        return RuleOutcome(label, cond, say, status, evidence)


def _lookup(d: Mapping[str, Any], dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _shape(config: Mapping[str, Any]) -> str:
    """`L12 H12 C768 T1024 V50304`; `?` for what the config does not say."""
    model = config.get("model") or {}
    return " ".join(f"{p}{'?' if model.get(k) is None else model[k]}" for p, k in SHAPE_KEYS)


def _config_batch(config: Mapping[str, Any]) -> str:
    t = config.get("train") or {}
    m = config.get("model") or {}
    try:
        return f"{int(t['batch_size']) * int(t.get('grad_accum', 1)) * int(m['block_size'])}"
    except (KeyError, TypeError, ValueError):
        return "?"


def _effective_batch(a: AttemptResult) -> str:
    v = metric_value(a.result, "effective_batch_tokens")
    if v is not None:
        return f"{v:.0f}"
    t = a.config.get("train") or {}
    m = a.config.get("model") or {}
    try:
        return f"{int(t['batch_size']) * int(t['grad_accum']) * int(m['block_size'])}"
    except (KeyError, TypeError, ValueError):
        return "?"


def _signed(x: float | None) -> str:
    return "?" if x is None else f"{x:+.4f}"


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:.4f}"
