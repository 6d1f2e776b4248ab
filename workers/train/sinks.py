"""Metric sinks: JSONL (always), W&B (optional, the only wandb import), null, fan-out.

One record = (iter, tokens, train_s, {name: value}); metrics.jsonl lines follow
workers/train/artifacts.py. W&B runs offline by default (no login), with a deterministic
run id per attempt, so a resumed attempt appends to its own run and a retry gets a new one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

from workers.train.artifacts import MetricRecord, MetricValues


class MetricsSink(Protocol):
    def log(self, it: int, tokens: int, train_s: float, values: MetricValues) -> None: ...
    def close(self) -> None: ...


class NullSink:
    def log(self, it: int, tokens: int, train_s: float, values: MetricValues) -> None:
        pass

    def close(self) -> None:
        pass


def _clean(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None   # JSON has no NaN; None marks a non-finite value


class JsonlSink:
    """Append-only metrics.jsonl, flushed per record (the worker tails it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.f = open(self.path, "a", buffering=1)

    def log(self, it: int, tokens: int, train_s: float, values: MetricValues) -> None:
        rec: MetricRecord = {"iter": int(it), "tokens": int(tokens),
                             "train_s": round(float(train_s), 4),
                             "values": {k: _clean(v) for k, v in values.items()}}
        self.f.write(json.dumps(rec, sort_keys=True) + "\n")
        self.f.flush()

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()


class TeeSink:
    def __init__(self, *sinks: MetricsSink):
        self.sinks = sinks

    def log(self, it: int, tokens: int, train_s: float, values: MetricValues) -> None:
        for s in self.sinks:
            s.log(it, tokens, train_s, values)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


class WandbSink:
    """W&B run for one attempt; mode offline (default) or online; never prompts to log in.

    Off the start path: `wandb` is imported and `wandb.init` (0.5-2.3 s, the service start
    included) runs in a background thread, so the first training step does not wait for it.
    Records logged meanwhile queue up and reach the run in order; every W&B call happens on
    that thread. A failed init is raised by the next `log` or by `close`, like before but
    without blocking the trainer. `close` drains the queue, finishes the run and joins."""

    _STOP = object()

    def __init__(self, *, run_id: str, name: str, study: str, step: str, mode: str = "offline",
                 project: str | None = None, entity: str | None = None, directory: str | Path = ".",
                 config: dict[str, Any] | None = None, tags: list[str] | None = None):
        """`run_id` and `name` come from `orchestrator.core.ids` (the caller builds them:
        this module never imports the orchestrator)."""
        assert mode in ("offline", "online"), f"WandbSink mode {mode!r}; disabled = do not create one"
        import queue
        import threading

        self.run_id = run_id
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.run: Any = None
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        init = dict(id=self.run_id, project=project or study, entity=entity,
                    name=name, group=step, tags=tags or [],
                    config=config or {}, dir=str(directory), mode=mode, resume="allow",
                    reinit="create_new")
        self._thread = threading.Thread(target=self._serve, args=(init,), name="wandb-sink",
                                        daemon=True)
        self._thread.start()

    def _serve(self, init: dict[str, Any]) -> None:
        try:
            import wandb

            self.run = wandb.init(**init, settings=wandb.Settings(silent=True, console="off"))
            while (item := self._queue.get()) is not self._STOP:
                values, step = item
                self.run.log(values, step=step)
            self.run.finish()
        except BaseException as e:  # noqa: BLE001 - handed to the trainer's thread
            self.error = e

    def _raise(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise RuntimeError(f"W&B run {self.run_id}: {type(err).__name__}: {err}") from err

    def log(self, it: int, tokens: int, train_s: float, values: MetricValues) -> None:
        self._raise()
        self._queue.put(({**values, "tokens": tokens, "train_s": train_s}, int(it)))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(self._STOP)
            self._thread.join()
        self._raise()
