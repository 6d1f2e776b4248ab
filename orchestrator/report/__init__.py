"""The analysis of a study: `analysis` (pure: results -> Report) over `context` (the typed
spec and the runs used), `stats` (compare, Holm, alpha spending), `verdicts` (every
comparison decided together), `confounders`, `rules` (flags and rules), `values` (the frozen
Report); `export` (Markdown, JSON), `plots` (PNG, matplotlib imported lazily)."""

from __future__ import annotations

from orchestrator.report.analysis import analyze, flags_for_runs
from orchestrator.report.values import Report

__all__ = ["Report", "analyze", "flags_for_runs"]
