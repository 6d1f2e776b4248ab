"""Analysis on synthetic StudyResults: deltas, noise, rules, confounders, flags."""

from __future__ import annotations

import math

import pytest

from orchestrator.core.results import StudyResults
from orchestrator.report.analysis import analyze, metric_value
from orchestrator.report.flags import flags_for_runs

# A healthy seed-000 study: every step improves on its parent by a clear margin.
GOOD = {
    "baseline": [3.62, 3.64], "step1": [3.57, 3.59], "step2": [3.53, 3.55],
    "step3": [3.48, 3.50], "step4": [3.53, 3.55], "step5": [3.43, 3.45],
}


def rule(report, step):
    return next(r for r in report.rules if r.step == step)


def test_known_deltas_come_out_exactly(build, spec000) -> None:
    rep = analyze(build(spec000(), GOOD))
    base = rep.step("baseline")
    assert base.mean == pytest.approx(3.63, abs=1e-12)
    assert base.std == pytest.approx(math.sqrt(2) * 0.01, abs=1e-12)
    assert base.n == 2 and base.status == "done"
    c = rep.comparison("step1", "baseline")
    assert c.kind == "parent"
    assert c.delta == pytest.approx(-0.05, abs=1e-12)
    assert c.delta_pct == pytest.approx(-0.05 / 3.63 * 100, abs=1e-9)
    # both seeds improve by exactly 0.05: the paired differences have no spread
    assert c.paired and (c.n_a, c.n_b, c.df) == (2, 2, 1.0)
    assert c.ci == pytest.approx((-0.05, -0.05), abs=1e-9)
    assert c.verdict == "better" and c.seeds_needed is None
    assert c.method == "paired t on 2 shared seeds (df 1)"
    pair = rep.comparison("step4", "step2", "pair")
    assert pair.kind == "pair" and pair.label == "optimizer (2 vs 4)"
    # identical values and no margin: nothing says they are the same within a margin
    assert pair.delta == pytest.approx(0.0, abs=1e-12) and pair.verdict == "inconclusive"
    assert c.confounders == ()
    # 5 parent links + 2 pairs, both of which are parent links too: 5 tests
    assert "paired t on shared seeds" in rep.method and "Holm across 5 " in rep.method
    assert rep.comparison("step4", "step2", "pair").p == rep.comparison("step4", "step2").p


def test_paired_numbers_match_scipy_and_holm_adjusts(build, spec000) -> None:
    from scipy import stats

    data = dict(GOOD, step1=[3.57, 3.60])          # diffs -0.05, -0.04 vs baseline
    rep = analyze(build(spec000(), data))
    c = rep.comparison("step1", "baseline")
    ref = stats.ttest_rel([3.57, 3.60], [3.62, 3.64])
    assert c.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert c.delta == pytest.approx(-0.045, abs=1e-12)
    assert c.p_adj is not None and c.p_adj >= c.p
    assert c.verdict == "inconclusive" and c.ci is not None and c.ci[0] < 0 < c.ci[1]
    assert c.seeds_needed is not None and c.seeds_needed > 2


def test_delta_inside_seed_spread_is_inconclusive(build, spec000) -> None:
    data = dict(GOOD, step1=[3.58, 3.66])  # mean 3.62 vs 3.63: -0.01, paired diffs -0.04, +0.02
    c = analyze(build(spec000(), data)).comparison("step1", "baseline")
    assert c.delta == pytest.approx(-0.01, abs=1e-12)
    assert c.verdict == "inconclusive" and c.seeds_needed is not None
    # the same -0.01 with tight seeds is a real gain ...
    tight = dict(GOOD, baseline=[3.630, 3.6301], step1=[3.620, 3.6201])
    assert analyze(build(spec000(), tight)).comparison("step1", "baseline").verdict == "better"
    # ... which a declared noise floor (the default margin) marks as smaller than it
    floor = analyze(build(spec000(noise_floor=0.02), tight)).comparison("step1", "baseline")
    assert floor.verdict == "better" and floor.margin == pytest.approx(0.02)
    assert "inside the margin ±0.02" in floor.note


def test_equivalent_within_the_margin(build, spec000) -> None:
    same = dict(GOOD, step1=[3.621, 3.6405, 3.6302], baseline=[3.62, 3.64, 3.63])
    rep = analyze(build(spec000(noise_floor=0.02), same))
    c = rep.comparison("step1", "baseline")
    assert c.verdict == "equivalent" and c.margin == pytest.approx(0.02)
    spec = spec000()
    spec["analysis"]["margin"] = 0.02          # analysis.margin without a noise floor
    assert analyze(build(spec, same)).comparison("step1", "baseline").verdict == "equivalent"
    # no margin: never equivalent
    assert analyze(build(spec000(), same)).comparison("step1", "baseline").verdict \
        == "inconclusive"
    # a per-pair margin overrides the study's
    spec = spec000(noise_floor=0.02)
    spec["analysis"]["pairs"] = [{"a": "step1", "b": "baseline", "margin": 0.0}]
    assert analyze(build(spec, same)).comparison("step1", "baseline", "pair").verdict \
        == "inconclusive"


def test_single_seed_is_always_inconclusive_and_says_so(build, spec000) -> None:
    for step1 in ([3.62], [3.55], [2.0]):
        c = analyze(build(spec000(), {"baseline": [3.63], "step1": step1})).comparison(
            "step1", "baseline")
        assert c.verdict == "inconclusive" and c.ci is None and c.p is None
        assert "one seed on a side" in c.method


def test_seed000_rules_quiet_on_a_healthy_study(build, spec000) -> None:
    rep = analyze(build(spec000(), GOOD))
    assert [(r.step, r.status) for r in rep.rules] == [
        ("step1", "quiet"), ("step2", "quiet"), ("step3", "quiet"), ("step5", "quiet")]


@pytest.mark.parametrize(("step", "values"), [
    ("step1", [3.68, 3.70]),     # worse than baseline
    ("step2", [3.57, 3.59]),     # equal to step1: does not beat it
    ("step3", [3.58, 3.60]),     # worse than step2
    ("step5", [3.48, 3.50]),     # equal to step3: does not beat it
])
def test_each_seed000_rule_fires_on_its_condition_only(build, spec000, step, values) -> None:
    rep = analyze(build(spec000(), dict(GOOD, **{step: values})))
    fired = [r.step for r in rep.rules if r.status == "fired"]
    assert step in fired
    r = rule(rep, step)
    assert r.say and r.evidence.startswith(f"{step} - ")
    # a change to one step can also move the rules that compare against it; never others
    neighbours = {"step1": {"step2"}, "step2": {"step3"}, "step3": {"step5"}, "step5": set()}
    assert set(fired) - {step} <= neighbours[step]


def test_rule_on_step2_not_beating_step1_fires_when_worse_too(build, spec000) -> None:
    rep = analyze(build(spec000(), dict(GOOD, step2=[3.65, 3.67])))
    assert rep.comparison("step2", "step1").verdict == "worse"
    assert rule(rep, "step2").status == "fired"


def test_compare_rules_on_inconclusive_say_so_with_the_seeds_they_need(build, spec000) -> None:
    rep = analyze(build(spec000(), dict(GOOD, step1=[3.58, 3.66])))   # -0.01 within spread
    r = rule(rep, "step1")                                          # worse_than baseline
    assert r.status == "inconclusive" and r.seeds_needed is not None
    assert f"needs ~{r.seeds_needed} seeds per side" in r.evidence


def test_comparison_across_two_commits_is_flagged(build, spec000) -> None:
    data = dict(GOOD, step1=[(3.57, {}, {"code_sha": "7ec430d9999"}),
                             (3.59, {}, {"code_sha": "7ec430d9999"})])
    rep = analyze(build(spec000(), data))
    conf = rep.comparison("step1", "baseline").confounders
    assert any("code commits differ" in c and "7ec430d" in c and "1e1859e" in c for c in conf)
    assert rep.comparison("step3", "step2").confounders == ()
    assert flags_for_runs(build(spec000(), data))[("step1", 1)] == ("commit differs from baseline",)


def test_missing_step_leaves_its_deltas_pending(build, spec000) -> None:
    data = {k: v for k, v in GOOD.items() if k != "step2"}
    rep = analyze(build(spec000(), data))
    assert rep.step("step2").status == "not submitted" and rep.step("step2").mean is None
    for a, b in (("step2", "step1"), ("step3", "step2"), ("step4", "step2")):
        c = rep.comparison(a, b)
        assert c.verdict == "pending" and c.delta is None and "step2 not submitted" in c.note
    assert rule(rep, "step2").status == "pending" and rule(rep, "step3").status == "pending"
    assert rule(rep, "step1").status == "quiet"
    exp = {e.step: e.verdict for e in rep.expectations}
    assert exp["step2"] == "pending"


def test_failed_and_running_steps_are_pending_with_a_reason(build, spec000) -> None:
    data = dict(GOOD, step3=[(None, {}, {"state": "failed", "failure_kind": "oom",
                                         "error_message": "CUDA out of memory"}),
                             (None, {}, {"state": "running"})])
    rep = analyze(build(spec000(), data))
    assert rep.step("step3").status == "pending"
    c = rep.comparison("step3", "step2")
    assert c.verdict == "pending" and "no succeeded run" in c.note and "failed" in c.note
    f = [f for f in rep.flags if f.step == "step3"]
    assert [x.kind for x in f] == ["failed"] and "oom" in f[0].message
    assert "CUDA out of memory" in f[0].message
    assert flags_for_runs(build(spec000(), data))[("step3", 1)] == ("failed (oom)",)


def test_parameter_count_confounder(build, spec000) -> None:
    big = {"total": 1_100_000, "attention": 200_000, "mlp": 500_000, "mechanism": 0}
    small = {"total": 1_040_000, "attention": 200_000, "mlp": 440_000, "mechanism": 0}
    data = dict(GOOD, step1=[(3.57, {"params": big}), (3.59, {"params": big})],
                step2=[(3.53, {"params": small}), (3.55, {"params": small})])
    rep = analyze(build(spec000(), data))
    conf = rep.comparison("step1", "baseline").confounders
    assert conf == ("parameter counts +10.0%: step1 1,100,000 vs baseline 1,000,000",)
    # 4 % apart (step2 vs baseline would be, but step2's parent is step1: -5.45 %)
    assert any("parameter counts" in c for c in rep.comparison("step2", "step1").confounders)


def test_parameter_counts_within_5_percent_are_not_a_confounder(build, spec000) -> None:
    p = {"total": 1_040_000}
    data = dict(GOOD, step1=[(3.57, {"params": p}), (3.59, {"params": p})])
    assert analyze(build(spec000(), data)).comparison("step1", "baseline").confounders == ()


def test_other_confounders(build, spec000) -> None:
    cfg = {"model": {"block_size": 128}, "data": {"dataset": "kjv", "tokenizer": "gpt2"},
           "train": {"budget": {"seconds": 30.0}, "batch_size": 8, "grad_accum": 8}}
    data = dict(GOOD, step1=[(3.57, {"tokens": 700000, "device": "cuda:0",
                                     "effective_batch_tokens": 4096}, {"config": cfg})] * 2)
    conf = analyze(build(spec000(), data)).comparison("step1", "baseline").confounders
    kinds = {c.split(" ")[0] for c in conf}
    assert kinds == {"budgets", "effective", "devices", "achieved"}, conf


def test_throughput_regression_flag(build, spec000) -> None:
    data = dict(GOOD, step1=[(3.57, {"tokens_per_s": 9400.0}), (3.59, {"tokens_per_s": 9400.0})],
                step2=[(3.53, {"tokens_per_s": 9000.0}), (3.55, {"tokens_per_s": 9000.0})])
    rep = analyze(build(spec000(), data))
    tp = [f for f in rep.flags if f.kind == "throughput"]
    assert [f.step for f in tp] == ["step1"]           # -6 %; step2 is -4.3 % vs step1
    assert tp[0].message.startswith("throughput -6.0% vs baseline")
    flags = flags_for_runs(build(spec000(), data))
    assert flags[("step1", 2)] == ("tok/s -6% vs baseline",)
    assert ("step2", 1) not in flags


def test_expected_ranges_cumulative_and_monotonicity(build, spec000) -> None:
    rep = analyze(build(spec000(), dict(GOOD, step3=[3.58, 3.60])))
    exp = {(e.step, e.metric): e.verdict for e in rep.expectations}
    assert exp[("step1", "best_val_loss")] == "inside"
    assert exp[("step3", "best_val_loss")] == "above"
    assert exp[("baseline", "best_val_loss")] == "above"    # 3.63 vs the point 3.6154
    out = [f for f in rep.flags if f.kind == "outside_expected"]
    assert {f.step for f in out} == {"baseline", "step3"}
    cum = {c.step: c for c in rep.cumulative}
    # step5: 3.44 - 3.63 = -0.19; predicted [3.40, 3.50] - 3.6154
    assert cum["step5"].delta == pytest.approx(-0.19, abs=1e-12)
    assert cum["step5"].predicted == pytest.approx((3.40 - 3.6154, 3.50 - 3.6154))
    assert cum["step5"].verdict == "as predicted"
    assert cum["step5"].chain == ("baseline", "step1", "step2", "step3", "step5")
    assert cum["step3"].verdict == "short of prediction"     # -0.04 vs [-0.155, -0.105]
    chains = {c.chain[-1]: c for c in rep.chains}
    assert chains["step5"].monotone is False and chains["step5"].breaks == ("step3",)
    assert chains["step4"].monotone is True


def test_rule_kinds_on_flags(build, spec000) -> None:
    spec = spec000()
    spec["analysis"]["rules"] = [
        {"step": "step1", "diverged": True, "say": "lower lr"},
        {"step": "step2", "outside_expected": True, "say": "x"},
        {"step": "step3", "gate_collapsed": True, "say": "gate"},
        {"step": "step4", "better_than": "step2", "say": "y"},
        {"step": "step5", "slower": True, "say": "z"},
    ]
    data = dict(GOOD, step1=[(None, {"status": "diverged"}, {"state": "failed",
                                                            "failure_kind": "diverged"})] * 2)
    rep = analyze(build(spec, data))
    st = [(r.condition, r.status) for r in rep.rules]
    assert st == [("diverged", "fired"), ("outside_expected", "quiet"),
                  ("gate_collapsed", "pending"), ("better_than step2", "quiet"),
                  ("slower", "quiet")]
    assert "metric series not loaded" in rep.rules[2].evidence


def test_a_stored_spec_that_no_longer_validates_is_one_clear_error(build, spec000) -> None:
    from orchestrator.core.errors import SpecError

    spec = spec000()
    spec["analysis"]["rules"] = [{"step": "step1", "frobnicate": "x", "say": "z"}]
    with pytest.raises(SpecError, match=r"analysis\.rules\.0\.frobnicate.*re-submit"):
        analyze(build(spec, GOOD))
    assert flags_for_runs(build(spec, GOOD)) == {}      # `recip status` stays up


def test_series_flags_gate_collapse_and_no_gradient(build, spec000) -> None:
    results = build(spec000(), GOOD)
    ids = {(a.step, a.seed): a.attempt_id for a in results.attempts}
    series = {
        ids[("step1", 1)]: {
            "stats/mlp.gate_alpha/L0": [(0, 0.1), (50, 0.02), (100, 0.0004)],
            "stats/mlp.gate_alpha/L1": [(0, 0.1), (50, 0.09), (100, 0.08)],
            "stats/mlp.gate_alpha_std/L0": [(0, 0.1), (100, 0.0)],
            "grad/attn.ra_alpha/L0": [(0, 0.0), (50, 0.0), (100, 0.0)],
            "grad/mlp.gate_alpha/L0": [(0, 0.0), (50, 1e-3)],
            "val_loss": [(0, 10.0), (100, 3.6)],
        },
    }
    rep = analyze(results, series)
    kinds = sorted((f.kind, f.step) for f in rep.flags)
    assert kinds == [("gate_collapsed", "step1"), ("no_gradient", "step1"),
                     ("outside_expected", "baseline")]
    gc = next(f for f in rep.flags if f.kind == "gate_collapsed")
    assert "mlp.gate_alpha" in gc.message and "L0/seed 1" in gc.message
    ng = next(f for f in rep.flags if f.kind == "no_gradient")
    assert "attn.ra_alpha" in ng.message


def test_retried_run_uses_latest_succeeded_attempt(build, spec000) -> None:
    results = build(spec000(), GOOD)
    first = results.attempts[0]
    from dataclasses import replace
    failed = replace(first, attempt_id=99, attempt_no=2, state="failed", failure_kind="exception",
                     result={"status": "failed"})
    r2 = StudyResults(name=results.name, description="", spec=results.spec, spec_hash="x",
                      steps=results.steps, attempts=(*results.attempts, failed))
    rep = analyze(r2)
    assert rep.step("baseline").mean == pytest.approx(3.63)
    assert rep.used_attempts["baseline"] == ((1, first.attempt_id), (2, 2))
    assert flags_for_runs(r2)[("baseline", 1)][-1] == "attempt 2"


def test_metric_value_paths_and_perplexity() -> None:
    res = {"best_val_loss": 3.0, "params": {"total": 7}, "nan": float("nan"), "flag": True}
    assert metric_value(res, "best_val_ppl") == pytest.approx(math.exp(3.0))
    assert metric_value(res, "params.total") == 7.0
    assert metric_value(res, "nan") is None and metric_value(res, "flag") is None
    assert metric_value(res, "missing.x") is None


def test_empty_study_reports_everything_pending(build, spec000) -> None:
    rep = analyze(build(spec000(), {}))
    assert {s.status for s in rep.steps} == {"not submitted"}
    assert {c.verdict for c in rep.comparisons} == {"pending"}
    assert {r.status for r in rep.rules} == {"pending"}


def test_expectations_do_not_apply_to_a_smoke_run_at_another_scale(build, spec000) -> None:
    spec = spec000()
    spec["defaults"] = {"model": {"preset": "gpt2-124m"},
                        "data": {"dataset": "hf:HuggingFaceFW/fineweb-edu"}}
    tiny = {"model": {"preset": "tiny", "block_size": 128}, "data": {"dataset": "kjv"},
            "train": {"budget": {"seconds": 30}, "batch_size": 8, "grad_accum": 1}}
    data = {s: [(v, {}, {"config": tiny}) for v in vals] for s, vals in GOOD.items()}
    rep = analyze(build(spec, data))
    assert {e.verdict for e in rep.expectations} == {"not comparable"}
    assert "model.preset tiny (expected for gpt2-124m)" in rep.expectations[0].note
    assert not [f for f in rep.flags if f.kind == "outside_expected"]
    spec["analysis"]["rules"] = [{"step": "step3", "outside_expected": True, "say": "x"}]
    assert analyze(build(spec, data)).rules[0].status == "pending"


def test_study_wide_rule_and_rule_metric(build, spec000) -> None:
    spec = spec000()
    spec["analysis"]["rules"] = [
        {"step": None, "diverged": True, "say": "lower lr", "metric": None},
        {"step": "step1", "worse_than": "baseline", "metric": "tokens_per_s", "say": "slow"},
    ]
    data = dict(GOOD, step3=[(None, {"status": "diverged"},
                              {"state": "failed", "failure_kind": "diverged"}), 3.49],
                step1=[(3.57, {"tokens_per_s": 8000.0}), (3.59, {"tokens_per_s": 8000.0})])
    rep = analyze(build(spec, data))
    wide, slow = rep.rules
    assert (wide.step, wide.status) == ("*", "fired") and wide.evidence.startswith("step3 seed 1")
    assert (slow.status, slow.condition) == ("fired", "worse_than baseline")
    assert "-2000.0000" in slow.evidence


@pytest.mark.parametrize(("analysis", "where"), [
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"margin": -0.1}, "margin"),
    ({"pairs": [{"a": "step1", "b": "baseline", "alpha": 2}]}, "alpha"),
    ({"pairs": [{"a": "step1", "b": "baseline", "controll": True}]}, "controll"),
])
def test_analysis_levels_are_validated(spec000, analysis, where) -> None:
    from pydantic import ValidationError

    from orchestrator.core.spec import Spec

    spec = spec000()
    spec["analysis"].update(analysis)
    with pytest.raises(ValidationError, match=where):
        Spec.model_validate(spec)
