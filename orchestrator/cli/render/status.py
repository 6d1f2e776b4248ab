"""The dashboard (`recip status`, the live view of `recip run`) and `recip queue ls`.

The run rows fit the console they are printed on: the table is laid out when rich renders
it, at that console's width (so `--watch` follows a resized terminal), dropping the least
important columns first (`DROP_ORDER`) and naming them on one dim line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Span, Text

from orchestrator.cli.format import (
    DASH,
    aware,
    counts_line,
    fmt_age,
    fmt_count,
    fmt_eval,
    fmt_phase,
    fmt_seconds,
    fmt_train,
)
from orchestrator.cli.render import STATE_STYLE
from orchestrator.cli.render.workers import attempt_names, render_workers
from orchestrator.core.states import LEASED, TERMINAL
from orchestrator.core.views import RunView, Snapshot, StudyView

DEFAULT_HEARTBEAT_S = 10.0


class Cell(NamedTuple):
    """One table cell: its text and rich style (plain data: a rich Text per cell cost a
    control-code strip each, 13 per run row)."""

    plain: str
    style: str = ""


def heartbeat_cell(run: RunView, now: datetime) -> Cell:
    """Age of the last heartbeat while a lease is held: yellow past 2x the interval, red
    once the lease expired."""
    if run.state not in LEASED or run.heartbeat_at is None:
        return Cell(DASH)
    beat = aware(run.heartbeat_at)
    age = now - beat
    style = ""
    interval = DEFAULT_HEARTBEAT_S
    if run.lease_expires_at is not None:
        lease = aware(run.lease_expires_at)
        if lease > beat:
            interval = (lease - beat).total_seconds() / 3
        if lease <= now:
            return Cell(f"{fmt_age(age)} expired", "bold red")
    if age.total_seconds() > 2 * interval:
        style = "yellow"
    return Cell(fmt_age(age), style)


def _num(v: float | None, fmt: str = "{:.3f}") -> str:
    return DASH if v is None else fmt.format(v)


Column = tuple[str, bool, int | None]
"""(name, right-aligned, max width when the row must shrink; None: never cut)."""
STATUS_COLUMNS: tuple[Column, ...] = (
    ("step", False, 24), ("seed", True, None), ("att", True, None), ("state", False, None),
    ("phase", False, None), ("worker", False, 16), ("iter", True, None), ("train", True, None),
    ("eval", True, None), ("loss", True, None), ("val_loss", True, None), ("tok/s", True, None),
    ("heartbeat", True, None),
)
DROP_ORDER = ("heartbeat", "worker", "tok/s", "loss", "att", "eval", "phase", "iter", "val_loss")
"""The columns a narrow console hides, the least important first; step, seed, state and
train always stay. A run's flags go on their own line below it, in full, at any width."""
BAR = 20


def tokens_per_s(run: RunView) -> float | None:
    """Measured training throughput of the run's latest attempt."""
    if not run.tokens or not run.train_s:
        return None
    return run.tokens / run.train_s


def eval_ratio(runs: Sequence[RunView]) -> float | None:
    """Wall seconds per training second, (train_s + eval_s) / train_s, over the runs that
    measured both; None while none has."""
    train = evals = 0.0
    for r in runs:
        if r.train_s and r.eval_s is not None:
            train += r.train_s
            evals += r.eval_s
    return (train + evals) / train if train else None


def _remaining_s(run: RunView, typical: float | None, ratio: float | None) -> float | None:
    """Wall seconds the run still needs: the training it has left (its time budget left,
    else what its measured fraction implies, else, queued without a time budget, the
    typical run's length) scaled by its measured (train_s + eval_s) / train_s, or by the
    study's `ratio` while it has measured none."""
    if run.state in TERMINAL:
        return 0.0
    used = run.train_s or 0.0
    if run.budget_s:
        left: float | None = max(run.budget_s - used, 0.0)
    elif run.fraction and run.train_s:
        left = run.train_s / run.fraction * (1 - run.fraction)
    else:
        left = typical
    if left is None:
        return None
    own = eval_ratio([run])
    return left * (own or ratio or 1.0)


def study_progress(study: StudyView, *, workers: int = 0) -> Text:
    """`[██████░░░░] 3/8 runs done · budget 1.5/4.0h used (+6m eval) · ETA ~1.2h incl. eval
    at 2 in parallel`: runs finished, training time used of the time budgets and the eval
    time beside it, and the wall time left: each run's training left (from its budget or
    measured fraction) scaled by its measured eval overhead, spread over the runs that train
    at once. "incl. eval" once some run has measured its eval time."""
    runs = study.runs
    done = sum(1 for r in runs if r.state in TERMINAL)
    total = len(runs)
    filled = round(BAR * done / total) if total else 0
    out = Text("[")
    out.append("█" * filled, style="green")
    out.append("░" * (BAR - filled), style="dim")
    out.append(f"] {done}/{total} runs done")
    budget = sum(r.budget_s or 0.0 for r in runs)
    evals = sum(r.eval_s or 0.0 for r in runs)
    if budget:
        used = sum(min(r.train_s or 0.0, r.budget_s or 0.0) if r.state not in TERMINAL
                   else (r.budget_s or 0.0) for r in runs)
        out.append(f" · budget {fmt_seconds(round(used))}/{fmt_seconds(round(budget))} used")
    if evals:
        out.append(f" (+{fmt_eval(evals)} eval)" if budget else f" · eval {fmt_eval(evals)}")
    lengths = [r.train_s / r.fraction for r in runs if r.fraction and r.train_s]
    lengths += [r.budget_s for r in runs if r.budget_s]
    typical = sum(lengths) / len(lengths) if lengths else None
    ratio = eval_ratio(runs)
    left = [_remaining_s(r, typical, ratio) for r in runs]
    if done < total:
        running = sum(1 for r in runs if r.state in LEASED)
        parallel = max(running, workers, 1)
        if any(x is None for x in left):
            out.append(" · ETA unknown (no budget or progress yet)")
        else:
            eta = sum(x or 0.0 for x in left) / parallel
            note = " incl. eval" if ratio is not None else ""
            out.append(f" · ETA ~{fmt_seconds(max(round(eta), 1))}{note} at {parallel} in "
                       "parallel")
    return out


def text_table(columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> list[Text]:
    """A plain column layout, one Text per line, the column header first (no rich Table:
    30x faster at 1,000 rows); cells wider than their column's max are cut with an
    ellipsis, lines never wrap. Each line is one string with style spans (appending cell
    by cell ran rich's control-code strip per cell: 2/3 of a 1,000-run render)."""
    widths = [len(name) for name, _, _ in columns]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell.plain))
    widths = [min(w, cap) if cap else w for w, (_, _, cap) in zip(widths, columns, strict=True)]
    last = len(columns) - 1

    def line(cells: Sequence[Cell], style: str = "") -> Text:
        parts: list[str] = []
        spans: list[Span] = []
        at = 0
        for i, cell in enumerate(cells):
            plain = cell.plain
            if len(plain) > widths[i]:
                plain = plain[: widths[i] - 1] + "…"
            pad = " " * (widths[i] - len(plain))
            if i == last and not columns[i][1]:
                pad = ""
            text = pad + plain if columns[i][1] else plain + pad
            cell_style = style or cell.style
            if cell_style:
                spans.append(Span(at, at + len(text), cell_style))
            parts.append(text)
            at += len(text)
            if i != last:
                parts.append("  ")
                at += 2
        plain = "".join(parts).rstrip()
        n = len(plain)
        return Text(plain, no_wrap=True, overflow="ellipsis",
                    spans=[Span(a, min(b, n), st) for a, b, st in spans if a < n])

    return [line([Cell(name) for name, _, _ in columns], style="bold"),
            *(line(row) for row in rows)]


def fit_columns(columns: Sequence[Column], rows: Sequence[Sequence[Cell]],
                width: int) -> tuple[list[Column], list[str]]:
    """The columns that fit `width` and the names of those hidden: every column at its
    natural width when that fits (a wide terminal shows long step and worker names in
    full), else the columns cut to their max widths, dropping `DROP_ORDER` until the row
    fits."""
    natural = {name: len(name) for name, _, _ in columns}
    for row in rows:
        for (name, _, _), cell in zip(columns, row, strict=True):
            natural[name] = max(natural[name], len(cell.plain))

    def span(cols: Sequence[Column], capped: bool) -> int:
        return sum(min(natural[n], cap) if capped and cap else natural[n]
                   for n, _, cap in cols) + 2 * (len(cols) - 1)

    if span(columns, capped=False) <= width:
        return [(name, right, None) for name, right, _ in columns], []
    shown, hidden = list(columns), []
    for name in DROP_ORDER:
        if span(shown, capped=True) <= width:
            break
        shown = [c for c in shown if c[0] != name]
        hidden.append(name)
    return shown, hidden


@dataclass(frozen=True)
class RunRows:
    """The run rows of one study, laid out at the width of the console that prints them."""

    rows: tuple[tuple[Cell, ...], ...]
    flags: dict[int, str]
    """Row index -> the run's flags, printed in full on their own line below it."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        columns, hidden = fit_columns(STATUS_COLUMNS, self.rows, width)
        keep = [i for i, (name, _, _) in enumerate(STATUS_COLUMNS)
                if name in {c[0] for c in columns}]
        lines = text_table(columns, [[row[i] for i in keep] for row in self.rows])
        for i, line in enumerate(lines):  # line 0 is the column header
            yield line
            if i - 1 in self.flags:
                yield Text.assemble("    flags: ", (self.flags[i - 1], "yellow"))
        if hidden:
            yield Text(f"hidden: {', '.join(hidden)} (a wider terminal or `--json` shows them)",
                       style="dim")


def run_row(r: RunView, now: datetime) -> tuple[Cell, ...]:
    """One run's cells, in STATUS_COLUMNS order."""
    state = r.state or "new"
    label = f"{state}:{r.failure_kind}" if r.failure_kind else state
    rate = tokens_per_s(r)
    return (
        Cell(r.step), Cell(str(r.seed)),
        Cell(DASH if r.attempt_no is None else str(r.attempt_no)),
        Cell(label, STATE_STYLE.get(state, "")),
        Cell(fmt_phase(r.phase) if r.state in LEASED else DASH,
             "yellow" if r.state in LEASED and r.phase not in (None, "training") else ""),
        Cell(r.worker or DASH), Cell(_num(r.iter, "{}")), Cell(fmt_train(r)),
        Cell(fmt_eval(r.eval_s)), Cell(_num(r.loss)), Cell(_num(r.val_loss)),
        Cell(DASH if rate is None else fmt_count(rate)), heartbeat_cell(r, now),
    )


def render_study(study: StudyView, *, db: str, now: datetime, workers: int = 0) -> RenderableType:
    """Header line (name, counts, DB, time), the study's progress bar and ETA, then one row
    per run fitted to the console's width; a run's flags follow on their own indented
    line, never cut."""
    header = Text.assemble(
        (study.name, "bold"), "  ", counts_line(study.counts), "   ", (db, "dim"),
        "   ", now.astimezone(UTC).strftime("%H:%M:%S"),
    )
    rows = tuple(run_row(r, now) for r in study.runs)
    flags = {i: ", ".join(r.flags) for i, r in enumerate(study.runs) if r.flags}
    return Group(header, study_progress(study, workers=workers), RunRows(rows, flags))


def render_status(snapshot: Snapshot, *, now: datetime | None = None) -> RenderableType:
    """Every study in the snapshot, then the live workers."""
    now = aware(now or snapshot.taken_at)
    parts: list[RenderableType] = []
    live = sum(1 for w in snapshot.workers if w.stopped_at is None)
    for study in snapshot.studies:
        if parts:
            parts.append(Text(""))
        parts.append(render_study(study, db=snapshot.db, now=now, workers=live))
    if not parts:
        parts.append(Text(f"no studies in {snapshot.db}", style="dim"))
    workers = render_workers(snapshot.workers, now=now, names=attempt_names(snapshot),
                             title="workers")
    if workers is not None:
        parts.extend([Text(""), workers])
    from orchestrator.core import unclaimed  # issue 16: why queued work waits

    notes = unclaimed.quarantined(snapshot) + unclaimed.reasons(snapshot, now)
    if notes:
        parts.append(Text(""))
        parts.extend(Text(line, style="yellow") for line in notes)
    return Group(*parts)


def render_studies(snapshot: Snapshot) -> Table:
    """`recip queue ls`: one row per study."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in ("study", "runs", "states", "created", "description"):
        table.add_column(name, no_wrap=name != "description", overflow="ellipsis")
    for s in snapshot.studies:
        created = aware(s.created_at).strftime("%Y-%m-%d %H:%M") if s.created_at else DASH
        table.add_row(s.name, str(sum(s.counts.values())), counts_line(s.counts), created,
                      s.description)
    return table
