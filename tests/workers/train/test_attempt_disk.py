"""`run_attempt` end to end on hostile disks: a previous attempt's unreadable checkpoint falls
back to the one before it (never copied into the new attempt), and a real full filesystem
ends the attempt `disk_full` naming the path and the free space, with no temp file left."""

from __future__ import annotations

import json

from tests.small_fs import small_filesystem
from tests.workers.train.conftest import run_config
from tests.workers.train.test_run_attempt import _attempt, _write
from workers.train import artifacts


def test_a_corrupt_previous_checkpoint_falls_back_to_the_one_before(kjv_byte, data_root,
                                                                    tmp_path):
    first = tmp_path / "attempt1"
    cfg = run_config(budget={"iters": 30})
    r = _attempt(data_root, _write(first / "config.json", cfg), first)
    assert r.returncode == 0, r.stdout[-2000:]
    assert (first / artifacts.PREVIOUS_CHECKPOINT).is_file()
    junk = b"PK\x03\x04 torn"
    (first / artifacts.CHECKPOINT).write_bytes(junk)
    kept = (first / artifacts.PREVIOUS_CHECKPOINT).read_bytes()

    second = tmp_path / "attempt2"
    r = _attempt(data_root, _write(second / "config.json", cfg), second, "--resume-from",
                 str(first))
    assert r.returncode == 0, r.stdout[-2000:]
    result = json.loads((second / artifacts.RESULT).read_text())
    fallback = result["checkpoint_fallback"]
    assert fallback["fresh_start"] is False
    assert fallback["resumed_from"] == str(second / artifacts.CHECKPOINT)
    assert [s["path"] for s in fallback["skipped"]] == [str(first / artifacts.CHECKPOINT)]
    assert result["resumed_from_iter"] == 20 and result["iters"] == 30
    # the previous attempt's files are never modified
    assert (first / artifacts.CHECKPOINT).read_bytes() == junk
    assert (first / artifacts.PREVIOUS_CHECKPOINT).read_bytes() == kept


def test_a_full_disk_ends_the_attempt_disk_full_without_temp_files(kjv_byte, data_root,
                                                                  tmp_path):
    with small_filesystem(tmp_path / "fs", 160 * 1024) as fs:
        out = fs / "attempt1"
        cfg = _write(out / "config.json", run_config(budget={"iters": 30}))
        r = _attempt(data_root, cfg, out)
        assert r.returncode == artifacts.EXIT_FAILED, r.stdout[-3000:]
        result = json.loads((out / artifacts.RESULT).read_text())
        assert (result["status"], result["error_type"]) == (artifacts.STATUS_DISK_FULL,
                                                            "DiskFull")
        message = result["error_message"]
        assert message.startswith(f"disk full writing {out}")
        assert " free on its filesystem)" in message and "\n" not in message
        assert not [p.name for p in out.iterdir() if ".tmp." in p.name or ".copy." in p.name]
