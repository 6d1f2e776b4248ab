"""The worker's free-space guard: no claim while the runs dir is nearly full.

An attempt that starts on a full disk fails `disk_full` a few seconds later and leaves a
half-written checkpoint behind; refusing the claim keeps the attempt queued for a box with
room. The threshold is `$RECIP_MIN_FREE_MB` (default 200 MB; 0 turns the guard off)."""

from __future__ import annotations

import logging
from pathlib import Path

from workers.train import disk

logger = logging.getLogger(__name__)


class DiskGuard:
    def __init__(self, runs_dir: Path, min_free_bytes: int) -> None:
        self.runs_dir = runs_dir
        self.min_free_bytes = min_free_bytes
        self.refused: str | None = None
        """Why the last check refused a claim, or None when it allowed it."""

    def refusal(self) -> str | None:
        """Why this worker must not claim now (too little free space in runs_dir), or None;
        logged once per stretch of refusals."""
        need = self.min_free_bytes
        free = disk.free_bytes(self.runs_dir)
        if need <= 0 or free is None or free >= need:
            self.refused = None
            return None
        why = (f"not claiming: {disk.fmt_bytes(free)} free in {self.runs_dir}, below the "
               f"{disk.fmt_bytes(need)} a worker needs ({disk.MIN_FREE_ENV}); free space there")
        if self.refused is None:
            logger.warning("%s", why, extra={"action": "claim_refused_low_disk", "free": free})
        self.refused = why
        return why
