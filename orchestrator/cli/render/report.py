"""`recip report --format table`: a Report as rich renderables."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.text import Text

from orchestrator.cli.render import WIDTH
from orchestrator.report.export import (
    comparison_notes,
    fmt_ci,
    fmt_delta,
    fmt_int,
    fmt_mean,
    fmt_num,
    fmt_p,
    fmt_reading,
    fmt_signed,
    fmt_test,
)
from orchestrator.report.values import Report

VERDICT_STYLE = {"better": "green", "worse": "red", "equivalent": "cyan", "inconclusive": "dim",
                 "confounded": "magenta", "pending": "yellow"}
RULE_STYLE = {"fired": "bold red", "quiet": "green", "pending": "yellow",
              "inconclusive": "dim", "confounded": "magenta"}
EXPECT_STYLE = {"inside": "green", "below": "red", "above": "red", "pending": "yellow",
                "not comparable": "dim"}


Cell = tuple[str, str]
"""(text, style); the text may hold newlines."""
Column = tuple[str, int, bool]
"""(header, max width, right-aligned)."""


def text_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> Text:
    """Columns as one Text, cells wrapped inside their column's width (no rich Table: its
    layout costs 1-8 ms a row, which a 100-step report cannot afford, docs/performance.md).
    A column is as wide as its widest cell or header, capped at its max width."""
    widths: list[int] = []
    for i, (name, cap, _) in enumerate(columns):
        longest = max((len(line) for row in rows for line in row[i][0].split("\n")),
                      default=0)
        if i == len(columns) - 1:      # the last column takes what the others leave
            cap = max(cap, WIDTH - sum(widths) - 2 * (len(columns) - 1))
        widths.append(max(1, min(cap, max(longest, len(name)))))
    out = Text(no_wrap=True, overflow="fold")
    out.append(title + "\n", style="bold")

    def emit(cells: Sequence[Cell], style: str = "") -> None:
        wrapped = [_wrap(text, w) for (text, _), w in zip(cells, widths, strict=True)]
        for k in range(max(len(lines) for lines in wrapped)):
            parts = []
            for i, lines in enumerate(wrapped):
                piece = lines[k] if k < len(lines) else ""
                right = columns[i][2]
                pad = " " * (widths[i] - len(piece))
                if i == len(columns) - 1 and not right:
                    pad = ""
                parts.append((pad + piece if right else piece + pad, style or cells[i][1]))
            for i, (piece, st) in enumerate(parts):
                out.append(piece, style=st)
                if i != len(parts) - 1:
                    out.append("  ")
            out.append("\n")

    emit([(name, "") for name, _, _ in columns], style="bold")
    for row in rows:
        emit(row)
    out.rstrip()
    return out


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for part in text.split("\n"):
        lines += textwrap.wrap(part, width, break_long_words=True, break_on_hyphens=False) or [""]
    return lines


def render_report(report: Report, notes: Sequence[str] = ()) -> RenderableType:
    """Header, the overrides `notes`, steps, deltas, cumulative/monotonicity, expected ranges, rules, flags."""
    parts: list[RenderableType] = [Text.assemble(
        (f"{report.study}", "bold"),
        f"  metric {report.metric}  alpha {report.alpha:g}  margin {report.margin:g}")]
    parts += [Text(line, style="yellow") for line in notes]
    if report.description:
        parts.append(Text(report.description, style="dim"))
    parts.append(Text(f"method: {report.method}", style="dim"))

    parts.append(text_table("steps", (
        ("step", 16, False), ("parent", 12, False), ("status", 13, False), ("n", 3, True),
        (report.metric, 17, True), ("tok/s", 9, True), ("params", 12, True),
        ("commit", 9, False)), [
        [(s.step, ""), (s.parent or "–", ""), (s.status, ""), (str(s.n), ""),
         (fmt_mean(s), ""), (fmt_int(s.tokens_per_s), ""), (fmt_int(s.params_total), ""),
         (",".join(s.commits) or "–", "")] for s in report.steps]))

    if report.comparisons:
        parts.append(text_table(
            "deltas (a - b) at equal budget with interval, p raw / Holm-adjusted; equal tokens",
            (("comparison", 18, False), ("delta / interval", 16, False), ("p / adj", 7, False),
             ("verdict", 12, False), ("equal tokens", 16, False), ("test, notes", 22, False)),
            [[(c.label, ""), (f"{fmt_delta(c)}\n{fmt_ci(c.ci, 3)}", ""),
              (f"{fmt_p(c.p)}\n{fmt_p(c.p_adj)}", ""),
              (c.verdict, VERDICT_STYLE.get(c.verdict, "")),
              ("\n".join(fmt_reading(r, short=True) for r in c.readings[1:]) or "–", ""),
              ("\n".join(([fmt_test(c)] if c.delta is not None else [])
                         + comparison_notes(c)) or "–",
               "yellow" if c.confounders else "dim")] for c in report.comparisons]))

    if report.cumulative:
        parts.append(text_table("cumulative vs root", (
            ("step", 16, False), ("root", 12, False), ("delta", 8, True),
            ("interval", 18, False), ("predicted", 18, False), ("verdict", 19, False)), [
            [(cu.step, ""), (cu.root, ""), (fmt_signed(cu.delta), ""), (fmt_ci(cu.ci), ""),
             (f"[{cu.predicted[0]:+.4f}, {cu.predicted[1]:+.4f}]" if cu.predicted else "–", ""),
             (cu.verdict, "")] for cu in report.cumulative]))

    for ch in report.chains:
        state = {True: ("monotone", "green"), False: ("NOT monotone", "red"),
                 None: ("pending", "yellow")}[ch.monotone]
        extra = f" (worse than parent: {', '.join(ch.breaks)})" if ch.breaks else ""
        parts.append(Text.assemble("chain ", " → ".join(ch.chain), ": ", state, extra))

    if report.expectations:
        parts.append(text_table("expected ranges", (
            ("step", 16, False), ("metric", 16, False), ("expected", 18, False),
            ("mean", 8, True), ("n", 3, True), ("verdict", 27, False)), [
            [(e.step, ""), (e.metric, ""), (f"[{e.lo:g}, {e.hi:g}]", ""), (fmt_num(e.mean), ""),
             (str(e.n), ""), (e.verdict + (f": {e.note}" if e.note else ""),
                              EXPECT_STYLE.get(e.verdict, ""))] for e in report.expectations]))

    if report.rules:
        rows = []
        for r in report.rules:
            body = r.say if r.status == "fired" else r.evidence
            if r.status == "fired" and r.evidence:
                body = f"{r.evidence}\n→ {r.say}"
            rows.append([(r.step, ""), (r.condition, ""),
                         (r.status.upper() if r.status == "fired" else r.status,
                          RULE_STYLE.get(r.status, "")), (body or "–", "")])
        parts.append(text_table("troubleshooting rules", (
            ("step", 12, False), ("condition", 24, False), ("status", 12, False),
            ("evidence / say", 46, False)), rows))

    if report.flags:
        parts.append(Text("flags", style="bold"))
        for f in report.flags:
            parts.append(Text.assemble("  ", (f.step, "bold"), f" {f.kind}: ", f.message))
    else:
        parts.append(Text("flags: none", style="dim"))
    return Group(*parts)
