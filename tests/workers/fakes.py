"""A scripted fake trainer at the process boundary: what `python -m workers.run_attempt`
would write into OUTDIR, driven by the worker's (fake) clock instead of real training."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.clock import FakeClock
from workers.train import artifacts


@dataclass
class Script:
    iters: int = 5
    """Log records written, one every `every` seconds (iter 10, 20, ...)."""
    every: float = 1.0
    status: str | None = "succeeded"
    """result.json status at the end; None = the process dies without a result."""
    exit_code: int = 0
    hang: bool = False
    on_term: str = "checkpoint"
    """`checkpoint`: SIGTERM writes checkpoint.pt + an interrupted result and exits 3;
    `ignore`: SIGTERM does nothing."""
    error: tuple[str, str] | None = None
    eval_every: int = 2
    hooks: list[tuple[float, Callable[[], None]]] = field(default_factory=list)
    """(seconds after spawn, callback): things the test makes happen mid-attempt."""


class FakeProcess:
    _next_pid = 40000

    def __init__(self, clock: FakeClock, outdir: Path, script: Script) -> None:
        self.clock = clock
        self.outdir = outdir
        self.script = script
        self.t0 = clock.monotonic()
        self.written = 0
        self.rc: int | None = None
        self.terms: list[float] = []
        self.kills: list[float] = []
        self._hooks = sorted(script.hooks, key=lambda h: h[0])
        FakeProcess._next_pid += 1
        self._pid = FakeProcess._next_pid

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def elapsed(self) -> float:
        return self.clock.monotonic() - self.t0

    def _write_result(self, status: str, **extra: Any) -> None:
        data = {"status": status, "iters": self.written * 10, "tokens": self.written * 640,
                "train_s": self.elapsed, "final_val_loss": 3.0, "best_val_loss": 2.9,
                "final_train_loss": 3.1, "final_lr": 1e-4, **extra}
        artifacts.write_json_atomic(self.outdir / artifacts.RESULT, data)

    def _advance(self) -> None:
        if self.rc is not None:
            return
        t = self.elapsed
        while self._hooks and self._hooks[0][0] <= t:
            self._hooks.pop(0)[1]()
        s = self.script
        while self.written < s.iters and t >= (self.written + 1) * s.every:
            self.written += 1
            it = self.written * 10
            values: dict[str, float] = {"loss": 4.0 - 0.1 * self.written, "lr": 1e-3}
            with open(self.outdir / artifacts.METRICS, "a") as f:
                f.write(json.dumps({"iter": it, "tokens": it * 64, "train_s": t,
                                    "values": values}) + "\n")
                if self.written % s.eval_every == 0:
                    f.write(json.dumps({"iter": it, "tokens": it * 64, "train_s": t,
                                        "values": {"val_loss": 3.5, "train_loss": 3.4}}) + "\n")
            artifacts.write_json_atomic(self.outdir / artifacts.PROGRESS, {
                "phase": "train", "iter": it, "tokens": it * 64, "train_s": t,
                "fraction": self.written / max(1, s.iters), "loss": values["loss"],
                "val_loss": 3.5, "best_val_loss": 3.5, "lr": 1e-3})
        if s.hang or self.written < s.iters:
            return
        if s.status is not None:
            extra = {}
            if s.error:
                extra = {"error_type": s.error[0], "error_message": s.error[1]}
            self._write_result(s.status, **extra)
        self.rc = s.exit_code

    def poll(self) -> int | None:
        self._advance()
        return self.rc

    def terminate(self) -> None:
        self.terms.append(self.elapsed)
        if self.rc is None and self.script.on_term == "checkpoint":
            (self.outdir / artifacts.CHECKPOINT).write_bytes(b"fake checkpoint")
            self._write_result(artifacts.STATUS_INTERRUPTED)
            self.rc = artifacts.EXIT_INTERRUPTED

    def kill(self) -> None:
        self.kills.append(self.elapsed)
        if self.rc is None:
            self.rc = -9


@dataclass
class Spawn:
    outdir: Path
    resume_from: Path | None
    proc: FakeProcess
    config: dict[str, Any]


class FakeRunner:
    """Spawns FakeProcesses; the script is picked by the step in config.json."""

    def __init__(self, clock: FakeClock, scripts: dict[str, Script] | None = None,
                 default: Script | None = None, fail_spawn: bool = False) -> None:
        self.clock = clock
        self.scripts = scripts or {}
        self.default = default or Script()
        self.fail_spawn = fail_spawn
        self.spawns: list[Spawn] = []

    def spawn(self, outdir: Path, *, resume_from: Path | None) -> FakeProcess:
        if self.fail_spawn:
            raise FileNotFoundError("python: no such file")
        config = json.loads((outdir / artifacts.CONFIG).read_text())
        script = self.scripts.get(config.get("step", ""), self.default)
        proc = FakeProcess(self.clock, outdir, script)
        self.spawns.append(Spawn(outdir, resume_from, proc, config))
        return proc
