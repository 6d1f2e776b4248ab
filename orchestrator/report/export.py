"""A Report as JSON or Markdown, plus the cell formatting the terminal table shares."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.core.plain import plain
from orchestrator.report.values import Comparison, Reading, Report, StepSummary


def to_dict(report: Report, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Report as plain JSON-able data (tuples become lists), with the top-level
    `overrides` the study's current runs were submitted under ({} = as written)."""
    data: dict[str, Any] = plain(report, finite_only=True)
    data["overrides"] = plain(dict(overrides or {}), finite_only=True)
    return data


def to_json(report: Report, overrides: dict[str, Any] | None = None, *,
            compact: bool = False) -> str:
    """The Report as JSON, keys sorted: indented (a file, a terminal), or one line
    (`compact`, into a pipe: json's C encoder only runs without an indent)."""
    if compact:
        return json.dumps(to_dict(report, overrides), sort_keys=True,
                          separators=(",", ":")) + "\n"
    return json.dumps(to_dict(report, overrides), indent=2, sort_keys=True) + "\n"


def to_markdown(report: Report, plots: Sequence[Path] = (), relative_to: Path | None = None,
                notes: Sequence[str] = ()) -> str:
    """The Report as a Markdown document; `plots` are linked relative to `relative_to`
    (the directory of the Markdown file) when given; `notes` (the overrides the study ran
    under, `core.results.overrides_lines`) are quoted under the title."""
    m = report.metric
    lines = [f"# Study `{report.study}`", ""]
    if notes:
        lines += [f"> {line}  " for line in notes] + [""]
    if report.description:
        lines += [report.description, ""]
    lines += [f"Metric: `{m}` (mean ± sample std over seeds), alpha {report.alpha:g}, "
              f"equivalence margin {report.margin:g}.", "", f"Method: {report.method}.", ""]
    lines += ["## Steps", "", _row(["step", "parent", "mechanisms", "status", "n", m,
                                    "tokens/s", "params", "commit"]), _rule(9)]
    for s in report.steps:
        lines.append(_row([s.step, s.parent or "–", s.mechanisms or "–", s.status, str(s.n),
                           fmt_mean(s), fmt_int(s.tokens_per_s), fmt_int(s.params_total),
                           ",".join(s.commits) or "–"]))
    lines += ["", "## Deltas", "", "At equal budget (the spec's metric at the end of each "
              "run) and at equal tokens (val loss read at the same token count).", "",
              _row(["comparison", "kind", "delta", "interval", "p", "p adj", "test",
                    "verdict", "equal tokens", "confounders / notes"]), _rule(10)]
    for c in report.comparisons:
        lines.append(_row([c.label, c.kind, fmt_delta(c), fmt_ci(c.ci), fmt_p(c.p),
                           fmt_p(c.p_adj), c.method or fmt_test(c), c.verdict,
                           "; ".join(fmt_reading(r) for r in c.readings[1:]) or "–",
                           "; ".join(comparison_notes(c)) or "–"]))
    if report.cumulative:
        lines += ["", "## Cumulative effect", "", _row(["step", "chain", "delta vs root",
                                                        "interval", "predicted", "verdict"]),
                  _rule(6)]
        for cu in report.cumulative:
            pred = f"[{cu.predicted[0]:+.4f}, {cu.predicted[1]:+.4f}]" if cu.predicted else "–"
            lines.append(_row([cu.step, " → ".join(cu.chain), fmt_signed(cu.delta),
                               fmt_ci(cu.ci), pred, cu.verdict]))
    if report.chains:
        lines += ["", "## Monotonicity", ""]
        for ch in report.chains:
            state = {True: "monotone", False: "not monotone", None: "pending"}[ch.monotone]
            extra = (f" (worse than parent: {', '.join(ch.breaks)})" if ch.breaks else
                     f" (pending: {', '.join(ch.pending)})" if ch.pending else "")
            lines.append(f"- {' → '.join(ch.chain)}: {state}{extra}")
    if report.expectations:
        lines += ["", "## Expected ranges", "", _row(["step", "metric", "expected", "mean", "n",
                                                      "verdict"]), _rule(6)]
        for e in report.expectations:
            verdict = e.verdict + (f" ({e.note})" if e.note else "")
            lines.append(_row([e.step, e.metric, f"[{e.lo:g}, {e.hi:g}]", fmt_num(e.mean),
                               str(e.n), verdict]))
    if report.rules:
        lines += ["", "## Troubleshooting rules", "", _row(["step", "condition", "status",
                                                            "evidence", "say"]), _rule(5)]
        for r in report.rules:
            lines.append(_row([r.step, r.condition, r.status.upper() if r.status == "fired"
                               else r.status, r.evidence or "–", r.say]))
    lines += ["", "## Flags", ""]
    lines += [f"- **{f.step}** {f.kind}: {f.message}" for f in report.flags] or ["- none"]
    if plots:
        lines += ["", "## Plots", ""]
        for p in plots:
            target = os.path.relpath(p, relative_to) if relative_to is not None else str(p)
            lines.append(f"![{p.stem}]({target})")
    return "\n".join(lines) + "\n"


def fmt_mean(s: StepSummary) -> str:
    if s.mean is None:
        return "–"
    return f"{s.mean:.4f} ± {s.std:.4f}" if s.std is not None else f"{s.mean:.4f}"


def fmt_delta(c: Comparison) -> str:
    if c.delta is None:
        return "pending"
    pct = f" ({c.delta_pct:+.2f}%)" if c.delta_pct is not None else ""
    return f"{c.delta:+.4f}{pct}"


def fmt_ci(ci: tuple[float, float] | None, digits: int = 4) -> str:
    return "–" if ci is None else f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def fmt_p(p: float | None) -> str:
    return "–" if p is None else "<1e-4" if p < 1e-4 else f"{p:.3g}"


def fmt_test(c: Comparison) -> str:
    """`paired df 2 n 3` / `Welch df 3.4 n 3/2` / `no test n 1/2`."""
    if c.df is None:
        return f"no test n {c.n_a}/{c.n_b}" if c.delta is not None else "–"
    if c.paired:
        return f"paired df {c.df:g} n {c.n_a}"
    return f"Welch df {c.df:.1f} n {c.n_a}/{c.n_b}"


def fmt_reading(r: Reading, short: bool = False) -> str:
    """`-0.0123 [-0.020, -0.004] better @ 1.2M tokens` of an equal-token/FLOP reading
    (`short`: without the interval, for the terminal table)."""
    where = f"@ {fmt_big(r.at)} {r.basis}" if r.at is not None else ""
    if r.verdict == "pending" or r.delta is None:
        return f"{r.basis}: pending"
    ci = "" if short else f" {fmt_ci(r.ci, 3)}"
    return f"{r.delta:+.4f}{ci} {r.verdict} {where}".strip()


def fmt_big(x: float) -> str:
    for div, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"


def comparison_notes(c: Comparison) -> list[str]:
    """Confounders, the throughput/quality reading, the sequential rule, the seeds an
    inconclusive comparison needs, other notes: in that order."""
    out = list(c.confounders)
    if c.interpretation:
        out.append(c.interpretation)
    if c.sequential:
        out.append(c.sequential)
    if c.verdict == "inconclusive":
        out.append(f"needs ~{c.seeds_needed} seeds per side" if c.seeds_needed
                   else "seeds needed: not estimable")
    if c.note:
        out.append(c.note)
    return out


def fmt_signed(x: float | None) -> str:
    return "–" if x is None else f"{x:+.4f}"


def fmt_num(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def fmt_int(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _rule(n: int) -> str:
    return "|" + "---|" * n
