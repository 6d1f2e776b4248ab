"""Plain-text formatters shared by the renderers, the report and JSON-only commands (no rich)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def fmt_overrides(overrides: Mapping[str, Any]) -> list[str]:
    """The command-line overrides of a plan as lines: `overrides: --preset tiny --time 40.0`,
    then `run scale of preset tiny: batch_size=8 ...` when the preset's run-scale train
    settings replaced the spec's. Empty when the study runs as written."""
    flags = [_flag(k, v) for k, v in overrides.items() if k != "run_scale"]
    lines = [f"overrides: {' '.join(flags)}"] if flags else []
    scale = overrides.get("run_scale")
    if scale:
        shown = " ".join(f"{k}={v}" for k, v in scale.items())
        lines.append(f"run scale of preset {overrides.get('preset')}: {shown}")
    return lines


def _flag(key: str, value: Any) -> str:
    if key == "set":
        return " ".join(f"--set {path}={v if isinstance(v, str) else json.dumps(v)}"
                        for path, v in value.items())
    shown = ",".join(map(str, value)) if isinstance(value, list) else value
    return f"--{key.replace('_', '-')} {shown}"
