"""Tail an attempt's metrics.jsonl and thin it into the rows the database keeps.

The JSONL keeps full resolution; the database keeps every eval record and, per train
metric, at most about `max_points` rows per attempt, picked by a stride from the expected
number of log records (the last record of each name is always kept).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.train.artifacts import parse_metric_record

logger = logging.getLogger(__name__)

MetricRow = tuple[str, int, float]

EVAL_METRICS: frozenset[str] = frozenset({"val_loss", "train_loss"})


class JsonlTail:
    """Incremental reader of an append-only JSONL file; a half-written last line waits."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset

    def read(self) -> list[dict[str, Any]]:
        """The complete records appended since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out: list[dict[str, Any]] = []
        for line in chunk[: end + 1].splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("bad metrics line in %s: %.80r", self.path, line)
                continue
            if isinstance(record, dict):
                out.append(record)
        return out


class MetricThinner:
    """Turns metrics.jsonl records into (name, step, value) rows, thinning train metrics."""

    def __init__(self, max_points: int, expected_records: Callable[[], float | None]) -> None:
        self.max_points = max(1, max_points)
        self.expected_records = expected_records
        self._seen: dict[str, int] = {}
        self._next: dict[str, int] = {}
        self._held: dict[str, MetricRow] = {}

    def _stride(self) -> int:
        expected = self.expected_records()
        if expected is None or not math.isfinite(expected) or expected <= 0:
            return 1
        return max(1, math.ceil(expected / self.max_points))

    def rows(self, data: object) -> list[MetricRow]:
        """The rows to store for one decoded JSONL line (a `MetricRecord`; anything else
        gives none; non-finite and non-number values are dropped)."""
        record = parse_metric_record(data)
        if record is None:
            return []
        values, step = record["values"], record["iter"]
        is_eval = any(name in EVAL_METRICS for name in values)
        out: list[MetricRow] = []
        stride = 1 if is_eval else self._stride()
        for name, value in values.items():
            if value is None:
                continue
            row = (name, step, value)
            if is_eval:
                out.append(row)
                continue
            seen = self._seen.get(name, 0)
            self._seen[name] = seen + 1
            if seen >= self._next.get(name, 0):
                out.append(row)
                self._next[name] = seen + stride
                self._held.pop(name, None)
            else:
                self._held[name] = row
        return out

    def flush(self) -> list[MetricRow]:
        """The last row of each train metric that the stride skipped."""
        out = list(self._held.values())
        self._held.clear()
        return out


def expected_records(config: Any, progress: dict[str, Any] | None) -> float | None:
    """How many log records the attempt will write: its iteration budget (or, for a time
    budget, the pace so far in progress.json, or max_iters) over log_every; None if unknown."""
    train = config.get("train", {}) if isinstance(config, dict) else {}
    log_every = train.get("log_every") or 10
    budget = train.get("budget") or {}
    iters = budget.get("iters") if isinstance(budget, dict) else None
    if not iters and progress:
        it, frac = progress.get("iter"), progress.get("fraction")
        if isinstance(it, int | float) and isinstance(frac, int | float) and frac >= 0.05:
            iters = it / frac
    if not iters:
        iters = train.get("max_iters")
    if not isinstance(iters, int | float) or not math.isfinite(iters) or iters <= 0:
        return None
    return float(iters) / float(log_every)
