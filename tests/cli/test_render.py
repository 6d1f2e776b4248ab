"""Pure renderers printed into plain consoles (100 columns unless a test says otherwise)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console, RenderableType

from models.presets import PRESETS, TOKENIZER_VOCAB
from orchestrator.cli import format as fmt
from orchestrator.cli import render
from orchestrator.cli.render import plan as plan_view
from orchestrator.cli.render import status
from orchestrator.core.loader import spec_from_text
from orchestrator.core.resolve import Overrides, resolve
from orchestrator.core.views import RunView, Snapshot, StudyView, WorkerView

NOW = datetime(2026, 3, 1, 12, 4, 31, tzinfo=UTC)


def show(renderable: RenderableType, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert all(len(line) <= width for line in out.splitlines())
    return str(out)


def runview(step: str, state: str | None, **kw: object) -> RunView:
    base: dict[str, object] = {"study": "gpt2-rmlp", "step": step, "seed": 1, "run_id": 1,
                               "config_hash": "a" * 64}
    if state is not None:
        base.update(attempt_id=1, attempt_no=1, attempts=1, state=state)
    base.update(kw)
    return RunView(**base)  # type: ignore[arg-type]


def snapshot(*runs: RunView, workers: tuple[WorkerView, ...] = (),
             db: str = "sqlite:///recip.db") -> Snapshot:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.state or "new"] = counts.get(r.state or "new", 0) + 1
    study = StudyView(name="gpt2-rmlp", description="", created_at=NOW, counts=counts,
                      runs=runs)
    return Snapshot(taken_at=NOW, db=db,
                    studies=(study,), workers=workers)


ALL_COLUMNS = ["step", "seed", "att", "state", "phase", "worker", "iter", "train", "eval", "loss",
               "val_loss", "tok/s", "heartbeat"]


def test_status_table() -> None:
    snap = snapshot(
        runview("V0", "succeeded", worker="gpu-a:0", iter=5000, train_s=3600.0,
                budget_s=3600.0, val_loss=3.4123, finished_at=NOW, phase="succeeded"),
        runview("V1", "running", worker="gpu-a:1", iter=2210, train_s=1620.0, budget_s=3600.0,
                val_loss=3.588, loss=2.9171, tokens=2_262_000, heartbeat_at=NOW - timedelta(seconds=4),
                lease_expires_at=NOW + timedelta(seconds=56), phase="eval", eval_s=4.25),
        runview("V3", "queued"),
        runview("V4", "failed", failure_kind="oom", attempt_no=3, flags=("diverged", "slow")),
        runview("V5", None),
    )
    out = show(status.render_status(snap), width=200).splitlines()
    assert out[0] == ("gpt2-rmlp  1 running · 1 queued · 1 succeeded · 1 failed · 1 new   "
                      "sqlite:///recip.db   12:04:31")
    # 2 of 5 done; budget used 60m + 27m of the two 60m budgets; ETA: V1's 33m left scaled
    # by its (1620 + 4.25) / 1620, V3 and V5 have no budget -> the typical run (60m) each,
    # scaled by the study's ratio (V0 measured no eval time): ~153m at one run at a time
    assert out[1] == ("[████████░░░░░░░░░░░░] 2/5 runs done · budget 87m/2h used (+4.2s eval) · "
                      "ETA ~2.6h incl. eval at 1 in parallel")
    assert out[2].split() == ALL_COLUMNS
    assert out[3].split() == ["V0", "1", "1", "succeeded", "–", "gpu-a:0", "5000", "60.0/60.0m",
                              "–", "–", "3.412", "–", "–"]           # no phase once finished
    assert out[4].split() == ["V1", "1", "1", "running", "eval", "gpu-a:1", "2210", "27.0/60.0m",
                              "4.2s", "2.917", "3.588", "1.4k", "4s"]
    assert out[5].split() == ["V3", "1", "1", "queued"] + ["–"] * 9
    assert out[6].split() == ["V4", "1", "3", "failed:oom"] + ["–"] * 9
    assert out[7] == "    flags: diverged, slow"  # in full, on its own line
    assert out[8].split() == ["V5", "1", "–", "new"] + ["–"] * 9
    assert not any(line.startswith("hidden:") for line in out)   # nothing hidden at 200


def test_the_phase_is_a_short_word_while_the_lease_is_held() -> None:
    phases = {"training": "train", "eval": "eval", "checkpoint": "ckpt",
              "preparing_data": "data", "post_train": "post", None: "–"}
    for phase, word in phases.items():
        row = status.run_row(runview("V1", "running", phase=phase), NOW)
        assert row[ALL_COLUMNS.index("phase")].plain == word
    claimed = status.run_row(runview("V1", "claimed", phase="preparing_data"), NOW)
    assert claimed[ALL_COLUMNS.index("phase")].plain == "data"
    for state in ("succeeded", "failed", "queued"):
        row = status.run_row(runview("V1", state, phase="eval", eval_s=3.0), NOW)
        assert row[ALL_COLUMNS.index("phase")].plain == "–"
        assert row[ALL_COLUMNS.index("eval")].plain == "3.0s"


def test_the_eta_counts_eval_time() -> None:
    """Training left x each run's measured (train_s + eval_s) / train_s; a run that measured
    none takes the study's ratio."""
    study = snapshot(
        runview("V0", "succeeded", train_s=60.0, eval_s=20.0, budget_s=60.0),
        runview("V1", "running", train_s=30.0, eval_s=15.0, budget_s=60.0),
        runview("V2", "queued", budget_s=60.0),
    ).studies[0]
    # V1: 30 s left x 45/30 = 45 s; V2: 60 s x (60+20+30+15)/(60+30) = 83.3 s; 128 s
    assert status.study_progress(study).plain == (
        "[███████░░░░░░░░░░░░░] 1/3 runs done · budget 90s/3m used (+35s eval) · "
        "ETA ~2.1m incl. eval at 1 in parallel")
    assert status.study_progress(study, workers=2).plain.endswith(
        "ETA ~64s incl. eval at 2 in parallel")
    no_eval = snapshot(runview("V0", "running", train_s=30.0, budget_s=60.0)).studies[0]
    assert status.study_progress(no_eval).plain.endswith("· ETA ~30s at 1 in parallel")


def wide_snapshot() -> Snapshot:
    worker = "gpu-box-with-a-long-name:cpu0-1234567"
    return snapshot(
        runview("V0", "succeeded", worker=worker, iter=5000, train_s=3600.0, budget_s=3600.0,
                eval_s=312.0, loss=2.9, val_loss=3.4123, tokens=9_000_000),
        runview("V1", "running", worker=worker, iter=2210, train_s=1620.0,
                budget_s=3600.0, eval_s=150.0, phase="eval", val_loss=3.588, loss=2.9171,
                tokens=2_262_000, heartbeat_at=NOW - timedelta(seconds=4),
                lease_expires_at=NOW + timedelta(seconds=56),
                flags=("tok/s -15% vs V0", "val_loss 2.1x the parent's at the same tokens")),
        runview("V2", "failed", failure_kind="oom", attempt_no=2),
        runview("V3", "queued"),
    )


def test_rows_fit_80_columns_and_say_which_columns_they_hide() -> None:
    out = show(status.render_status(wide_snapshot()), width=80).splitlines()  # <= 80 each
    header = next(line for line in out if line.startswith("step"))
    assert header.split() == [c for c in ALL_COLUMNS if c not in ("heartbeat", "worker", "tok/s")]
    assert out[out.index(header) + 2].split()[:5] == ["V1", "1", "1", "running",
                                                      "eval"]
    assert ("hidden: heartbeat, worker, tok/s (a wider terminal or `--json` shows them)"
            in out)
    text = " ".join(" ".join(out).split())
    assert "flags: tok/s -15% vs V0, val_loss 2.1x the parent's at the same tokens" in text


def test_rows_use_a_wide_terminal_in_full() -> None:
    out = show(status.render_status(wide_snapshot()), width=200).splitlines()
    header = next(line for line in out if line.startswith("step"))
    assert header.split() == ALL_COLUMNS
    assert not any(line.startswith("hidden:") for line in out)
    assert any("gpu-box-with-a-long-name:cpu0-1234567" in line for line in out)  # not cut


def test_a_very_narrow_console_keeps_step_seed_state_and_train() -> None:
    out = show(status.render_status(wide_snapshot()), width=40).splitlines()
    header = next(line for line in out if line.startswith("step"))
    assert header.split() == ["step", "seed", "state", "train"]
    text = " ".join(" ".join(out).split())                      # the dim line wraps here
    assert "hidden: heartbeat, worker, tok/s, loss, att, eval, phase, iter, val_loss (" in text


def test_long_flags_are_shown_in_full_at_80_and_200_columns() -> None:
    long = ("tok/s -15% vs V0", "val_loss 2.1x the parent's at the same tokens",
            "grad norm spikes in 4 of the last 10 evals")
    snap = snapshot(runview("V1", "running", flags=long))
    for width in (80, 200):
        console = Console(file=io.StringIO(), width=width, color_system=None)
        console.print(status.render_status(snap))
        text = " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]
        assert all(flag in text for flag in long)


def test_long_header_wraps_within_100_columns() -> None:
    url = "postgresql+psycopg://bob:***@db.example.org:5432/recip"
    out = show(status.render_status(snapshot(runview("V0", "queued"), runview("V1", "lost"),
                                             runview("V2", "cancelled"), db=url)))
    assert url in out


def test_heartbeat_colours() -> None:
    """Yellow past two heartbeat intervals, where the interval is a third of the lease that
    the last heartbeat took (lease_expires_at - heartbeat_at); red once the lease expired."""

    def cell(age: float, lease_s: float) -> tuple[str, str]:
        beat = NOW - timedelta(seconds=age)
        run = runview("V1", "running", heartbeat_at=beat,
                      lease_expires_at=beat + timedelta(seconds=lease_s))
        text = status.heartbeat_cell(run, NOW)
        return text.plain, str(text.style)

    # a 60 s lease: interval 20 s, yellow past 40 s
    assert cell(4, 60) == ("4s", "")
    assert cell(39, 60) == ("39s", "")
    assert cell(41, 60) == ("41s", "yellow")
    assert cell(70, 60) == ("70s expired", "bold red")
    # a 300 s lease: interval 100 s, so 150 s is still on time and 201 s is late
    assert cell(150, 300) == ("2m", "")
    assert cell(201, 300)[1] == "yellow"
    assert status.heartbeat_cell(runview("V1", "succeeded"), NOW).plain == "–"
    naive = runview("V1", "claimed", heartbeat_at=(NOW - timedelta(seconds=30)).replace(tzinfo=None))
    assert status.heartbeat_cell(naive, NOW).plain == "30s"
    assert str(status.heartbeat_cell(naive, NOW).style) == "yellow"  # default 10 s interval


def test_workers_and_empty() -> None:
    w = WorkerView(id="gpu-a:0", host="gpu-a", gpu="0", pid=123, started_at=NOW,
                   last_heartbeat=NOW - timedelta(seconds=3), stopped_at=None,
                   current_attempt=7)
    gone = WorkerView(id="old", host="h", gpu=None, pid=None, started_at=NOW,
                      last_heartbeat=NOW, stopped_at=NOW)
    out = show(status.render_status(snapshot(runview("V0", "running", attempt_id=7, attempt_no=2,
                                                     seed=3), workers=(w, gone))))
    assert "workers" in out
    assert "gpu-a:0  gpu-a  0    123  gpt2-rmlp V0 seed 3 attempt 2  3s" in out  # not id 7
    assert "old" not in out
    empty = Snapshot(taken_at=NOW, db="sqlite:///x.db")
    assert show(status.render_status(empty)).strip() == "no studies in sqlite:///x.db"


@pytest.mark.parametrize(("fn", "arg", "text"), [
    (fmt.fmt_seconds, 60, "60s"), (fmt.fmt_seconds, 600, "10m"),
    (fmt.fmt_seconds, 150, "2.5m"), (fmt.fmt_seconds, 5400, "90m"),
    (fmt.fmt_seconds, 36000, "10h"), (fmt.fmt_seconds, 9000, "2.5h"),
    (fmt.fmt_count, 500, "500"), (fmt.fmt_count, 1500, "1.5k"),
    (fmt.fmt_count, 2_000_000, "2M"), (fmt.fmt_count, 124_439_808, "124M"),
    (fmt.fmt_budget, {"seconds": 60.0, "iters": 500, "tokens": None}, "60s|500it"),
    (fmt.fmt_budget, {"seconds": None, "iters": None, "tokens": 10**9}, "1Gtok"),
    (fmt.fmt_mechanisms, {"attn": "causal", "attn_knobs": {}, "mlp": "rmlp",
                             "mlp_knobs": {"R_ff": 64, "use_mixer": True}},
     "causal + rmlp(R_ff=64, use_mixer=true)"),
    (fmt.counts_line, {"queued": 2, "lost": 0, "running": 1}, "1 running · 2 queued"),
    (fmt.counts_line, {}, "no runs"),
])
def test_formatters(fn: object, arg: object, text: str) -> None:
    assert fn(arg) == text  # type: ignore[operator]


def test_fmt_train() -> None:
    assert fmt.fmt_train(runview("V", "running", train_s=30.0, budget_s=60.0)) == "30.0/60.0s"
    assert fmt.fmt_train(runview("V", "running", train_s=7200.0, budget_s=36000.0)) == "2.0/10.0h"
    assert fmt.fmt_train(runview("V", "running", train_s=5.0, fraction=0.25)) == "25%"
    assert fmt.fmt_train(runview("V", "queued")) == "–"


SPEC = """\
study: gpt2-rmlp
defaults:
  model: {preset: tiny}
  train: {budget: {seconds: 3600}}
steps:
  V0: {description: baseline}
  V1: {parent: V0, mlp: {rmlp: {R_ff: 64}}}
  V2: {parent: V0, mlp: {rmlp: {R_ff: 64}}, train: {budget: {seconds: null, iters: 100}}}
"""


def test_plan_table() -> None:
    plan = resolve(spec_from_text(SPEC), presets=PRESETS, vocab=TOKENIZER_VOCAB,
                   overrides=Overrides(seeds=(1, 2)))
    out = show(plan_view.render_plan(plan, {"V0": 7_248_640, "V1": 7_200_000})).splitlines()
    assert out[0] == f"study gpt2-rmlp   spec {plan.spec_hash[:8]}   code head"
    assert out[1] == "overrides: --seeds 1,2"
    assert out[2].split() == ["step", "seed", "mechanisms", "config", "budget", "gpu-h", "params"]
    h = {(r.step, r.seed): r.config_hash[:8] for r in plan.runs}
    assert out[3].split() == ["V0", "1", "causal", "+", "gelu", h["V0", 1], "60m", "1.00", "7,248,640"]
    assert out[6].split() == ["V1", "2", "causal", "+", "rmlp(R_ff=64)", h["V1", 2], "60m", "1.00",
                              "7,200,000"]
    assert out[7].split() == ["V2", "1", "causal", "+", "rmlp(R_ff=64)", h["V2", 1], "100it", "–", "–"]
    assert fmt.fmt_gpu_hours(plan.runs) == "4.00 GPU-hours + 2 runs with no time budget"
    no_params = show(plan_view.render_plan(plan)).splitlines()
    assert "params" not in no_params[2]


def test_studies_table() -> None:
    out = show(status.render_studies(snapshot(runview("V0", "queued"), runview("V1", "lost"))))
    assert out.splitlines()[1].split()[:5] == ["gpt2-rmlp", "2", "1", "queued", "·"]


def test_live_redraws_until_done() -> None:
    frames: list[int] = []
    sleeps: list[float] = []

    def frame() -> tuple[RenderableType, bool]:
        frames.append(len(frames))
        return status.render_status(snapshot(runview("V0", "running"))), len(frames) == 3

    console = Console(file=io.StringIO(), width=100, color_system=None)
    assert render.live(frame, interval=2.0, console=console, sleep=sleeps.append) == 3
    assert sleeps == [2.0, 2.0]
    assert "gpt2-rmlp" in console.file.getvalue()  # type: ignore[attr-defined]
    assert render.live(frame, console=console, max_frames=1, sleep=sleeps.append) == 1


def test_make_console_is_at_most_100_wide_unless_wide() -> None:
    assert render.make_console(io.StringIO()).width == 100
    assert render.make_console(io.StringIO(), width=300).width == 100
    assert render.make_console(io.StringIO(), width=60).width == 60
    # the dashboard: as wide as asked, and 100 off a terminal (pipes and tests stay stable)
    assert render.make_console(io.StringIO(), width=300, wide=True).width == 300
    assert render.make_console(io.StringIO(), wide=True).width == 100
    assert render.make_console(io.StringIO(), colour=False).color_system is None
