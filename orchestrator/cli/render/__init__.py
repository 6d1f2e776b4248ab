"""The render package: pure renderers, one module per view, and the console helpers here.

The only code that imports rich (with `orchestrator.cli.render.*`). Renderers take `now` as
an argument and never read the clock or the database, so tests print them into
`Console(file=io.StringIO(), width=..., color_system=None)`. Views: `status` (the dashboard,
`recip queue ls`), `workers` (the workers table, the `workers up` summary), `plan`, `report`,
`history` (`recip show`, plain lines). Plain-text formatters live in `orchestrator.cli.format`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.live import Live

from orchestrator.cli.format import DASH

if TYPE_CHECKING:
    from orchestrator.core.plan import StudyPlan

__all__ = ["DASH", "STATE_STYLE", "WIDTH", "check_progress", "live", "make_console",
           "print_renderable"]

WIDTH = 100
"""Columns of a console off a terminal, and the most any view but the dashboard uses."""
STATE_STYLE = {
    "running": "cyan", "claimed": "cyan", "queued": "dim", "succeeded": "green",
    "failed": "bold red", "timed_out": "red", "lost": "magenta", "cancelled": "dim",
}


def make_console(file: IO[str] | None = None, *, width: int | None = None,
                 colour: bool | None = None, wide: bool = False) -> Console:
    """A console on stdout (or `file`). Width: `width`, else the terminal's, else `WIDTH`;
    at most `WIDTH` unless `wide` (the dashboard, which fits its columns to the terminal and
    follows it when the window is resized). Colour: rich's own terminal detection when
    `colour` is None (and `NO_COLOR` honoured), forced on or off otherwise."""
    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=False,
                      force_terminal=colour or None,
                      color_system="auto" if colour is not False else None)
    if width is None and wide and console.is_terminal:
        return console
    if width is None:
        width = console.width if console.is_terminal else WIDTH
    console.width = width if wide else min(width, WIDTH)
    return console


def print_renderable(renderable: RenderableType, console: Console | None = None) -> None:
    """Print to stdout (data)."""
    (console or make_console()).print(renderable)


@contextlib.contextmanager
def check_progress(plan: StudyPlan, *, console: Console | None = None,
                   after_s: float = 1.0) -> Iterator[Callable[[int, int, str], None]]:
    """A progress bar on stderr for the model checks of `plan`, drawn only on a terminal and
    only once the checks have taken `after_s`; yields the `progress(done, total, step)`
    callback of `workers.check.check_plan`. The bar is transient: it leaves no lines behind."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(file=sys.stderr, highlight=False)
    bar = Progress(TextColumn("checking models"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                   transient=True, disable=not console.is_terminal)
    t0 = time.monotonic()
    task: list[Any] = []

    def progress(done: int, total: int, step: str) -> None:
        if not task and time.monotonic() - t0 >= after_s:
            bar.start()
            task.append(bar.add_task("", total=total))
        if task:
            bar.update(task[0], completed=done, total=total, description=f"step {step}")

    try:
        yield progress
    finally:
        bar.stop()


def live(frame: Callable[[], tuple[RenderableType, bool]], *, interval: float = 2.0,
         console: Console | None = None, max_frames: int | None = None,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """Redraw `frame()` every `interval` s until it says done (or `max_frames`); frames drawn.
    Off a terminal (a pipe, a log file) only the last frame is printed, once."""
    drawn = 0
    console = console or make_console()
    if not console.is_terminal:
        while True:
            renderable, done = frame()
            drawn += 1
            if done or (max_frames is not None and drawn >= max_frames):
                console.print(renderable)
                return drawn
            sleep(interval)
    with Live(console=console, auto_refresh=False,
              redirect_stdout=False, redirect_stderr=False) as lv:
        while True:
            renderable, done = frame()
            lv.update(renderable, refresh=True)
            drawn += 1
            if done or (max_frames is not None and drawn >= max_frames):
                return drawn
            sleep(interval)
