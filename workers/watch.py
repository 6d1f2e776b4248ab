"""One running attempt as the WorkerLoop watches it: its process, its fence, the metrics read
from its files and not yet in the database, and when to write them next."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from workers.metrics_tail import JsonlTail, MetricRow, MetricThinner
from workers.retry import FencedWriter
from workers.runner import AttemptProcess
from workers.storage import CheckpointSync
from workers.train import artifacts

if TYPE_CHECKING:
    from orchestrator.queue.types import ClaimedAttempt


@dataclass
class Watch:
    claimed: ClaimedAttempt
    outdir: Path
    proc: AttemptProcess
    fence: FencedWriter
    tail: JsonlTail
    thinner: MetricThinner
    sync: CheckpointSync | None = None
    pending: list[MetricRow] = field(default_factory=list)
    progress: artifacts.Progress | None = None
    next_heartbeat: float = 0.0
    next_metrics: float = 0.0
