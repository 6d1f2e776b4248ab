"""SeriesSummary from the database equals `core.results.summarise` of the same points, on
both backends (SQLite aggregates in SQL, PostgreSQL reads and summarises), and the report's
flags read from summaries equal the flags read from the full series."""

from __future__ import annotations

import math
from datetime import timedelta

from orchestrator.cli.report_cmd import load_series
from orchestrator.core.results import summarise
from orchestrator.core.states import AttemptState
from orchestrator.report.analysis import analyze
from orchestrator.report.metrics import SUMMARISED

LEASE = timedelta(seconds=60)
INF = math.inf
SERIES: dict[str, list[tuple[int, float]]] = {
    "stats/attn.gate_mean/L0": [(0, 0.5), (10, -0.8), (20, 0.0004)],     # collapsed gate
    "stats/attn.gate_mean/L1": [(0, 0.5), (10, math.nan), (20, 0.4)],    # open; a NaN point
    "stats/mlp.alpha/L0": [(0, -3.0), (10, INF), (20, 2.0), (30, math.nan)],  # last finite 20
    "stats/only_nan": [(0, math.nan), (10, math.nan)],                   # no finite point
    "stats/one": [(5, -0.25)],
    "grad/attn.alpha/L0": [(10, 0.0), (20, 0.0), (30, -0.0)],            # never got gradient
    "grad/attn.beta/L0": [(10, 0.0), (20, 1e-3)],
    "grad/single": [(10, 0.0)],                                          # one point: no flag
    "gradient_norm": [(10, 1.0)],                                        # not under grad/
    "val_loss": [(10, 3.0), (20, 2.5)],
}


def _attempt(repo, plan_factory, fake_clock, series=SERIES) -> int:
    repo.submit(plan_factory(steps=("V0",)), fake_clock.now())
    c = repo.claim("w1", fake_clock.now(), LEASE)
    repo.start(c.attempt_id, "w1", fake_clock.now(), LEASE, artifact_dir="/tmp/a", code_sha="abc",
               code_dirty=False, diff_hash=None, host="box", gpu=None, pid=1, env={})
    repo.record_metrics(c.attempt_id, "w1", [(n, s, v) for n, pts in series.items()
                                             for s, v in pts])
    fake_clock.advance(60)
    repo.finish(c.attempt_id, "w1", fake_clock.now(), AttemptState.SUCCEEDED, exit_code=0,
                result={"best_val_loss": 2.5, "final_val_loss": 2.5, "train_s": 60.0,
                        "iters": 30, "tokens": 30_000})
    return int(c.attempt_id)


def test_database_summaries_equal_the_python_definition(repo, plan_factory, fake_clock):
    a = _attempt(repo, plan_factory, fake_clock)
    got = repo.metric_summaries([a], prefix=SUMMARISED)[a]
    want = {n: s for n, pts in SERIES.items() if n.startswith(SUMMARISED)
            and (s := summarise(pts)) is not None}
    assert got == want
    assert got["stats/mlp.alpha/L0"].last_step == 20 and got["stats/mlp.alpha/L0"].max_abs == 3.0
    assert "stats/only_nan" not in got and "gradient_norm" not in got
    overlapping = repo.metric_summaries([a], prefix=("stats/", "stats/attn", "grad/"))[a]
    assert overlapping == want
    assert repo.metric_summaries([], prefix=SUMMARISED) == {}
    assert repo.metric_summaries([a], prefix=())[a] == {}


def test_report_flags_from_summaries_equal_those_from_the_full_series(repo, plan_factory,
                                                                      fake_clock):
    a = _attempt(repo, plan_factory, fake_clock)
    results = repo.study_results(repo.study_names()[0])
    full = repo.metric_series([a])
    series, summaries = load_series(repo, results)
    assert not any(n.startswith(SUMMARISED) for n in series[a])     # not moved twice
    from_summaries = analyze(results, series, summaries=summaries)
    from_full = analyze(results, full)
    assert from_summaries.flags == from_full.flags
    kinds = sorted(f.kind for f in from_full.flags)
    assert kinds == ["gate_collapsed", "no_gradient"], from_full.flags
    gated, _ = load_series(repo, results, gates=True)               # --plot: gates in full
    assert gated[a]["stats/attn.gate_mean/L0"] == full[a]["stats/attn.gate_mean/L0"]
