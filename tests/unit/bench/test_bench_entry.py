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
