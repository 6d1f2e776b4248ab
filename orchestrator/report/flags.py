"""Per-run flags for `recip status`: failure state, divergence, throughput regression vs
the parent, outside the expected range, a different commit than the parent's runs.

No statistics and no metric series, so this module never imports `stats` (scipy): a status
refresh pays for the typed spec and the final results only (bench/cli_bench.py)."""

from __future__ import annotations

from orchestrator.core.errors import SpecError
from orchestrator.core.results import StudyResults
from orchestrator.report.confounders import commits, mean_of, scale_note
from orchestrator.report.context import Study
from orchestrator.report.metrics import metric_value
from orchestrator.report.rules import THROUGHPUT_DROP, failure


def step_scale_note(study: Study, step: str) -> str | None:
    """Why the spec's expectations of `step` do not apply (the runs used another scale)."""
    return scale_note(study.spec, study.root_chain(step), study.used(step))


def flags_for_runs(results: StudyResults) -> dict[tuple[str, int], tuple[str, ...]]:
    """Short per-run flags for `recip status` (no series, no statistics): failure state,
    divergence, throughput regression > 5 % vs the parent, outside the expected range,
    a different code commit than the parent's runs. A stored spec that no longer validates
    gives no flags here (status stays up; `recip report` says what is wrong)."""
    try:
        study = Study.build(results)
    except SpecError:
        return {}
    out: dict[tuple[str, int], tuple[str, ...]] = {}
    for step in study.order:
        parent = study.parent(step)
        parent_used = study.used(parent) if parent else ()
        parent_tps = mean_of(parent_used, "tokens_per_s")
        parent_shas = commits(parent_used) if parent_used else set()
        expect = study.expect_of(step) if step_scale_note(study, step) is None else {}
        for run in study.runs.get(step, ()):
            found: list[str] = []
            kind = failure(run)
            if kind:
                found.append(kind)
            if run.used is not None:
                res = run.used.result
                tps = metric_value(res, "tokens_per_s")
                if tps is not None and parent_tps and tps < (1 - THROUGHPUT_DROP) * parent_tps:
                    found.append(f"tok/s {100 * (tps / parent_tps - 1):+.0f}% vs {parent}")
                for name, (lo, hi) in expect.items():
                    v = metric_value(res, name)
                    if v is not None and not lo <= v <= hi:
                        found.append(f"{name} outside [{lo:g}, {hi:g}]")
                sha = (run.used.code_sha or "?")[:7]
                if parent_shas and parent_shas - {sha}:
                    found.append(f"commit differs from {parent}")
            if run.attempts > 1:
                found.append(f"attempt {run.latest.attempt_no}")
            if found:
                out[(step, run.seed)] = tuple(found)
    return out
