"""Metric sinks: the W&B sink offline (no login, the id and name it is given), null, tee."""

from __future__ import annotations

import json

import pytest

from workers.train.sinks import JsonlSink, NullSink, TeeSink, WandbSink


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
    sink = WandbSink(run_id="0123456789abcdef", name="s/V0/seed1/attempt3", study="s", step="V0",
                     mode="offline", directory=tmp_path, config={"a": 1}, tags=["step:V0", "seed:1"])
    sink.log(10, 1280, 1.0, {"loss": 2.5})
    sink.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*-0123456789abcdef"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
