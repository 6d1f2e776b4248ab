"""`recip queue submit --plan` (and the table a submit prints): one row per run."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.cli.format import DASH, fmt_budget, fmt_mechanisms, fmt_overrides
from orchestrator.core import ids
from orchestrator.core.plan import StudyPlan


def plan_header(plan: StudyPlan) -> str:
    """`study NAME   spec HASH   code POLICY`, then the overrides' lines."""
    code = plan.code_policy if plan.pinned_sha is None else f"pinned {plan.pinned_sha[:10]}"
    head = f"study {plan.name}   spec {ids.short(plan.spec_hash)}   code {code}"
    lines = fmt_overrides(plan.overrides)
    return "\n".join([head, *lines])


def render_plan(plan: StudyPlan, params: Mapping[str, int] | None = None) -> RenderableType:
    """One row per run: step, seed, mechanisms, config hash, budget, GPU-hours[, params]."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    cols = ["step", "seed", "mechanisms", "config", "budget", "gpu-h"]
    if params is not None:
        cols.append("params")
    for name in cols:
        table.add_column(name, no_wrap=name != "mechanisms",
                         justify="right" if name in ("seed", "gpu-h", "params") else "left")
    for r in plan.runs:
        row = [r.step, str(r.seed), fmt_mechanisms(r.config["model"]), ids.short(r.config_hash),
               fmt_budget(r.config["train"]["budget"]),
               DASH if r.budget_seconds is None else f"{r.budget_seconds / 3600:.2f}"]
        if params is not None:
            row.append(f"{params[r.step]:,}" if r.step in params else DASH)
        table.add_row(*row)
    return Group(Text(plan_header(plan)), table)
