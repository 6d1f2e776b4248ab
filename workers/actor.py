"""The Ray actor: a thin shell that runs one WorkerLoop in its own process.

Ray gives a GPU actor its GPU through CUDA_VISIBLE_DEVICES; the attempt processes the
loop spawns inherit it. `max_concurrency=2` lets `stop()` arrive while `run()` works.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray

from workers.loop import WorkerLoop, WorkerReport, WorkerSettings, default_worker_id
from workers.runner import SubprocessRunner


@dataclass(frozen=True)
class ActorSpec:
    """Everything a worker actor needs; plain data, pickled to the actor."""

    db_url: str
    settings: WorkerSettings
    slot: str
    """`gpu` or `cpu0`, `cpu1`, ...: the worker id is `host:slot-pid`."""
    cwd: str
    runner_command: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    node_tag: str = ""
    """`@<node>` when several Ray nodes share one host (`--node`): the slot, and so the
    quarantine that sticks to `host:slot`, is then that node's own."""


class WorkerActor:
    def __init__(self, spec: ActorSpec) -> None:
        self.spec = spec
        for key, value in spec.env:
            os.environ[key] = value
        slot = spec.slot
        gpus = ray.get_gpu_ids()
        if gpus:
            slot = f"gpu{','.join(str(g) for g in gpus)}"
        self.settings = replace(spec.settings, worker_id=default_worker_id(slot + spec.node_tag))
        self.loop: WorkerLoop | None = None
        self._stop_requested = False

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "worker_id": self.settings.worker_id,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def run(self) -> WorkerReport:
        from orchestrator.queue.repo import QueueRepo

        repo = QueueRepo.open(self.spec.db_url)
        runner = SubprocessRunner(self.spec.runner_command, cwd=Path(self.spec.cwd), warm=True)
        self.loop = WorkerLoop(repo, self.settings, runner=runner)
        if self._stop_requested:
            self.loop.stop()
        try:
            return self.loop.run()
        finally:
            runner.close()
            close = getattr(repo, "close", None)
            if callable(close):
                close()

    def stop(self) -> None:
        self._stop_requested = True
        if self.loop is not None:
            self.loop.stop()


_GPU: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1, "max_concurrency": 2}
_CPU: dict[str, Any] = {"num_cpus": 1, "max_concurrency": 2}
GpuWorker = ray.remote(**_GPU)(WorkerActor)
CpuWorker = ray.remote(**_CPU)(WorkerActor)
