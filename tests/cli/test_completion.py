"""Study names tab-complete from the default database (issue 13 #9)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrator.cli.app import run

ROOT = Path(__file__).resolve().parents[2]


def complete(words: str, db: str) -> list[str]:
    env = {**os.environ, "_RECIP_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
           "RECIP_DB_URL": db, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli.app"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env, check=False)
    return proc.stdout.split()


def test_study_names_complete_for_show_status_and_cancel(sqlite_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text((ROOT / "ablations" / "smoke.yaml").read_text())
    assert run(["queue", "submit", str(spec), "--no-check", "--db", sqlite_url]) == 0
    assert complete("recip show sm", sqlite_url) == ["smoke"]
    assert complete("recip status s", sqlite_url) == ["smoke"]
    assert complete("recip queue cancel x", sqlite_url) == []
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert complete("recip show sm", missing) == [] and not (tmp_path / "none.db").exists()


def test_short_f_means_follow_only(capsys) -> None:
    # `-f` was --format in report and --follow in logs (issue 13 #9): now only --follow
    assert run(["report", "x", "-f", "json"]) == 2
    assert "No such option: -f" in capsys.readouterr().err
