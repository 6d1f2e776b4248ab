"""Pure Report -> rich renderables for `recip report --format table`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.report.analysis import Report
from orchestrator.report.export import fmt_delta, fmt_int, fmt_mean, fmt_num, fmt_signed

WIDTH = 100
VERDICT_STYLE = {"better": "green", "worse": "red", "noise": "dim", "pending": "yellow"}
RULE_STYLE = {"fired": "bold red", "quiet": "green", "pending": "yellow", "invalid": "magenta"}
EXPECT_STYLE = {"inside": "green", "below": "red", "above": "red", "pending": "yellow",
                "not comparable": "dim"}


def make_console(file: IO[str] | None = None, *, width: int | None = None,
                 colour: bool | None = None) -> Console:
    """A console of at most 100 columns; `colour` None = rich's own terminal detection."""
    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=False,
                      force_terminal=colour or None,
                      color_system="auto" if colour is not False else None)
    console.width = min(width or console.width, WIDTH)
    return console


def render_report(report: Report, notes: Sequence[str] = ()) -> RenderableType:
    """Header, the overrides `notes`, steps, deltas, cumulative/monotonicity, expected ranges,
    rules, flags."""
    parts: list[RenderableType] = [Text.assemble(
        (f"{report.study}", "bold"),
        f"  metric {report.metric}  noise: |delta| < max({report.noise_floor:g}, 2 s.e.)")]
    parts += [Text(line, style="yellow") for line in notes]
    if report.description:
        parts.append(Text(report.description, style="dim"))

    steps = Table(title="steps", title_justify="left", expand=False)
    for col in ("step", "parent", "status", "n", report.metric, "tok/s", "params", "commit"):
        steps.add_column(col, no_wrap=col != "status")
    for s in report.steps:
        steps.add_row(s.step, s.parent or "–", s.status, str(s.n), fmt_mean(s),
                      fmt_int(s.tokens_per_s), fmt_int(s.params_total), ",".join(s.commits) or "–")
    parts.append(steps)

    if report.comparisons:
        deltas = Table(title="deltas (a - b)", title_justify="left")
        for col in ("comparison", "delta", "±s.e.", "noise <", "verdict", "confounders / note"):
            deltas.add_column(col, overflow="fold")
        for c in report.comparisons:
            deltas.add_row(c.label, fmt_delta(c), fmt_num(c.spread), fmt_num(c.threshold),
                           Text(c.verdict, style=VERDICT_STYLE.get(c.verdict, "")),
                           Text("; ".join(c.confounders), style="yellow") if c.confounders
                           else Text(c.note, style="dim"))
        parts.append(deltas)

    if report.cumulative:
        cum = Table(title="cumulative vs root", title_justify="left")
        for col in ("step", "root", "delta", "predicted", "verdict"):
            cum.add_column(col)
        for cu in report.cumulative:
            pred = f"[{cu.predicted[0]:+.4f}, {cu.predicted[1]:+.4f}]" if cu.predicted else "–"
            cum.add_row(cu.step, cu.root, fmt_signed(cu.delta), pred, cu.verdict)
        parts.append(cum)

    for ch in report.chains:
        state = {True: ("monotone", "green"), False: ("NOT monotone", "red"),
                 None: ("pending", "yellow")}[ch.monotone]
        extra = f" (worse than parent: {', '.join(ch.breaks)})" if ch.breaks else ""
        parts.append(Text.assemble("chain ", " → ".join(ch.chain), ": ", state, extra))

    if report.expectations:
        exp = Table(title="expected ranges", title_justify="left")
        for col in ("step", "metric", "expected", "mean", "n", "verdict"):
            exp.add_column(col, overflow="fold")
        for e in report.expectations:
            verdict = e.verdict + (f": {e.note}" if e.note else "")
            exp.add_row(e.step, e.metric, f"[{e.lo:g}, {e.hi:g}]", fmt_num(e.mean), str(e.n),
                        Text(verdict, style=EXPECT_STYLE.get(e.verdict, "")))
        parts.append(exp)

    if report.rules:
        rules = Table(title="troubleshooting rules", title_justify="left")
        for col in ("step", "condition", "status", "evidence / say"):
            rules.add_column(col, overflow="fold")
        for r in report.rules:
            body = r.say if r.status == "fired" else r.evidence
            if r.status == "fired" and r.evidence:
                body = f"{r.evidence}\n→ {r.say}"
            rules.add_row(r.step, r.condition,
                          Text(r.status.upper() if r.status == "fired" else r.status,
                               style=RULE_STYLE.get(r.status, "")), body)
        parts.append(rules)

    if report.flags:
        parts.append(Text("flags", style="bold"))
        for f in report.flags:
            parts.append(Text.assemble("  ", (f.step, "bold"), f" {f.kind}: ", f.message))
    else:
        parts.append(Text("flags: none", style="dim"))
    return Group(*parts)
