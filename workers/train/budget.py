"""Budget (the one stop predicate) and Clock (training time only). design.md §4.

Budget: any of train seconds, iterations, tokens; `exhausted()` is the loop's only stop
test (torchtitan's should_continue_training), `progress()` = max over the set limits, which
drives the LR schedule and the coupling warmup (mechanisms.md §19 decision 8, §9).

Clock: counts training time only. The loop pauses it around eval and checkpoints (after a
device sync, as modded-nanogpt), moves compile warm-up into `compile_s` (nanochat), and
keeps wall time too. The time source is injected: time.perf_counter for real runs,
FakeTime for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    max_train_s: float | None = None
    max_iters: int | None = None
    max_tokens: int | None = None

    def __post_init__(self):
        assert any(v is not None for v in (self.max_train_s, self.max_iters, self.max_tokens)), \
            "a Budget needs at least one limit"

    def exhausted(self, it: int, tokens: int, train_s: float) -> bool:
        return (
            (self.max_iters is not None and it >= self.max_iters)
            or (self.max_tokens is not None and tokens >= self.max_tokens)
            or (self.max_train_s is not None and train_s >= self.max_train_s)
        )

    def progress(self, it: int, tokens: int, train_s: float, horizon_iters: int | None = None) -> float:
        """Fraction of the run done in [0, 1]: the max over every limit. `horizon_iters`
        stands in for max_iters when the budget has no iteration limit (decision 8)."""
        iters = self.max_iters if self.max_iters is not None else horizon_iters
        parts = [0.0]
        if iters:
            parts.append(it / iters)
        if self.max_tokens:
            parts.append(tokens / self.max_tokens)
        if self.max_train_s:
            parts.append(train_s / self.max_train_s)
        return min(1.0, max(parts))

    def describe(self, train_s: float, it: int) -> str:
        if self.max_train_s is not None:
            return f"train {train_s:.1f}/{self.max_train_s:.1f}s"
        if self.max_iters is not None:
            return f"iter {it}/{self.max_iters} | train {train_s:.1f}s"
        return f"train {train_s:.1f}s"


class FakeTime:
    """A time source that only moves when told to (tests)."""

    def __init__(self, start: float = 1000.0):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.t += seconds


class Clock:
    """Training seconds (running segments only), compile seconds and wall seconds.

    Starts paused. `resume()` / `pause()` bracket training work; `paused()` is the context
    manager for eval and checkpoints. `sync` (e.g. torch.cuda.synchronize) runs before each
    reading that closes a segment, so queued GPU work lands in the right bucket.
    """

    def __init__(self, time_fn: Callable[[], float] = time.perf_counter,
                 sync: Callable[[], None] | None = None,
                 train_s: float = 0.0, wall_s: float = 0.0, compile_s: float = 0.0):
        self.time_fn = time_fn
        self.sync = sync
        self._train_s = train_s        # closed segments
        self._wall_offset = wall_s     # wall time of earlier processes (resume)
        self.compile_s = compile_s
        self._wall_start = time_fn()
        self._seg_start: float | None = None

    @property
    def running(self) -> bool:
        return self._seg_start is not None

    @property
    def train_s(self) -> float:
        if self._seg_start is None:
            return self._train_s
        return self._train_s + (self.time_fn() - self._seg_start)

    @property
    def wall_s(self) -> float:
        return self._wall_offset + (self.time_fn() - self._wall_start)

    def resume(self) -> None:
        if self._seg_start is None:
            self._seg_start = self.time_fn()

    def pause(self) -> None:
        if self._seg_start is not None:
            if self.sync is not None:
                self.sync()
            self._train_s += self.time_fn() - self._seg_start
            self._seg_start = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        was_running = self.running
        self.pause()
        try:
            yield
        finally:
            if was_running:
                self.resume()

    def move_to_compile(self, seconds: float) -> None:
        """Re-book `seconds` of training time as compile warm-up."""
        seconds = min(seconds, self.train_s)
        self._train_s -= seconds
        self.compile_s += seconds

    def state_dict(self) -> dict[str, float]:
        return {"train_s": self.train_s, "wall_s": self.wall_s, "compile_s": self.compile_s}

    def load_state_dict(self, state: dict[str, float]) -> None:
        running = self.running
        self._train_s = float(state["train_s"])
        self.compile_s = float(state["compile_s"])
        self._wall_offset = float(state["wall_s"])
        self._wall_start = self.time_fn()
        self._seg_start = self.time_fn() if running else None
