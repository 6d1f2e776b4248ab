"""Markdown/JSON exports and PNG plots of a synthetic Report."""

from __future__ import annotations

import json

import pytest

from orchestrator.report.analysis import analyze
from orchestrator.report.export import to_json, to_markdown
from orchestrator.report.plots import seed_band, write_plots

GOOD = {"baseline": [3.62, 3.64], "step1": [3.57, 3.59], "step2": [3.53, 3.55],
        "step3": [3.48, 3.50], "step4": [3.53, 3.55], "step5": [3.43, 3.45]}


def _series(results):
    out = {}
    for a in results.attempts:
        final = a.result["best_val_loss"]
        out[a.attempt_id] = {
            "val_loss": [(0, 10.8), (50, 5.0 + a.seed * 0.01), (100, final)],
            "stats/mlp.gate_alpha/L0": [(0, 0.1), (50, 0.11), (100, 0.12)],
            "stats/mlp.gate_alpha/L1": [(0, 0.1), (50, 0.09), (100, 0.08)],
        }
    return out


def test_json_export_round_trips_the_numbers(build, spec000) -> None:
    rep = analyze(build(spec000(), dict(GOOD, step2=[])))
    data = json.loads(to_json(rep))
    assert data["study"] == "ra_mla_reciprocal" and data["metric"] == "best_val_loss"
    c = next(c for c in data["comparisons"] if c["a"] == "step1" and c["b"] == "baseline")
    assert c["delta"] == pytest.approx(-0.05) and c["verdict"] == "better"
    pend = next(c for c in data["comparisons"] if c["a"] == "step3" and c["b"] == "step2")
    assert pend["verdict"] == "pending" and pend["delta"] is None
    assert [r["status"] for r in data["rules"]] == ["quiet", "pending", "pending", "quiet"]
    assert data["used_attempts"]["step1"] == [[1, 3], [2, 4]]
    compact = to_json(rep, {"preset": "tiny", "time": float("inf")}, compact=True)
    assert compact.count("\n") == 1 and json.loads(compact)["overrides"] == {
        "preset": "tiny", "time": None}                       # non-finite -> null, as before
    assert {k: v for k, v in json.loads(compact).items() if k != "overrides"} == {
        k: v for k, v in data.items() if k != "overrides"}


def test_markdown_has_every_section_and_links_plots(build, spec000, tmp_path) -> None:
    rep = analyze(build(spec000(), dict(GOOD, step1=[3.68, 3.70])))
    md = to_markdown(rep, plots=[tmp_path / "plots" / "curves.png"], relative_to=tmp_path)
    for heading in ("## Steps", "## Deltas", "## Cumulative effect", "## Monotonicity",
                    "## Expected ranges", "## Troubleshooting rules", "## Flags", "## Plots"):
        assert heading in md
    assert "| step1 vs baseline | parent | +0.0600 (+1.65%) |" in md
    assert "| step1 | worse_than baseline | FIRED |" in md
    assert "![curves](plots/curves.png)" in md


def test_seed_band_interpolates_inside_each_seed_range() -> None:
    x, mean, low, high = seed_band([[(0, 4.0), (10, 2.0)], [(0, 6.0), (5, 4.0)]])
    assert x == [0.0, 5.0, 10.0]
    assert mean == [5.0, 3.5, 2.0] and low == [4.0, 3.0, 2.0] and high == [6.0, 4.0, 2.0]


def test_plots_are_written_as_png(build, spec000, tmp_path) -> None:
    results = build(spec000(), GOOD)
    rep = analyze(results)
    paths = write_plots(rep, _series(results), tmp_path / "plots")
    assert [p.name for p in paths] == ["curves.png", "deltas.png", "gates.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_no_series_writes_only_the_delta_plot(build, spec000, tmp_path) -> None:
    rep = analyze(build(spec000(), GOOD))
    assert [p.name for p in write_plots(rep, {}, tmp_path)] == ["deltas.png"]


def test_curve_ylim_skips_the_untrained_start_of_long_runs() -> None:
    from orchestrator.report.plots import curve_ylim

    x = [float(i * 10) for i in range(21)]
    long = (x, [10.0] + [4.0 - 0.01 * i for i in range(20)], [10.0] + [3.9] * 20,
            [10.0] + [4.1] * 20)
    lo, hi = curve_ylim([long])
    assert lo < 3.9 and 4.1 < hi < 5.0
    short = ([0.0, 10.0, 20.0], [10.0, 9.0, 8.0], [10.0, 9.0, 8.0], [10.0, 9.0, 8.0])
    lo, hi = curve_ylim([short])
    assert lo < 8.0 and hi > 10.0


def test_curves_put_tokens_on_the_x_axis_for_time_budgets(build, spec000) -> None:
    from orchestrator.report.plots import val_curves

    results = build(spec000(), GOOD)          # the conftest config has a 60 s budget
    rep = analyze(results)
    assert rep.time_budget
    series = _series(results)
    by_iter = val_curves(rep, series)
    by_tokens = val_curves(rep, series, tokens=True)
    assert by_iter["step1"][0] == [0.0, 50.0, 100.0]
    assert by_tokens["step1"][0] == [0.0, 50.0 * 8192, 100.0 * 8192]   # tokens / iters


def test_delta_plot_marks_confounded_and_equivalent(build, spec000, tmp_path) -> None:
    data = dict(GOOD, step1=[(3.57, {}, {"code_sha": "7ec430d9999"}),
                             (3.59, {}, {"code_sha": "7ec430d9999"})])
    rep = analyze(build(spec000(noise_floor=0.01), data))
    assert {c.verdict for c in rep.comparisons} >= {"confounded", "equivalent", "better"}
    (path,) = write_plots(rep, {}, tmp_path)
    assert path.name == "deltas.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_gate_plot_includes_the_learned_kv_keep_ratio(build, spec000) -> None:
    from orchestrator.report.plots import gate_curves

    results = build(spec000(), GOOD)
    series = {a.attempt_id: {"kv_keep_ratio/L0": [(0, 0.7), (100, 0.6)],
                             "kv_keep_ratio/L1": [(0, 0.7), (100, 0.5)],
                             "kv_keep_ratio_lm_grad": [(0, 0.1), (100, 0.2)]}
              for a in results.attempts if a.step == "step1"}
    curves = gate_curves(analyze(results), series)
    assert list(curves) == ["step1"] and list(curves["step1"]) == ["kv_keep_ratio"]
    assert curves["step1"]["kv_keep_ratio"][1] == [0.7, 0.55]      # mean over layers
