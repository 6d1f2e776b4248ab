"""The README's five-minute tour, run verbatim in a fresh directory (issue 9).

Every `$ recip ...` line of the tour section runs as written; each must exit 0 and start its
output with the line the README shows (numbers, hashes, paths and times normalised), so the
README cannot drift from what the tool prints."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def tour() -> list[tuple[str, list[str]]]:
    """(command, the output lines the README shows for it) in tour order."""
    text = README.read_text()
    section = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps and line.strip():
                steps[-1][1].append(line)
    return steps


def normal(line: str) -> str:
    line = re.sub(r"(?<![\w.])/[^\s;,]+", "<path>", line)
    line = re.sub(r"\b[0-9a-f]{7,64}\b", "<hex>", line)
    line = re.sub(r"\d+(?:[.,:]\d+)*", "<n>", line)
    return " ".join(line.split())


def test_the_tour_is_parsed_from_the_readme() -> None:
    commands = [c for c, _ in tour()]
    assert commands[0] == "recip queue submit ablations/smoke.yaml --plan"
    assert "recip workers up --cpu-workers 1 --until-empty" in commands
    assert all(c.startswith("recip ") for c in commands)


def test_readme_tour_runs_verbatim(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "ablations", tmp_path / "ablations")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECIP_DB_URL", "RECIP_DATA"))}
    env["RECIP_DATA_DIR"] = str(tmp_path / "data")
    for command, shown in tour():
        argv = [sys.executable, "-m", "orchestrator.cli.app", *shlex.split(command)[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=420)
        output = (proc.stdout + proc.stderr).splitlines()
        assert proc.returncode == 0, f"{command}: exit {proc.returncode}\n{proc.stderr}"
        if shown:
            got = {normal(line) for line in output}
            assert normal(shown[0]) in got, f"{command}: expected {shown[0]!r} in\n{output}"
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "curves.png", "deltas.png", "gates.png"]
