"""The analysis on results written through the real queue, on SQLite and PostgreSQL:
submit the seed-000 spec, let a scripted worker claim/start/record/finish every attempt
with synthetic results, then study_results -> analyze."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.loader import load_spec
from orchestrator.core.resolve import resolve
from orchestrator.core.states import AttemptState, FailureKind
from orchestrator.report.analysis import analyze
from orchestrator.report.flags import flags_for_runs

SPEC = Path(__file__).resolve().parents[2] / "ablations" / "ra_mla_reciprocal.yaml"
LEASE = timedelta(seconds=30)
GOOD = {"baseline": [3.62, 3.64], "step1": [3.57, 3.59], "step2": [3.53, 3.55],
        "step3": [3.48, 3.50], "step4": [3.53, 3.55], "step5": [3.43, 3.45]}

Outcome = Callable[[str, int], dict[str, Any] | None]


def submit(repo: Any, now: Any, steps: list[str] | None = None) -> None:
    from models.presets import PRESETS, TOKENIZER_VOCAB

    plan = resolve(load_spec(SPEC), presets=PRESETS, vocab=TOKENIZER_VOCAB, steps=steps)
    repo.submit(plan, now)


def work(repo: Any, clock: Any, values: Mapping[str, list[float]], *,
         sha: Mapping[str, str] | None = None, fail: set[tuple[str, int]] = frozenset(),
         gate_closes: str | None = None) -> None:
    """Claim every queued attempt and finish it with a result built from `values`."""
    while (c := repo.claim("w1", clock.now(), LEASE)) is not None:
        repo.start(c.attempt_id, "w1", clock.now(), LEASE, artifact_dir=f"/tmp/a{c.attempt_id}",
                   code_sha=(sha or {}).get(c.step, "aaaaaaa1111"), code_dirty=False,
                   diff_hash=None, host="h", gpu=None, pid=1, env={})
        clock.advance(5)
        if (c.step, c.seed) in fail:
            repo.finish(c.attempt_id, "w1", clock.now(), AttemptState.FAILED,
                        failure_kind=FailureKind.OOM, exit_code=1, error_type="OutOfMemoryError",
                        error_message="CUDA out of memory", result={"status": "oom"})
            continue
        loss = values[c.step][c.seed - 1]
        gate = [(0, 0.1), (50, 0.05), (100, 0.0002 if c.step == gate_closes else 0.09)]
        repo.record_metrics(c.attempt_id, "w1", [
            ("val_loss", 0, 10.8), ("val_loss", 50, loss + 0.5), ("val_loss", 100, loss),
            *[("stats/mlp.gate_alpha/L1", i, v) for i, v in gate],
            ("grad/mlp.gate_alpha/L1", 50, 1e-3), ("grad/mlp.gate_alpha/L1", 100, 2e-3),
        ])
        repo.finish(c.attempt_id, "w1", clock.now(), AttemptState.SUCCEEDED, exit_code=0, result={
            "status": "succeeded", "best_val_loss": loss, "final_val_loss": loss + 0.01,
            "iters": 100, "tokens": 6_553_600, "tokens_per_s": 50_000.0, "train_s": 131.0,
            "effective_batch_tokens": 65536, "device": "cuda:0",
            "params": {"total": 124_000_000, "attention": 28_000_000, "mlp": 56_000_000},
        })


def report_of(repo: Any) -> Any:
    results = repo.study_results("ra_mla_reciprocal")
    ids = [a.attempt_id for a in results.attempts if a.state == "succeeded"]
    series = repo.metric_series(ids, names=["val_loss"])
    for aid, names in repo.metric_series(ids, prefix="stats/").items():
        series.setdefault(aid, {}).update(names)
    for aid, names in repo.metric_series(ids, prefix="grad/").items():
        series.setdefault(aid, {}).update(names)
    return results, analyze(results, series)


def test_known_deltas_and_rules_quiet(repo, fake_clock) -> None:
    submit(repo, fake_clock.now())
    work(repo, fake_clock, GOOD)
    results, rep = report_of(repo)
    assert [s.step for s in rep.steps] == list(GOOD)
    assert all(s.status == "done" and s.n == 2 for s in rep.steps)
    c = rep.comparison("step1", "baseline")
    assert c.delta == pytest.approx(-0.05, abs=1e-9)
    # every seed gains exactly 0.05: a paired test with no spread in the differences
    assert c.paired and c.ci == pytest.approx((-0.05, -0.05), abs=1e-9)
    assert c.verdict == "better" and c.confounders == ()
    assert rep.comparison("step5", "step4", "pair").delta == pytest.approx(-0.10, abs=1e-9)
    assert [r.status for r in rep.rules] == ["quiet"] * 6
    assert {e.verdict for e in rep.expectations} == {"inside"}
    assert rep.flags == ()
    # per run, not per mean: seed 2 of the baseline (3.64) is outside the seed's range
    assert flags_for_runs(results) == {("baseline", 2): ("best_val_loss outside [3.6004, 3.6304]",)}


def test_delta_inside_seed_spread_is_inconclusive(repo, fake_clock) -> None:
    submit(repo, fake_clock.now())
    work(repo, fake_clock, dict(GOOD, step1=[3.58, 3.66]))
    _, rep = report_of(repo)
    c = rep.comparison("step1", "baseline")
    assert c.delta == pytest.approx(-0.01, abs=1e-9) and c.verdict == "inconclusive"
    assert c.ci is not None and c.ci[0] < 0 < c.ci[1] and c.seeds_needed is not None


@pytest.mark.parametrize(("step", "values"), [
    ("step1", [3.68, 3.70]), ("step2", [3.57, 3.59]), ("step3", [3.58, 3.60]),
    ("step5", [3.48, 3.50])])
def test_each_seed000_rule_fires_on_its_condition(repo, fake_clock, step, values) -> None:
    submit(repo, fake_clock.now())
    work(repo, fake_clock, dict(GOOD, **{step: values}))
    _, rep = report_of(repo)
    fired = {r.step for r in rep.rules if r.status == "fired"}
    assert step in fired
    assert fired <= {step, {"step1": "step2", "step2": "step3", "step3": "step5"}.get(step)}


def test_comparison_across_two_commits_is_flagged(repo, fake_clock) -> None:
    submit(repo, fake_clock.now())
    work(repo, fake_clock, GOOD, sha={"step1": "bbbbbbb2222"})
    results, rep = report_of(repo)
    conf = rep.comparison("step1", "baseline").confounders
    assert conf == ("code commits differ: step1 bbbbbbb vs baseline aaaaaaa",)
    assert rep.comparison("step2", "step1").confounders == conf[:0] + (
        "code commits differ: step2 aaaaaaa vs step1 bbbbbbb",)
    assert rep.comparison("step3", "step2").confounders == ()
    assert flags_for_runs(results)[("step1", 1)] == ("commit differs from baseline",)
    assert flags_for_runs(results)[("step2", 1)] == ("commit differs from step1",)


def test_missing_and_failed_steps_are_pending(repo, fake_clock) -> None:
    submit(repo, fake_clock.now(), steps=["baseline", "step1", "step3", "step4", "step5"])
    work(repo, fake_clock, GOOD, fail={("step3", 1), ("step3", 2)})
    results, rep = report_of(repo)
    assert rep.step("step2").status == "not submitted"
    assert rep.step("step3").status == "failed"
    for a, b in (("step2", "step1"), ("step3", "step2"), ("step4", "step2"), ("step5", "step3")):
        assert rep.comparison(a, b).verdict == "pending"
    assert "step3 has no succeeded run (failed)" in rep.comparison("step5", "step3").note
    assert [(r.step, r.status) for r in rep.rules[:4]] == [
        ("step1", "quiet"), ("step2", "pending"), ("step3", "pending"), ("step5", "pending")]
    assert [f.kind for f in rep.flags_of("step3")] == ["failed", "failed"]
    assert flags_for_runs(results)[("step3", 2)] == ("failed (oom)",)


def test_gate_collapse_from_metric_rows(repo, fake_clock) -> None:
    submit(repo, fake_clock.now())
    work(repo, fake_clock, GOOD, gate_closes="step2")
    _, rep = report_of(repo)
    assert [(f.step, f.kind) for f in rep.flags] == [("step2", "gate_collapsed")]
    wide = next(r for r in rep.rules if r.condition == "gate_collapsed")
    assert wide.status == "fired" and wide.evidence.startswith("step2 gate mlp.gate_alpha")
