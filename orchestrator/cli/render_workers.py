"""Pure renderers for `recip workers up | ls` (rich lives here and in render.py only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.cli.render import STATE_STYLE, counts_line, fmt_age
from orchestrator.core.states import LEASED
from orchestrator.core.views import Snapshot, WorkerView

DASH = "–"


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def render_worker_table(workers: Iterable[WorkerView], *, now: datetime,
                        include_stopped: bool = False) -> Table:
    """One row per worker: id, host, GPU, pid, attempt, heartbeat age, state."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in ("worker", "host", "gpu", "pid", "attempt", "heartbeat", "state"):
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for w in workers:
        if w.stopped_at is not None and not include_stopped:
            continue
        state = Text("stopped", style="dim") if w.stopped_at else Text("up", style="green")
        beat = fmt_age(now - _aware(w.last_heartbeat)) if w.last_heartbeat else DASH
        table.add_row(w.id, w.host, w.gpu or DASH, DASH if w.pid is None else str(w.pid),
                      DASH if w.current_attempt is None else str(w.current_attempt),
                      beat, state)
    return table


def render_pool(snapshot: Snapshot, *, title: str, finished: Sequence[str] = (),
                now: datetime | None = None) -> RenderableType:
    """The live summary of `recip workers up`: the pool, its workers, the studies' counts."""
    now = _aware(now or snapshot.taken_at)
    parts: list[RenderableType] = [Text(title, style="bold")]
    parts.append(render_worker_table(snapshot.workers, now=now))
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
