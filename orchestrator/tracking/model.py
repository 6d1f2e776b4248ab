"""TrackedRun: one W&B run as recip reads it, whether from a local run file or the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class TrackedRun:
    source: str
    """`wandb` (the W&B API) or `wandb-offline` (a local run file)."""
    ref: str
    """`entity/project/run_id`, or the local run directory."""
    run_id: str
    project: str | None
    entity: str | None
    name: str | None
    config: dict[str, Any]
    tags: tuple[str, ...]
    summary: dict[str, Any]
    history: tuple[dict[str, Any], ...]
    """Every logged row ({key: value}, with `_step`), not a sample."""
    commit: str | None = None
    host: str | None = None
    gpu: str | None = None
    state: str | None = None
    started_at: datetime | None = None
    local_dir: str | None = None

    @property
    def identity(self) -> str:
        """The same for a run read offline and, after `wandb sync`, from the API."""
        return f"wandb:{self.project or '?'}/{self.run_id}"
