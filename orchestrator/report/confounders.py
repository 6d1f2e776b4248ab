"""What makes a comparison unfair: differences between the two sides other than the
mechanism (code commit, budget, data, effective batch, device, achieved tokens, parameter
count, model size), and runs at another scale than the spec declares. Pure functions of
attempts and the typed Spec."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from orchestrator.core.results import AttemptResult
from orchestrator.core.spec import Spec
from orchestrator.report.metrics import lookup, metric_value

CONFOUND_REL = 0.05
SHAPE_KEYS = (("L", "n_layer"), ("H", "n_head"), ("C", "n_embd"), ("T", "block_size"),
              ("V", "vocab_size"))


def commits(atts: Iterable[AttemptResult]) -> set[str]:
    return {(x.code_sha or "?")[:7] for x in atts}


def code_differs(a: Sequence[AttemptResult], b: Sequence[AttemptResult]) -> bool:
    """The two sides ran different code: another commit, or uncommitted changes whose diffs
    differ. Such a comparison is `confounded`, not better or worse."""
    if len(commits(a) | commits(b)) > 1:
        return True
    dirty = {x.diff_hash for x in (*a, *b) if x.code_dirty}
    return bool(dirty) and len({x.diff_hash if x.code_dirty else None for x in (*a, *b)}) > 1


Signature = Callable[[AttemptResult, str], str]


def config_json(x: AttemptResult, key: str) -> str:
    return json.dumps(lookup(x.config, key), sort_keys=True)


def result_confounders(a: str, b: str, xa: Sequence[AttemptResult],
                       xb: Sequence[AttemptResult], *, signature: Signature = config_json,
                       means: tuple[Callable[[str], float | None],
                                    Callable[[str], float | None]] | None = None
                       ) -> tuple[str, ...]:
    """Differences between the attempts used on each side (both have results); `signature`
    and `means` let a caller memoise the config sections and per-side means."""
    atts = {a: xa, b: xb}
    out: list[str] = []
    shas = {s: commits(atts[s]) for s in (a, b)}
    if len(shas[a] | shas[b]) > 1:
        out.append(f"code commits differ: {a} {fmt_set(shas[a])} vs {b} {fmt_set(shas[b])}")
    dirty = [s for s in (a, b) if any(x.code_dirty for x in atts[s])]
    if dirty:
        out.append(f"uncommitted changes in {', '.join(dirty)}")
    for key, what in (("train.budget", "budgets"), ("data", "data")):
        sides = {s: {signature(x, key) for x in atts[s]} for s in (a, b)}
        if sides[a] != sides[b] or len(sides[a]) > 1:
            out.append(f"{what} differ: {a} {fmt_set(sides[a])} vs {b} {fmt_set(sides[b])}")
    eb = {s: {effective_batch(x) for x in atts[s]} for s in (a, b)}
    if eb[a] != eb[b] or len(eb[a]) > 1:
        out.append(f"effective batch differs: {a} {fmt_set(eb[a])} vs {b} {fmt_set(eb[b])}")
    dev = {s: {x.result.get("device") or x.device or "?" for x in atts[s]} for s in (a, b)}
    if dev[a] != dev[b] or len(dev[a]) > 1:
        out.append(f"devices differ: {a} {fmt_set(dev[a])} vs {b} {fmt_set(dev[b])}")
    for name, what in (("tokens", "achieved tokens"), ("params.total", "parameter counts")):
        ma, mb = ((means[0](name), means[1](name)) if means is not None
                  else (mean_of(xa, name), mean_of(xb, name)))
        if ma is not None and mb is not None and mb != 0 and abs(ma - mb) / abs(mb) > CONFOUND_REL:
            out.append(f"{what} {100 * (ma / mb - 1):+.1f}%: {a} {ma:,.0f} vs {b} {mb:,.0f}")
    return tuple(out)


def config_confounders(a: str, b: str, cfg_a: Sequence[Mapping[str, Any]],
                       cfg_b: Sequence[Mapping[str, Any]], *, results: bool) -> tuple[str, ...]:
    """Differences between the two steps' configs (known before any result): model size;
    budget/data/batch too when the result-based check did not run."""
    cfg = {a: cfg_a, b: cfg_b}
    out: list[str] = []
    shapes = {s: {shape(c) for c in cfg[s]} for s in (a, b)}
    if shapes[a] != shapes[b] or len(shapes[a]) > 1:
        out.append(f"model sizes differ: {a} {fmt_set(shapes[a])} vs {b} {fmt_set(shapes[b])}")
    if not results:
        for key, what in (("train.budget", "budgets"), ("data", "data")):
            sides = {s: {json.dumps(lookup(c, key), sort_keys=True) for c in cfg[s]}
                     for s in (a, b)}
            if sides[a] != sides[b] or len(sides[a]) > 1:
                out.append(f"{what} differ: {a} {fmt_set(sides[a])} vs {b} "
                           f"{fmt_set(sides[b])}")
        eb = {s: {config_batch(c) for c in cfg[s]} for s in (a, b)}
        if eb[a] != eb[b] or len(eb[a]) > 1:
            out.append(f"effective batch differs: {a} {fmt_set(eb[a])} vs {b} "
                       f"{fmt_set(eb[b])}")
    return tuple(out)


def scale_note(spec: Spec, chain: Sequence[str], used: Sequence[AttemptResult]) -> str | None:
    """Why a step's expected ranges do not apply to its runs: they ran at another model
    preset or dataset than the spec declares along its lineage `chain` (a smoke run with
    --preset/--dataset)."""
    declared: dict[str, str | None] = {"model.preset": spec.defaults.model.preset,
                                       "data.dataset": spec.defaults.data.dataset}
    for s in chain:
        step = spec.steps.get(s)
        if step is None:
            continue
        if step.model is not None and step.model.preset is not None:
            declared["model.preset"] = step.model.preset
        if step.data is not None and "dataset" in step.data.model_fields_set:
            declared["data.dataset"] = step.data.dataset
    ran: dict[str, set[str]] = {k: set() for k in declared}
    for x in used:
        for key in declared:
            ran[key].add(str(lookup(x.config, key)))
    diffs = [f"{key} {fmt_set(ran[key])} (expected for {declared[key]})"
             for key in declared if declared[key] is not None and ran[key]
             and ran[key] != {str(declared[key])}]
    return "runs at " + ", ".join(diffs) if diffs else None


def mean_of(atts: Iterable[AttemptResult], name: str) -> float | None:
    xs = [v for x in atts if (v := metric_value(x.result, name)) is not None]
    return statistics.fmean(xs) if xs else None


def fmt_set(xs: Iterable[Any]) -> str:
    items = sorted({str(x) for x in xs})
    return ",".join(items) if items else "?"


def shape(config: Mapping[str, Any]) -> str:
    """`L12 H12 C768 T1024 V50304`; `?` for what the config does not say."""
    model = config.get("model") or {}
    return " ".join(f"{p}{'?' if model.get(k) is None else model[k]}" for p, k in SHAPE_KEYS)


def config_batch(config: Mapping[str, Any]) -> str:
    t = config.get("train") or {}
    m = config.get("model") or {}
    try:
        return f"{int(t['batch_size']) * int(t.get('grad_accum', 1)) * int(m['block_size'])}"
    except (KeyError, TypeError, ValueError):
        return "?"


def effective_batch(a: AttemptResult) -> str:
    v = metric_value(a.result, "effective_batch_tokens")
    if v is not None:
        return f"{v:.0f}"
    t = a.config.get("train") or {}
    m = a.config.get("model") or {}
    try:
        return f"{int(t['batch_size']) * int(t['grad_accum']) * int(m['block_size'])}"
    except (KeyError, TypeError, ValueError):
        return "?"
