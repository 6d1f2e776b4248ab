"""`recip report STUDY [--format table|md|json] [--plot DIR] [--out FILE] [--db URL]`:
what each step did, from the results in the queue. Partial studies report what exists."""

from __future__ import annotations

import enum
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.common import DbOption, db_url, say

if TYPE_CHECKING:
    from orchestrator.core.results import MetricSeries, MetricSummaries, StudyResults
    from orchestrator.queue.repo import QueueRepo
    from orchestrator.report.values import Report


class Format(enum.StrEnum):
    table = "table"
    md = "md"
    json = "json"


class Axis(enum.StrEnum):
    auto = "auto"
    tokens = "tokens"
    iteration = "iteration"


def register(app: typer.Typer) -> None:
    """Add this module's top-level commands to the root app."""
    app.command("report")(report)


def report(
    study: Annotated[str, typer.Argument(help="Study name (see `recip queue ls`).")],
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write PNG plots (curves, deltas, gates) into this directory.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the report to this file instead of stdout.")] = None,
    metric: Annotated[str | None, typer.Option(
        "--metric", help="Metric to compare (default: the spec's analysis.metric).")] = None,
    x_axis: Annotated[Axis, typer.Option(
        "--x-axis", help="x axis of curves.png (auto: tokens under a time budget, else "
        "iterations).")] = Axis.auto,
    db: DbOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Per-step means over seeds; every comparison's delta, interval, raw and Holm-adjusted
    p and verdict (better, worse, equivalent, inconclusive, confounded) at equal budget and
    at equal tokens; expected ranges, rules, flags."""
    if json_out:
        fmt = Format.json
    from orchestrator.core.results import overrides_lines
    from orchestrator.queue.repo import QueueRepo
    from orchestrator.report.analysis import analyze

    repo = QueueRepo.open(db_url(db))
    try:
        results = repo.study_results(study)
        series, summaries = load_series(repo, results, gates=plot is not None)
    finally:
        repo.close()
    rep = analyze(results, series, summaries=summaries, metric=metric)
    plots: list[Path] = []
    if plot is not None:
        from orchestrator.report.plots import write_plots

        plots = write_plots(rep, series, plot,
                            None if x_axis is Axis.auto else x_axis.value)
        for p in plots:
            say(f"wrote {p}")
        if not plots:
            say("no plots: no finished step has metrics yet")
    text = render_text(rep, fmt, plots, out, overrides=results.overrides,
                       notes=overrides_lines(results.overrides, results.spec))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        say(f"wrote {out}")
    else:
        sys.stdout.write(text)
    fired = sum(1 for r in rep.rules if r.status == "fired")
    done = sum(1 for s in rep.steps if s.status == "done")
    say(f"{study}: {done}/{len(rep.steps)} steps done, {fired} rule(s) fired, "
        f"{len(rep.flags)} flag(s)")
    from orchestrator.cli.decide import decision_line, hours_per_seed

    line = decision_line(rep, hours_per_seed(results))
    if line:
        say(line)


def load_series(repo: QueueRepo, results: StudyResults, *,
                gates: bool = False) -> tuple[MetricSeries, MetricSummaries]:
    """What the analysis reads of every succeeded attempt's metrics, in two queries: the
    series of val_loss, the SPAM clip fraction and the KV keep ratio (and its gradients),
    and the stats/... and grad/... families as one SeriesSummary per series (aggregated in
    the database). `gates`: the stats/ series in full too, for gates.png."""
    from orchestrator.report.metrics import SUMMARISED

    ids = [a.attempt_id for a in results.attempts if a.state == "succeeded"]
    series = repo.metric_series(ids, names=["val_loss", "spam_clip_frac"],
                                prefix=("kv_keep_ratio", "stats/") if gates else "kv_keep_ratio")
    return series, repo.metric_summaries(ids, prefix=SUMMARISED)


def render_text(rep: Report, fmt: Format, plots: list[Path], out: Path | None, *,
                overrides: dict[str, Any] | None = None, notes: Sequence[str] = ()) -> str:
    from orchestrator.report.export import to_json, to_markdown

    if fmt is Format.json:  # one line into a pipe, indented into a file or on a terminal
        return to_json(rep, overrides, compact=out is None and not sys.stdout.isatty())
    if fmt is Format.md:
        return to_markdown(rep, plots, relative_to=out.parent if out is not None else None,
                           notes=notes)
    from orchestrator.cli.render import make_console
    from orchestrator.cli.render.report import render_report

    buf = io.StringIO()
    colour = out is None and sys.stdout.isatty()
    make_console(buf, width=100, colour=colour).print(render_report(rep, notes))
    return buf.getvalue()
