"""The overrides a study was submitted under are recorded with it and shown by the report
(JSON `overrides`, a line in md and table, the goal text marked as another scale's) (issue 13 #4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli.app import run

SPEC = """
study: scaled
description: goal at full scale
defaults:
  model: {preset: small}
  data: {dataset: kjv, tokenizer: byte}
  train: {budget: {seconds: 7200}, eval_batches: 200, grad_accum: 8}
  seeds: [1]
steps:
  V0: {description: baseline}
"""


@pytest.fixture()
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "scaled.yaml"
    path.write_text(SPEC)
    return path


def test_report_json_md_and_table_carry_the_overrides(spec_file: Path, sqlite_url: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["queue", "submit", str(spec_file), "--preset", "tiny", "--time", "20",
                "--no-check", "--db", sqlite_url]) == 0
    capsys.readouterr()
    assert run(["report", "scaled", "--format", "json", "--db", sqlite_url]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["overrides"]["preset"] == "tiny" and data["overrides"]["time"] == 20.0
    assert data["overrides"]["run_scale"]["eval_batches"] == 4
    assert run(["report", "scaled", "--format", "md", "--db", sqlite_url]) == 0
    md = capsys.readouterr().out
    assert "> overrides: --preset tiny --time 20.0" in md
    assert "written for its own scale (preset small, seconds 7200.0), not for this run" in md
    assert run(["report", "scaled", "--db", sqlite_url]) == 0
    table = capsys.readouterr().out
    assert "overrides: --preset tiny --time 20.0" in table


def test_a_study_run_as_written_has_empty_overrides(spec_file: Path, sqlite_url: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["queue", "submit", str(spec_file), "--no-check", "--db", sqlite_url]) == 0
    capsys.readouterr()
    assert run(["report", "scaled", "--format", "json", "--db", sqlite_url]) == 0
    assert json.loads(capsys.readouterr().out)["overrides"] == {}
