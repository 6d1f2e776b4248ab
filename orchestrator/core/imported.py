"""A run trained outside the queue (a W&B baseline), ready to be stored as an imported run.

An imported run lives in the ordinary tables: a run of the study under its own step name,
with one `succeeded` attempt whose worker is `import`, its result and its metric series.
Its config has the shape of a resolved run config (docs/architecture.md) as far as the
source tells, plus an `imported` section; `identity` (e.g. `wandb:PROJECT/RUN_ID`) makes
the import idempotent, and the trainer refuses such a config (unknown key `imported`), so
a rerun can never train it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

IMPORT_WORKER = "import"
IMPORTED_KEY = "imported"


@dataclass(frozen=True)
class ImportedRun:
    identity: str
    """Stable id of the source run; the same identity is stored once per study."""
    ref: str
    """Where it came from, for humans: `entity/project/run_id` or a local path."""
    seed: int
    config: dict[str, Any]
    """Resolved-config-shaped dict with an `imported` section."""
    result: dict[str, Any]
    """result.json-shaped: best/final val loss, iters, tokens, train_s, device, ..."""
    metrics: tuple[tuple[str, int, float], ...] = ()
    """(name, iteration, value): the full history, not a sample."""
    code_sha: str | None = None
    host: str | None = None
    artifact_dir: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.config, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def is_imported(config: dict[str, Any] | None) -> bool:
    """True for the config of an imported run."""
    return isinstance(config, dict) and isinstance(config.get(IMPORTED_KEY), dict)
