"""Frozen read values as JSON-ready data: the one walk `recip status --json` and the report
JSON use.

A field walk, not `dataclasses.asdict`: asdict deep-copies every value first, which was
most of `recip status --json` at 1,000 runs and half of `recip report --format json`
(bench/cli_bench.py)."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from typing import Any


def plain(value: Any, *, finite_only: bool = False) -> Any:
    """Dataclasses as dicts of their fields, tuples as lists, datetimes as ISO 8601; with
    `finite_only`, NaN and infinities as None (JSON has no such numbers)."""
    def walk(x: Any) -> Any:
        if isinstance(x, float):
            return None if finite_only and not math.isfinite(x) else x
        if x is None or isinstance(x, str | int):
            return x
        if isinstance(x, datetime):
            return x.isoformat()
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [walk(v) for v in x]
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return {f.name: walk(getattr(x, f.name)) for f in dataclasses.fields(x)}
        return x

    return walk(value)
