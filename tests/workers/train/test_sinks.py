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


def test_wandb_sink_starts_off_the_callers_path_and_keeps_record_order(tmp_path, monkeypatch):
    """wandb.init runs in the sink's thread: the constructor returns while init is still
    blocked, records logged meanwhile reach the run in order, close finishes it."""
    import sys
    import threading
    import types

    release = threading.Event()
    calls: list[tuple] = []

    class Run:
        def log(self, values, step):
            calls.append(("log", step, values["loss"], threading.current_thread().name))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs["id"]))
        assert release.wait(10)
        return Run()

    fake = types.SimpleNamespace(init=init, Settings=lambda **k: k)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    sink = WandbSink(run_id="00000000000000aa", name="s/V0/seed1/attempt2", study="s", step="V0",
                     directory=tmp_path)
    sink.log(1, 10, 0.1, {"loss": 3.0})  # init still blocked: the caller is not
    sink.log(2, 20, 0.2, {"loss": 2.0})
    assert not any(c[0] == "log" for c in calls)
    release.set()
    sink.close()
    assert calls == [("init", "00000000000000aa"),
                     ("log", 1, 3.0, "wandb-sink"), ("log", 2, 2.0, "wandb-sink"), ("finish",)]


def test_wandb_sink_init_failure_surfaces_on_the_next_log(tmp_path, monkeypatch):
    import sys
    import types

    def init(**kwargs):
        raise OSError("no space for the wandb dir")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init,
                                                                    Settings=lambda **k: k))
    sink = WandbSink(run_id="00000000000000ab", name="s/V0/seed1/attempt1", study="s", step="V0",
                     directory=tmp_path)
    sink._thread.join(10)
    with pytest.raises(RuntimeError, match="no space for the wandb dir"):
        sink.log(1, 10, 0.1, {"loss": 1.0})
    sink.close()
