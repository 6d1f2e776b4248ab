"""The workers table (`recip status`, `recip workers ls`) and the live summary of
`recip workers up`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.cli.format import DASH, aware, counts_line, fmt_age
from orchestrator.cli.render import STATE_STYLE
from orchestrator.core.states import LEASED
from orchestrator.core.views import Snapshot, WorkerView


def attempt_names(snapshot: Snapshot) -> dict[int, str]:
    """attempt id -> `study V1 seed 2 attempt 3`, as `recip show` numbers attempts."""
    return {r.attempt_id: f"{s.name} {r.step} seed {r.seed} attempt {r.attempt_no}"
            for s in snapshot.studies for r in s.runs if r.attempt_id is not None}


def _worker_state(w: WorkerView) -> Text:
    if w.stopped_at is not None:
        return Text("stopped", style="dim")
    if w.quarantined:
        return Text("quarantined", style="yellow")
    return Text("up", style="green")


def render_workers(workers: Iterable[WorkerView], *, now: datetime,
                   names: Mapping[int, str], include_stopped: bool = False,
                   title: str | None = None) -> Table | None:
    """One row per worker (live ones unless `include_stopped`): id, host, GPU, pid, the
    attempt it runs named as `recip show` does (study, step, seed, attempt number, from
    `names`; never the database's internal id), heartbeat age, state. None when no row."""
    shown = [w for w in workers if include_stopped or w.stopped_at is None]
    if not shown:
        return None
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold",
                  title=title, title_justify="left", title_style="bold")
    for name in ("worker", "host", "gpu", "pid", "attempt", "heartbeat", "state"):
        table.add_column(name, no_wrap=name != "attempt", overflow="ellipsis")
    for w in shown:
        current = DASH
        if w.current_attempt is not None:
            current = names.get(w.current_attempt, "another study's attempt")
        table.add_row(w.id, w.host, w.gpu or DASH, DASH if w.pid is None else str(w.pid),
                      current,
                      fmt_age(now - aware(w.last_heartbeat)) if w.last_heartbeat else DASH,
                      _worker_state(w))
    return table


def render_pool(snapshot: Snapshot, *, title: str, finished: Sequence[str] = (),
                now: datetime | None = None) -> RenderableType:
    """The live summary of `recip workers up`: the pool, its workers, the studies' counts."""
    now = aware(now or snapshot.taken_at)
    parts: list[RenderableType] = [Text(title, style="bold")]
    table = render_workers(snapshot.workers, now=now, names=attempt_names(snapshot))
    if table is not None:
        parts.append(table)
    for study in snapshot.studies:
        running = [r for r in study.runs if r.state in LEASED]
        line = Text(f"{study.name}  ")
        line.append(counts_line(study.counts))
        parts.append(line)
        for r in running:
            parts.append(Text(
                f"  {r.step} seed {r.seed} attempt {r.attempt_no}: {r.state} on "
                f"{r.worker or DASH}, iter {DASH if r.iter is None else r.iter}",
                style=STATE_STYLE.get(r.state or "", "")))
    for line_ in finished[-5:]:
        parts.append(Text(line_, style="dim"))
    return Group(*parts)
