"""orchestrator.cli.submit: the typer-free submit steps (issue 13 #6, #9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import submit
from orchestrator.core.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]


def test_a_gpu_scale_study_on_a_cpu_box_warns_with_the_wall_time_from_measured_speed() -> None:
    plan = submit.build_plan(ROOT / "ablations" / "ratio_ablation.yaml", steps=["0"])  # iters budget
    params = {"0": 124_000_000}
    line = submit.slow_here_warning(plan, params, has_gpu=False, flops=lambda: 200e9)
    # 6 x 124M x (8 x 8 x 1024 tokens) / 100 GFLOP/s = 487.6 s an iteration, x 10,400 x 2 seeds
    assert line is not None and line.startswith(
        "warning: no GPU on this box and study ratio_ablation is GPU-scale (124M parameters, 2 runs)")
    assert "measured 100 GFLOP/s its iteration budgets would take about 117 days" in line
    assert "--preset tiny --dataset kjv --time 60" in line
    timed = submit.build_plan(ROOT / "ablations" / "rmlp_prune.yaml", steps=["V0"])
    line = submit.slow_here_warning(timed, {"V0": 124_000_000}, has_gpu=False, flops=lambda: 200e9)
    assert line is not None and "time budgets (4.0 h of wall time in all" in line
    assert "would train ~15 iterations per run here" in line  # 7200 s / 487.6 s
    assert submit.slow_here_warning(timed, {"V0": 124_000_000}, has_gpu=True) is None
    tiny = submit.build_plan(ROOT / "ablations" / "smoke.yaml")
    assert submit.slow_here_warning(tiny, {"V0": 850_688, "V1": 850_696}, has_gpu=False) is None


def test_an_unreachable_unprepared_hf_dataset_is_refused_on_submit_and_warned_on_plan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RECIP_DATA_DIR", str(tmp_path / "data"))
    spec = ROOT / "ablations" / "rmlp_prune.yaml"
    plan = submit.build_plan(spec, steps=["V0"])
    with pytest.raises(SpecError) as e:
        submit.check_plan_or_raise(plan, str(spec), ["V0"], reachable=lambda: False)
    assert "defaults.data.dataset: dataset 'hf:HuggingFaceFW/fineweb-edu' is not prepared" in e.value.message
    assert "recip data prepare hf:HuggingFaceFW/fineweb-edu --tokenizer gpt2" in e.value.message
    params = submit.check_plan_or_raise(plan, str(spec), ["V0"], queueing=False, reachable=lambda: False)
    assert params["V0"] > 100_000_000
    assert "warning: " in capsys.readouterr().err
    assert submit.check_plan_or_raise(plan, str(spec), ["V0"], reachable=lambda: True)


def test_describe_submit_counts_in_singular_and_plural() -> None:
    from orchestrator.queue.types import SubmitResult

    one = SubmitResult(study="s", study_created=True, new_runs=(("V0", 1, "a" * 64),),
                       unchanged_runs=0, changed_steps=(), queued_attempts=1)
    assert submit.describe_submit(one, 1) == ["study s: created with 1 run; 1 attempt queued"]
