"""`recip report` through the real CLI boundary on a real SQLite file."""

from __future__ import annotations

import json

from orchestrator.cli.app import run
from tests.db.test_report_db import GOOD, submit, work


def _study(sqlite_url, fake_clock, **values) -> None:
    from orchestrator.queue.repo import QueueRepo

    repo = QueueRepo.open(sqlite_url)
    try:
        submit(repo, fake_clock.now())
        work(repo, fake_clock, dict(GOOD, **values), gate_closes="step4")
    finally:
        repo.close()


def test_table_on_stdout_summary_on_stderr(sqlite_url, fake_clock, capsys) -> None:
    _study(sqlite_url, fake_clock, step1=[3.68, 3.70])
    assert run(["report", "ra_mla_reciprocal", "--db", sqlite_url]) == 0
    out, err = capsys.readouterr()
    assert "step1 vs baseline" in out and "+0.0600 (+1.65%)" in out
    assert "FIRED" in out and "mechanism 1 hurts" in out
    assert "step4 gate_collapsed" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert err.strip().splitlines() == [
        "ra_mla_reciprocal: 6/6 steps done, 2 rule(s) fired, 2 flag(s)",
        "7 of 7 comparisons decided"]


def test_json_format(sqlite_url, fake_clock, capsys) -> None:
    _study(sqlite_url, fake_clock)
    assert run(["report", "ra_mla_reciprocal", "--format", "json", "--db", sqlite_url]) == 0
    data = json.loads(capsys.readouterr().out)
    c = next(c for c in data["comparisons"] if c["a"] == "step2" and c["b"] == "step1")
    assert abs(c["delta"] + 0.04) < 1e-9 and c["verdict"] == "better"


def test_markdown_file_with_plots(sqlite_url, fake_clock, tmp_path, capsys) -> None:
    _study(sqlite_url, fake_clock)
    md, plots = tmp_path / "out" / "report.md", tmp_path / "out" / "plots"
    rc = run(["report", "ra_mla_reciprocal", "--format", "md", "--out", str(md), "--plot", str(plots),
              "--db", sqlite_url])
    assert rc == 0
    out, err = capsys.readouterr()
    assert out == ""
    text = md.read_text()
    assert "![curves](plots/curves.png)" in text and "![gates](plots/gates.png)" in text
    for name in ("curves.png", "deltas.png", "gates.png"):
        assert (plots / name).read_bytes()[:4] == b"\x89PNG"
        assert f"wrote {plots / name}" in err


def test_unknown_study_is_one_line(sqlite_url, capsys) -> None:
    assert run(["report", "nope", "--db", sqlite_url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "nope" in err


def test_bad_format_is_a_usage_error(sqlite_url, capsys) -> None:
    assert run(["report", "x", "--format", "html", "--db", sqlite_url]) == 2


def test_x_axis_option(sqlite_url, fake_clock, tmp_path, capsys) -> None:
    _study(sqlite_url, fake_clock)
    plots = tmp_path / "plots"
    assert run(["report", "ra_mla_reciprocal", "--plot", str(plots), "--x-axis", "iteration",
                "--format", "json", "--db", sqlite_url]) == 0
    assert (plots / "curves.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert run(["report", "ra_mla_reciprocal", "--x-axis", "seconds", "--db", sqlite_url]) == 2
