"""The attempt files' schemas (workers/train/artifacts.py): one TypedDict per file, the
writers' helpers refuse keys the schema lacks, the readers return a record or None."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from workers.train import artifacts
from workers.train.sinks import JsonlSink


def test_result_keys_are_the_typed_schema() -> None:
    assert artifacts.RESULT_KEYS == tuple(artifacts.Result.__annotations__)
    assert {"status", "error_type", "best_val_loss", "mfu"} <= set(artifacts.RESULT_KEYS)
    result = artifacts.new_result(seed=3)
    assert set(result) == set(artifacts.RESULT_KEYS)
    assert result["status"] == artifacts.STATUS_FAILED and result["seed"] == 3
    assert all(v is None for k, v in result.items() if k not in ("status", "seed"))


def test_update_result_refuses_unknown_keys_and_statuses() -> None:
    result = artifacts.new_result()
    with pytest.raises(KeyError, match="best_val_los"):
        artifacts.update_result(result, best_val_los=1.0)
    with pytest.raises(ValueError, match="'done'"):
        artifacts.update_result(result, status="done")
    artifacts.update_result(result, status=artifacts.STATUS_OOM, iters=5)
    assert (result["status"], result["iters"]) == ("oom", 5)
    with pytest.raises(KeyError):
        artifacts.new_result(nonsense=1)


def test_read_result(tmp_path: Path) -> None:
    assert artifacts.read_result(tmp_path) is None                        # missing
    (tmp_path / artifacts.RESULT).write_text('{"status": "succ')
    assert artifacts.read_result(tmp_path) is None                        # half-written
    (tmp_path / artifacts.RESULT).write_text('{"status": "exploded"}')
    assert artifacts.read_result(tmp_path) is None                        # not a status
    (tmp_path / artifacts.RESULT).write_text('["succeeded"]')
    assert artifacts.read_result(tmp_path) is None                        # not an object
    artifacts.write_json_atomic(tmp_path / artifacts.RESULT,
                                {"status": "diverged", "iters": 7, "extra": "kept"})
    result = artifacts.read_result(tmp_path)
    assert result is not None and result["status"] == "diverged" and result["iters"] == 7
    assert result["mfu"] is None and dict(result)["extra"] == "kept"  # older/newer writers


def test_read_progress(tmp_path: Path) -> None:
    assert artifacts.read_progress(tmp_path) is None
    (tmp_path / artifacts.PROGRESS).write_text("[1, 2]")
    assert artifacts.read_progress(tmp_path) is None
    artifacts.write_json_atomic(tmp_path / artifacts.PROGRESS, {"phase": "training", "iter": 4})
    assert artifacts.read_progress(tmp_path) == {"phase": "training", "iter": 4}


@pytest.mark.parametrize("data", [
    None, [], "x", {"values": {}}, {"iter": "3", "values": {}}, {"iter": True, "values": {}},
    {"iter": 3, "values": [1.0]},
])
def test_parse_metric_record_refuses_what_is_not_a_record(data: object) -> None:
    assert artifacts.parse_metric_record(data) is None


def test_parse_metric_record_turns_non_numbers_into_none() -> None:
    record = artifacts.parse_metric_record(
        {"iter": 3, "values": {"loss": 2, "lr": "high", "flag": True, "nan": float("nan")}})
    assert record == {"iter": 3, "tokens": 0, "train_s": 0.0,
                      "values": {"loss": 2.0, "lr": None, "flag": None, "nan": None}}


def test_the_jsonl_sink_writes_records_the_reader_parses(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / artifacts.METRICS)
    sink.log(10, 1280, 1.23456, {"loss": 3.5, "val_loss": math.inf, "best_val_loss": None})
    sink.close()
    line = (tmp_path / artifacts.METRICS).read_text().splitlines()[0]
    assert artifacts.parse_metric_record(json.loads(line)) == {
        "iter": 10, "tokens": 1280, "train_s": 1.2346,
        "values": {"loss": 3.5, "val_loss": None, "best_val_loss": None}}


def test_the_queue_side_spells_the_same_keys() -> None:
    """orchestrator.queue may not import workers (layer rule), so it names the keys it copies
    into columns itself; they must be keys of the schema, with the schema's number types."""
    from orchestrator.cli.resume_cmd import _RESULT_SUMMARY
    from orchestrator.queue.repo import PROGRESS_KEYS, RESULT_TO_COLUMN

    progress = get_type_hints(artifacts.Progress)
    assert set(PROGRESS_KEYS) <= set(progress)
    for key, kind in PROGRESS_KEYS.items():
        assert kind is progress[key] or kind in get_args(progress[key]), (key, progress[key])
    assert set(RESULT_TO_COLUMN) <= set(artifacts.RESULT_KEYS)
    assert set(RESULT_TO_COLUMN.values()) <= set(PROGRESS_KEYS)
    assert set(_RESULT_SUMMARY) <= set(artifacts.RESULT_KEYS)
