"""Every listing command takes `--json` (audited on the real command tree), the newly added
ones print parseable JSON, and typer's shell completion works for `recip`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from orchestrator.cli.app import app, run

ROOT = Path(__file__).resolve().parents[2]
LISTING = [
    ("queue", "ls"), ("queue", "submit"), ("status",), ("workers", "ls"), ("data", "ls"),
    ("data", "prepare"), ("report",), ("show",), ("check",), ("doctor",), ("db", "current"),
    ("baseline", "ls"), ("baseline", "import"), ("wandb", "sync"),
]
SPEC = """\
study: audit
defaults:
  model: {preset: tiny}
  data: {dataset: kjv, tokenizer: byte}
  train: {budget: {seconds: 5}}
steps:
  V0: {description: baseline}
  V1: {parent: V0, description: same again}
"""


def _command(path: tuple[str, ...]) -> object:
    node = typer.main.get_command(app)
    for name in path:
        node = node.commands[name]  # type: ignore[attr-defined]
    return node


@pytest.mark.parametrize("path", LISTING, ids=" ".join)
def test_listing_command_has_json(path: tuple[str, ...]) -> None:
    options = {o for p in _command(path).params for o in getattr(p, "opts", [])}  # type: ignore[attr-defined]
    assert "--json" in options, f"recip {' '.join(path)} lacks --json"


def test_submit_plan_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "audit.yaml"
    spec.write_text(SPEC)
    assert run(["queue", "submit", str(spec), "--plan", "--no-check", "--json"]) == 0
    out, err = capsys.readouterr()
    plan = json.loads(out)
    assert plan["study"] == "audit"
    assert [(r["step"], r["seed"], r["parent"]) for r in plan["runs"]] == [
        ("V0", 1, None), ("V1", 1, "V0")]
    assert plan["runs"][0]["config"]["train"]["budget"]["seconds"] == 5.0
    assert "Nothing queued (--plan)" in err


def test_submit_json_and_report_json_alias(tmp_path: Path, sqlite_url: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "audit.yaml"
    spec.write_text(SPEC)
    assert run(["queue", "submit", str(spec), "--no-check", "--json", "--db", sqlite_url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["queued_attempts"] == 2 and out["new_runs"] == 2
    assert run(["report", "audit", "--json", "--db", sqlite_url]) == 0
    via_flag = json.loads(capsys.readouterr().out)
    assert run(["report", "audit", "--format", "json", "--db", sqlite_url]) == 0
    assert via_flag == json.loads(capsys.readouterr().out)
    assert [s["step"] for s in via_flag["steps"]] == ["V0", "V1"]


def test_show_completion_mentions_recip() -> None:
    # click's own `source_bash` request: `--show-completion` asks shellingham which shell runs
    # the suite, and answers "Shell  not supported." under a CI runner or an IDE (issue 13 #10)
    env = {k: v for k, v in os.environ.items() if k != "SHELL"}
    env["_RECIP_COMPLETE"] = "source_bash"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli.app"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "_recip_completion" in proc.stdout and "complete " in proc.stdout
    assert "recip" in proc.stdout.split("complete ")[-1]


def test_completion_completes_subcommands() -> None:
    env = {**os.environ, "_RECIP_COMPLETE": "complete_bash", "COMP_WORDS": "recip wa",
           "COMP_CWORD": "1"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli.app"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env, check=False)
    assert proc.stdout.split() == ["wandb"], proc.stdout + proc.stderr
