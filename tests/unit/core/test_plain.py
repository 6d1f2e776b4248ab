"""`core.plain.plain`: the one walk from frozen read values to JSON-ready data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from orchestrator.core.plain import plain


@dataclass(frozen=True)
class Inner:
    at: datetime
    values: tuple[float, ...]


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    by_step: dict[str, tuple[int, int]]
    missing: float | None = None


def test_dataclasses_tuples_datetimes_and_non_finite_floats():
    at = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    x = Outer("s", Inner(at, (1.5, math.nan, math.inf)), {"V1": (1, 3)})
    got = plain(x)
    assert got["inner"]["at"] == "2026-12-04T12:00:00+00:00"
    assert got["by_step"] == {"V1": [1, 3]} and got["missing"] is None
    assert got["inner"]["values"][0] == 1.5 and math.isnan(got["inner"]["values"][1])
    assert plain(x, finite_only=True)["inner"]["values"] == [1.5, None, None]
    assert plain(Outer) is Outer                       # a class is not walked
