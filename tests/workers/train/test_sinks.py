"""Metric sinks: the W&B sink offline (no login, deterministic id per attempt), null, tee."""

from __future__ import annotations

import json

import pytest

from workers.train.sinks import JsonlSink, NullSink, TeeSink, WandbSink, wandb_run_id


def test_wandb_run_id_is_deterministic_per_attempt():
    a = wandb_run_id("study", "V1", 2, 1)
    assert a == wandb_run_id("study", "V1", 2, 1) and len(a) == 16
    assert len({a, wandb_run_id("study", "V1", 2, 2), wandb_run_id("study", "V1", 3, 1),
                wandb_run_id("study", "V2", 2, 1), wandb_run_id("other", "V1", 2, 1)}) == 5


def test_tee_and_null(tmp_path):
    sink = TeeSink(JsonlSink(tmp_path / "m.jsonl"), NullSink())
    sink.log(1, 10, 0.5, {"loss": 3.0})
    sink.close()
    assert json.loads((tmp_path / "m.jsonl").read_text())["values"] == {"loss": 3.0}


@pytest.mark.slow
def test_wandb_sink_offline_writes_a_local_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    sink = WandbSink(study="s", step="V0", seed=1, attempt=3, mode="offline", directory=tmp_path,
                     config={"a": 1}, tags=["step:V0", "seed:1"])
    sink.log(10, 1280, 1.0, {"loss": 2.5})
    sink.close()
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{wandb_run_id('s', 'V0', 1, 3)}"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
