"""Study-level verdicts: equal-token and equal-FLOP readings, throughput vs quality,
confounded comparisons, Holm across the study, the sequential correction after seed-adding
looks, declared controls, and the SPAM / KV keep-ratio flags."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from orchestrator.core.results import SeedLook, StudyResults
from orchestrator.core.spec import Spec
from orchestrator.report.analysis import analyze
from orchestrator.report.export import to_json, to_markdown
from orchestrator.report.stats import holm, obf_spent, sequential_alpha

GOOD = {"baseline": [3.62, 3.64], "step1": [3.57, 3.59], "step2": [3.53, 3.55],
        "step3": [3.48, 3.50], "step4": [3.53, 3.55], "step5": [3.43, 3.45]}
T0 = datetime(2026, 12, 4, tzinfo=UTC)


def loss_at(it: int, seed: int) -> float:
    return 3.0 + 100.0 / (it + 10) + 0.01 * seed


def throughput_study(build, spec000, *, step1_iters: int = 120,
                     fpt: tuple[float, float] | None = None) -> tuple[StudyResults, dict]:
    """baseline and step1 learn the same curve per token; step1 runs more iterations in the
    same time (its throughput is higher), so it ends lower."""
    data = {}
    for step, iters in (("baseline", 100), ("step1", step1_iters)):
        extra = {} if fpt is None else {"flops_per_token": fpt[step == "step1"]}
        data[step] = [(loss_at(iters, seed), {"iters": iters, "tokens": iters * 8192, **extra})
                      for seed in (1, 2, 3)]
    results = build(spec000(), data)
    series = {}
    for a in results.attempts:
        iters = int(a.result["iters"])
        series[a.attempt_id] = {"val_loss": [(it, loss_at(it, a.seed))
                                             for it in range(0, iters + 1, 10)]}
    return results, series


def test_equal_budget_and_equal_tokens_readings_say_which_is_throughput(build, spec000) -> None:
    results, series = throughput_study(build, spec000)
    c = analyze(results, series).comparison("step1", "baseline")
    budget, tokens = c.reading("budget"), c.reading("tokens")
    assert budget is not None and tokens is not None
    assert c.verdict == budget.verdict == "better" and c.delta == pytest.approx(
        loss_at(120, 1) - loss_at(100, 1))
    assert tokens.at == pytest.approx(100 * 8192)
    assert tokens.delta == pytest.approx(0.0, abs=1e-12) and tokens.verdict == "inconclusive"
    assert "+20% tokens" in c.interpretation and "throughput" in c.interpretation
    assert "equal tokens inconclusive" in c.interpretation
    assert c.reading("flops") is None          # same flops_per_token: no third reading
    # without the series there is no equal-token reading and nothing to interpret
    bare = analyze(results).comparison("step1", "baseline")
    assert bare.reading("tokens") is None and bare.interpretation == ""


def test_same_tokens_give_no_interpretation(build, spec000) -> None:
    results, series = throughput_study(build, spec000, step1_iters=102)   # +2 % tokens
    c = analyze(results, series).comparison("step1", "baseline")
    assert c.interpretation == ""


def test_equal_flops_reading_when_flops_per_token_differ(build, spec000) -> None:
    results, series = throughput_study(build, spec000, fpt=(1.0e6, 1.5e6))
    c = analyze(results, series).comparison("step1", "baseline")
    flops = c.reading("flops")
    assert flops is not None
    # baseline ends at 100 x 8192 tokens x 1e6; step1 reaches that FLOP count at 2/3 of it
    assert flops.at == pytest.approx(100 * 8192 * 1.0e6)
    assert flops.verdict == "worse" and flops.delta is not None and flops.delta > 0


def test_json_keeps_every_reading(build, spec000) -> None:
    import json

    results, series = throughput_study(build, spec000)
    data = json.loads(to_json(analyze(results, series)))
    c = next(c for c in data["comparisons"] if c["a"] == "step1" and c["b"] == "baseline")
    assert [r["basis"] for r in c["readings"]] == ["budget", "tokens"]
    for key in ("delta", "ci", "p", "p_adj", "df", "n_a", "n_b", "paired", "method",
                "seeds_needed", "verdict", "confounders", "interpretation", "sequential"):
        assert key in c
    assert data["method"].startswith("paired t on shared seeds") and data["alpha"] == 0.05


def test_different_code_is_confounded_with_its_numbers(build, spec000) -> None:
    data = dict(GOOD, step1=[(3.57, {}, {"code_sha": "7ec430d9999"}),
                             (3.59, {}, {"code_sha": "7ec430d9999"})])
    rep = analyze(build(spec000(), data))
    c = rep.comparison("step1", "baseline")
    assert c.verdict == "confounded" and c.delta == pytest.approx(-0.05)
    assert c.reading("budget").verdict == "better"                 # the numbers still shown
    assert "different code" in c.note
    r = next(r for r in rep.rules if r.step == "step1")           # worse_than baseline
    assert r.status == "confounded"
    md = to_markdown(rep)
    assert "| step1 vs baseline | parent | -0.0500 (-1.38%) |" in md and "confounded" in md


def test_holm_adjusted_p_is_the_family_adjustment(build, spec000) -> None:
    data = dict(GOOD, step1=[3.57, 3.594], step2=[3.53, 3.557], step3=[3.48, 3.511])
    rep = analyze(build(spec000(), data))
    unique = {}
    for c in rep.comparisons:
        unique[(c.a, c.b)] = c
    ps = [c.p for c in unique.values()]
    for c, pa in zip(unique.values(), holm(ps), strict=True):
        assert c.p_adj == pytest.approx(pa)
    # a raw p below alpha that Holm lifts above it is not a decision
    lifted = [c for c in unique.values() if c.p is not None and c.p < 0.05 <= (c.p_adj or 0)]
    assert lifted
    for c in lifted:
        assert c.verdict == "inconclusive" and c.ci is not None and c.ci[0] < 0 < c.ci[1]


def _four_seeds(build, spec000, looks: tuple[SeedLook, ...]) -> StudyResults:
    data = {k: [v[0], v[1], v[0] + 0.001, v[1] + 0.002] for k, v in GOOD.items()}
    data["step1"] = [3.57, 3.60, 3.575, 3.605]
    return replace(build(spec000(), data), looks=looks)


def test_seeds_added_after_a_look_are_tested_with_alpha_spending(build, spec000) -> None:
    look = SeedLook(at=T0, steps=("baseline", "step1"), seeds=(3, 4), max_seeds=6)
    rep = analyze(_four_seeds(build, spec000, (look,)))
    c = rep.comparison("step1", "baseline")
    assert c.looks == (2, 4)
    level = sequential_alpha([2, 4], 6, 0.05)
    assert "O'Brien-Fleming" in c.sequential and f"{level:.4g}" in c.sequential
    assert "bounded by" in c.sequential          # no declared design: look 0 spent 0.05
    assert c.p_adj is not None and c.p is not None
    assert c.p_adj >= min(1.0, c.p * 0.05 / level) - 1e-12
    # a comparison whose steps got no seeds is a fixed sample
    assert rep.comparison("step3", "step2").sequential == ""
    assert "O'Brien-Fleming alpha spending" in rep.method


def test_a_declared_design_spends_alpha_from_look_0(build, spec000) -> None:
    steps = tuple(GOOD)
    design = SeedLook(at=T0, steps=steps, seeds=(), max_seeds=8)
    # declared, no seeds added yet: look 0 is tested at alpha(2/8)
    results = replace(build(spec000(), GOOD), looks=(design,))
    c = analyze(results).comparison("step1", "baseline")
    assert c.looks == (2,) and f"{obf_spent(2 / 8, 0.05):.4g}" in c.sequential
    assert "bounded by" not in c.sequential
    added = SeedLook(at=T0, steps=("baseline", "step1"), seeds=(3, 4), max_seeds=8)
    c = analyze(_four_seeds(build, spec000, (design, added))).comparison("step1", "baseline")
    assert c.looks == (2, 4) and "bounded by" not in c.sequential


def test_a_look_that_did_not_grow_a_comparison_leaves_it_fixed(build, spec000) -> None:
    look = SeedLook(at=T0, steps=("step4",), seeds=(3, 4), max_seeds=6)
    rep = analyze(replace(build(spec000(), GOOD), looks=(look,)))
    assert rep.comparison("step1", "baseline").sequential == ""


def test_declared_control_pair(build, spec000) -> None:
    spec = spec000()
    spec["analysis"]["pairs"] = [{"a": "step4", "b": "step2", "control": True,
                                  "label": "A/A control", "margin": 0.01}]
    assert Spec.model_validate(spec).analysis.controls == (("step4", "step2"),)
    c = analyze(build(spec, GOOD)).comparison("step4", "step2", "control")
    assert c.kind == "control" and c.label == "A/A control" and c.margin == 0.01
    assert c.verdict == "equivalent"


def _flag_study(build, spec000, series_of):
    cfg = {"model": {"block_size": 128, "attn": "kv_prune",
                     "attn_knobs": {"learned": True, "recency": 64, "keep_ratio": 0.7},
                     "mlp": "gelu", "mlp_knobs": {}},
           "data": {"dataset": "kjv", "tokenizer": "gpt2"},
           "train": {"budget": {"seconds": 60.0}, "batch_size": 8, "grad_accum": 8}}
    data = dict(GOOD, step1=[(3.57, {}, {"config": cfg}), (3.59, {}, {"config": cfg})])
    results = build(spec000(), data)
    series = {a.attempt_id: series_of(a.seed) for a in results.attempts if a.step == "step1"}
    return analyze(results, series)


def test_spam_clip_fraction_above_half_for_100_steps_is_flagged(build, spec000) -> None:
    def clipping(length: int):
        return lambda seed: {"spam_clip_frac": [(it, 0.1) for it in range(0, 100, 10)]
                             + [(it, 0.8) for it in range(100, 100 + length + 1, 10)]
                             + [(400, 0.1)]}

    rep = _flag_study(build, spec000, clipping(100))
    flags = [f for f in rep.flags if f.kind == "spam_clipping"]
    assert [f.seed for f in flags] == [1, 2] and "for 100 steps" in flags[0].message
    assert not [f for f in _flag_study(build, spec000, clipping(90)).flags
                if f.kind == "spam_clipping"]


def test_kv_keep_ratio_pinned_at_its_bound_is_flagged(build, spec000) -> None:
    def ratio(end: float):
        return lambda seed: {
            "kv_keep_ratio": [(it, 0.7 + (end - 0.7) * min(1.0, it / 100)) for it in
                              range(0, 201, 10)],
            "kv_keep_ratio_lm_grad": [(200, 0.02)], "kv_keep_ratio_cost_grad": [(200, -0.03)]}

    rep = _flag_study(build, spec000, ratio(0.5))        # recency 64 / T 128 = 0.5
    flags = [f for f in rep.flags if f.kind == "kv_keep_pinned"]
    assert len(flags) == 2 and "lower bound 0.5" in flags[0].message
    assert "lm_grad +0.02" in flags[0].message and "cost_grad -0.03" in flags[0].message
    assert not [f for f in _flag_study(build, spec000, ratio(0.62)).flags
                if f.kind == "kv_keep_pinned"]
    top = [f for f in _flag_study(build, spec000, ratio(1.0)).flags if f.kind == "kv_keep_pinned"]
    assert top and "upper bound 1" in top[0].message
