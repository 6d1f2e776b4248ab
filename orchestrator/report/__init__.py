"""The analysis of a study: `analysis` (pure: results -> Report), `export` (Markdown, JSON),
`plots` (PNG, matplotlib imported lazily)."""

from __future__ import annotations

from orchestrator.report.analysis import Report, analyze, flags_for_runs

__all__ = ["Report", "analyze", "flags_for_runs"]
