"""`recip check FILE` through the real CLI boundary: table on stdout, narration on stderr, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli.app import run

SPEC = """\
study: chk
defaults:
  model: {preset: gpt2-124m}
  data: {dataset: kjv, tokenizer: byte}
  train: {budget: {seconds: 10}}
  seeds: [1, 2]
steps:
  V0: {description: baseline}
  V1: {parent: V0, attention: {mla: {latent_dim: 32}}}
  V2: {parent: V1, mlp: {reciprocal_mlp: {gate: true, cross: true, cross_rank: 8, recip: true}}}
  V3: {parent: V1, train: {lr: 1.0e-3}}
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "chk.yaml"
    path.write_text(SPEC)
    return path


@pytest.mark.slow
def test_table_on_stdout_summary_on_stderr(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = run(["check", str(spec), "--preset", "tiny"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:10] == ["step", "ok", "total", "attn", "mlp", "mech", "attn:mlp", "causal",
                                     "active", "same"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"V0", "V1", "V2", "V3"}
    assert rows["V0"][1] == "ok" and rows["V0"][6] == "1:1.99" and rows["V0"][8] == "base"
    assert rows["V2"][7:9] == ["yes", "yes"]
    assert rows["V3"][9] == "V1"
    assert "mla(latent_dim=32) + reciprocal_mlp(gate, cross, cross_rank=8, recip)" in out
    assert "note: V3 builds the same model as V1 (they differ outside `model`)" in err
    assert err.strip().endswith("4 step(s) checked, 0 failed")
    assert "warning" not in out and "error" not in out


@pytest.mark.slow
def test_json_and_steps(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = run(["check", str(spec), "--steps", "V0,V2", "--json"])
    out, _ = capsys.readouterr()
    assert rc == 0
    data = json.loads(out)
    assert [d["step"] for d in data] == ["V0", "V2"]
    v2 = data[1]
    assert v2["ok"] and v2["causal"] and v2["mechanisms_active"]
    assert v2["params"]["attention"] > 0 and v2["params"]["mechanism"] > 0
    assert v2["probe"] == "L2 H12 E96 T32"  # gpt2-124m (no --preset) is probed shrunk


@pytest.mark.slow
def test_a_failing_step_exits_1_with_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SPEC + "  V4: {parent: V1, mlp: {reciprocal_mlp: {gates: true}}}\n")
    rc = run(["check", str(path), "--preset", "tiny"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert any(line.startswith("V4 ") and " FAIL " in line for line in out.splitlines())
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {path}: V4: mlp.reciprocal_mlp: unknown knob 'gates' for mlp mechanism "
                      "'reciprocal_mlp' (known: gate, gate_dim, noncausal_gate, cross, cross_alpha, "
                      "sparse_mode, sparse_k, sparse_tau, normalize, cross_rank, recip, recip_alpha_mlp, "
                      "tying_mode, force_gates_open)"]
    assert err.strip().endswith("5 step(s) checked, 1 failed: V4")
    assert "Traceback" not in err


def test_bad_input_is_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = run(["check", str(tmp_path / "missing.yaml")])
    _, err = capsys.readouterr()
    assert rc == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    rc = run(["check", str(spec), "--steps", "V9"])
    _, err = capsys.readouterr()
    assert rc == 1 and "V9" in err and len(err.strip().splitlines()) == 1
