"""metrics.jsonl tailing (half-written lines wait) and thinning (bounded rows per name,
every eval kept, the last train point kept)."""

from __future__ import annotations

import json
from pathlib import Path

from workers.metrics_tail import JsonlTail, MetricThinner


def test_tail_reads_only_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = JsonlTail(path)
    assert tail.read() == []
    with open(path, "w") as f:
        f.write(json.dumps({"iter": 1, "values": {"loss": 1.0}}) + "\n" + '{"iter": 2, "val')
    assert [r["iter"] for r in tail.read()] == [1]
    assert tail.read() == []
    with open(path, "a") as f:
        f.write('ues": {"loss": 2.0}}\nnot json\n')
    assert [r["iter"] for r in tail.read()] == [2]


def test_thinning_bounds_train_rows_and_keeps_evals_and_the_last_point() -> None:
    records = 20_000
    thinner = MetricThinner(1000, lambda: float(records))
    kept: list[tuple[str, int, float]] = []
    for i in range(records):
        kept += thinner.rows({"iter": i * 10, "values": {"loss": 1.0 / (i + 1), "lr": 0.1}})
        if i % 500 == 0:
            kept += thinner.rows({"iter": i * 10, "values": {"val_loss": 2.0, "train_loss": 1.9}})
    kept += thinner.flush()
    loss = [step for name, step, _ in kept if name == "loss"]
    assert 1000 <= len(loss) <= 1001
    assert loss[0] == 0 and loss[-1] == (records - 1) * 10
    assert len([1 for name, _, _ in kept if name == "val_loss"]) == records // 500
    assert thinner.rows({"iter": 5, "values": {"loss": float("nan")}}) == []


def test_short_runs_keep_everything() -> None:
    thinner = MetricThinner(1000, lambda: None)
    rows = [r for i in range(50) for r in thinner.rows({"iter": i, "values": {"loss": 1.0}})]
    assert len(rows) == 50 and thinner.flush() == []
