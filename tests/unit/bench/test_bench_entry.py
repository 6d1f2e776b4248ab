"""`python -m bench`: names, --quick, arguments after `--`, the run log; the memory benchmark
end to end on two variants (real forked children, real torch on CPU)."""

from __future__ import annotations

import json
import sys

import pytest

import bench.__main__ as entry


def test_commands_for_each_benchmark():
    assert entry.command("memory", True, ["--sizes", "tiny"]) == [
        sys.executable, "-m", "bench.memory_bench", "--quick", "--sizes", "tiny"]
    assert entry.command("status", False, []) == [sys.executable, "-m", "bench.status_bench"]
    assert set(entry.BENCHES) == {"cli", "train", "mechanisms", "memory", "queue", "status", "report",
                                  "overhead", "gpu", "plan"}


def test_unknown_benchmark_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        entry.main(["trian"])
    assert e.value.code == 2 and "unknown benchmark trian" in capsys.readouterr().err


@pytest.mark.slow
def test_memory_bench_through_the_entry_point(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(entry, "RESULTS", tmp_path)
    out = tmp_path / "memory.json"
    rc = entry.main(["memory", "--quick", "--", "--variants", "baseline,unified_ra(free)", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "== memory: python -m bench.memory_bench --quick --variants" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [r["label"] for r in rows] == ["baseline", "unified_ra(free)"]
    assert all(r["peak_mb"] > r["param_mb"] > 0 for r in rows)
    assert rows[0]["ratio_vs_baseline"] == 1.0
    (log,) = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log["bench"] == "memory" and log["exit"] == 0 and len(log["load_avg_before"]) == 3


@pytest.mark.slow
def test_cli_bench_end_to_end_on_a_small_sqlite_database(tmp_path):
    """`python -m bench.cli_bench` on 20 runs / 2,000 metric rows, one round: every command
    ran as a fresh process (cold and cached status included), the table and JSON came out."""
    import subprocess

    out = tmp_path / "cli.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli_bench", "--runs", "20", "--metrics", "2000",
         "--rounds", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                            "RECIP_TEST_PG_URL": ""})
    assert proc.returncode in (0, 1), proc.stderr[-2000:]      # 1 = a target missed
    assert "in one warm process (ms)" in proc.stdout, proc.stdout
    (row,) = json.loads(out.read_text())["results"]
    assert row["backend"] == "sqlite" and row["metric_rows"] > 0
    for name in ("status", "status_cold", "status_json", "report", "report_json",
                 "empty_status_json"):
        assert row["fresh_ms"][name] > 0 and row["cpu_ms"][name] > 0, name
