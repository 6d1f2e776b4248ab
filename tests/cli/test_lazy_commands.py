"""`recip status` and `recip report` import only their own command module (startup cost),
and every command of the full app is reachable through the lazy path too."""

from __future__ import annotations

import json
import subprocess
import sys

import typer

from orchestrator.cli import app as app_module

PROBE = """
import sys
from orchestrator.cli.app import run
rc = run(sys.argv[1:])
mods = sorted(m for m in sys.modules if m.startswith("orchestrator.cli.") and m.endswith("_cmd"))
heavy = sorted(m for m in ("torch", "ray", "matplotlib", "wandb", "rich", "scipy",
                          "sqlalchemy.orm", "alembic") if m in sys.modules)
print("PROBE", __import__("json").dumps({"rc": rc, "cmds": mods, "heavy": heavy}))
"""


def _probe(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=120)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE "))
    return json.loads(line[len("PROBE "):])


def test_status_and_report_import_only_their_module(tmp_path):
    db = f"sqlite:///{tmp_path}/q.db"
    assert _probe("db", "upgrade", "--db", db)["rc"] == 0
    got = _probe("status", "--json", "--db", db)
    assert got["rc"] == 0 and got["cmds"] == ["orchestrator.cli.status_cmd"], got
    assert got["heavy"] == [], got
    got = _probe("report", "nosuch", "--format", "json", "--db", db)
    assert got["cmds"] == ["orchestrator.cli.report_cmd"], got
    assert got["heavy"] == ["scipy"], got   # the statistics, nothing else heavy


def test_every_command_of_the_full_app_is_in_the_lazy_table():
    group = typer.main.get_command(app_module.build_app())
    names = set(group.commands)  # type: ignore[attr-defined]
    assert names == set(app_module.SUBAPPS) | set(app_module.COMMANDS)
    for name in names:
        lazy = typer.main.get_command(app_module.build_app(name))
        assert name in lazy.commands  # type: ignore[attr-defined]


def test_read_commands_exit_fast_with_their_output_and_code(tmp_path):
    """`recip status` / `recip report` leave by `os._exit` after flushing (app.READ_COMMANDS):
    the output is complete, the exit code is the command's, narration reaches stderr."""
    db = f"sqlite:///{tmp_path}/q.db"
    cli = [sys.executable, "-m", "orchestrator.cli.app"]
    assert subprocess.run([*cli, "db", "upgrade", "--db", db], capture_output=True,
                          timeout=120).returncode == 0
    ok = subprocess.run([*cli, "status", "--json", "--db", db], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["studies"] == [], ok
    bad = subprocess.run([*cli, "report", "nosuch", "--db", db], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and "nosuch" in bad.stderr and bad.stdout == "", bad
    assert "status" in app_module.READ_COMMANDS and "run" not in app_module.READ_COMMANDS
