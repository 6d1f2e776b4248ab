"""Plain-text formatters shared by the renderers, the report and JSON-only commands (no rich:
`recip queue submit --json` formats GPU-hours without importing the render package)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.core.plan import RunPlan
    from orchestrator.core.views import RunView

DASH = "–"
STATE_ORDER = ("running", "claimed", "queued", "succeeded", "failed", "timed_out", "lost",
               "cancelled", "new")


def aware(t: datetime) -> datetime:
    """`t` as an aware datetime (SQLite reads timestamps back naive; they are UTC)."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def fmt_seconds(s: float) -> str:
    """60 -> '60s', 600 -> '10m', 5400 -> '1.5h'."""
    if s < 120:
        return f"{s:g}s"
    if s < 7200:
        return f"{s / 60:g}m" if (s / 60).is_integer() else f"{s / 60:.1f}m"
    return f"{s / 3600:g}h" if (s / 3600).is_integer() else f"{s / 3600:.1f}h"


def fmt_count(n: float) -> str:
    """1500 -> '1.5k', 124_439_808 -> '124M'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            v = n / div
            return f"{v:.0f}{unit}" if v >= 100 or v.is_integer() else f"{v:.1f}{unit}"
    return f"{n:g}"


def fmt_budget(budget: Mapping[str, Any]) -> str:
    """{'seconds': 60, 'iters': 500} -> '60s|500it'."""
    parts = []
    if budget.get("seconds") is not None:
        parts.append(fmt_seconds(float(budget["seconds"])))
    if budget.get("iters") is not None:
        parts.append(f"{fmt_count(budget['iters'])}it")
    if budget.get("tokens") is not None:
        parts.append(f"{fmt_count(budget['tokens'])}tok")
    return "|".join(parts) or DASH


def fmt_mechanism(name: str, knobs: Mapping[str, Any]) -> str:
    """`rmlp(R_ff=64, use_mixer=true)`."""
    if not knobs:
        return name
    inner = ", ".join(f"{k}={_knob(v)}" for k, v in knobs.items())
    return f"{name}({inner})"


def _knob(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return str(v)


def fmt_mechanisms(model: Mapping[str, Any]) -> str:
    """`causal + rmlp(R_ff=64)`."""
    return (f"{fmt_mechanism(model['attn'], model['attn_knobs'])} + "
            f"{fmt_mechanism(model['mlp'], model['mlp_knobs'])}")


def gpu_hours(runs: Iterable[RunPlan]) -> tuple[float, int]:
    """(hours of the runs with a seconds budget, number of runs without one)."""
    hours, unknown = 0.0, 0
    for r in runs:
        if r.budget_seconds is None:
            unknown += 1
        else:
            hours += r.budget_seconds / 3600
    return hours, unknown


def fmt_gpu_hours(runs: Iterable[RunPlan]) -> str:
    """'0.50 GPU-hours', with the runs that have no time budget (unknown duration) named."""
    hours, unknown = gpu_hours(runs)
    if not unknown:
        return f"{hours:.2f} GPU-hours"
    if not hours:
        return f"GPU-hours unknown ({unknown} runs have no time budget)"
    return f"{hours:.2f} GPU-hours + {unknown} runs with no time budget"


def fmt_age(delta: timedelta) -> str:
    """A heartbeat's age: '4s', '12m', '3h'."""
    s = max(delta.total_seconds(), 0.0)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.0f}h"


def fmt_train(run: RunView) -> str:
    """Budget used: '27.0/60.0m', or a percentage when the budget is not in seconds."""
    if run.train_s is None:
        return DASH
    if run.budget_s:
        b = run.budget_s
        div, unit = (3600, "h") if b >= 7200 else (60, "m") if b >= 120 else (1, "s")
        return f"{run.train_s / div:.1f}/{b / div:.1f}{unit}"
    if run.fraction is not None:
        return f"{run.fraction:.0%}"
    return fmt_seconds(round(run.train_s, 1))


PHASE_WORDS = {"training": "train", "eval": "eval", "checkpoint": "ckpt",
               "preparing_data": "data", "post_train": "post"}


def fmt_phase(phase: str | None) -> str:
    """The trainer's phase in one short word: train, eval, ckpt, data, post (others as
    they are, e.g. the final status a run reports just before it finishes)."""
    return DASH if not phase else PHASE_WORDS.get(phase, phase)


def fmt_eval(eval_s: float | None) -> str:
    """Seconds in evals: '0.8s', '12s', '2.5m'."""
    if eval_s is None:
        return DASH
    return f"{eval_s:.1f}s" if eval_s < 10 else fmt_seconds(round(eval_s))


def counts_line(counts: Mapping[str, int]) -> str:
    """`1 running · 2 queued`, states in lifecycle order, zero counts left out."""
    order = {s: i for i, s in enumerate(STATE_ORDER)}
    items = sorted(((s, n) for s, n in counts.items() if n), key=lambda x: order.get(x[0], 99))
    return " · ".join(f"{n} {s}" for s, n in items) or "no runs"


def fmt_overrides(overrides: Mapping[str, Any]) -> list[str]:
    """The command-line overrides of a plan as lines: `overrides: --preset tiny --time 40.0`,
    then `run scale of preset tiny: batch_size=8 ...` when the preset's run-scale train
    settings replaced the spec's. Empty when the study runs as written."""
    flags = [_flag(k, v) for k, v in overrides.items() if k != "run_scale"]
    lines = [f"overrides: {' '.join(flags)}"] if flags else []
    scale = overrides.get("run_scale")
    if scale:
        shown = " ".join(f"{k}={v}" for k, v in scale.items())
        lines.append(f"run scale of preset {overrides.get('preset')}: {shown}")
    return lines


def _flag(key: str, value: Any) -> str:
    if key == "set":
        return " ".join(f"--set {path}={v if isinstance(v, str) else json.dumps(v)}"
                        for path, v in value.items())
    shown = ",".join(map(str, value)) if isinstance(value, list) else value
    return f"--{key.replace('_', '-')} {shown}"
