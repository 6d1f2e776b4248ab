"""Checkpoints keep the previous good one; an unreadable newest falls back to it; a full disk
(a real tmpfs) leaves the last good checkpoint and no temp file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.small_fs import small_filesystem
from tests.workers.train.test_checkpoint import _setup, _step
from workers.train.checkpoint import (
    pick_readable,
    previous_path,
    read_checkpoint,
    save_checkpoint,
)
from workers.train.disk import find_disk_full, remove_temp_files


def _save(path: Path, objs, it: int) -> None:
    model, opt, batches, clock = objs
    save_checkpoint(path, model=model, optimizer=opt, batches=batches, clock=clock,
                    loop={"it": it})


def test_a_new_checkpoint_keeps_the_previous_one(token_dir: Path, tmp_path: Path) -> None:
    objs = _setup(token_dir)
    (tmp_path / "c").mkdir()
    path = tmp_path / "c" / "checkpoint.pt"
    _save(path, objs, 1)
    assert not previous_path(path).exists()
    _step(*objs[:3])
    _save(path, objs, 2)
    assert previous_path(path).name == "checkpoint.prev.pt"
    assert read_checkpoint(path)["loop"]["it"] == 2
    assert read_checkpoint(previous_path(path))["loop"]["it"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.prev.pt",
                                                             "checkpoint.pt"]


def test_an_unreadable_newest_falls_back_to_the_previous(token_dir: Path, tmp_path: Path) -> None:
    objs = _setup(token_dir)
    path = tmp_path / "checkpoint.pt"
    _save(path, objs, 1)
    _save(path, objs, 2)
    path.write_bytes(path.read_bytes()[:100])  # torn
    chosen, ckpt, skipped = pick_readable([path, previous_path(path)])
    assert chosen == previous_path(path) and ckpt is not None and ckpt["loop"]["it"] == 1
    assert [s["path"] for s in skipped] == [str(path)]
    assert "cannot be read" in skipped[0]["error"] and "--fresh STEP" in skipped[0]["error"]
    previous_path(path).write_bytes(b"junk")
    assert pick_readable([path, previous_path(path)])[:2] == (None, None)
    assert pick_readable([tmp_path / "absent.pt"]) == (None, None, [])


def test_a_full_disk_keeps_the_last_good_checkpoint_and_no_temp_file(
        token_dir: Path, tmp_path: Path) -> None:
    objs = _setup(token_dir)
    probe = tmp_path / "probe.pt"
    _save(probe, objs, 0)
    size = probe.stat().st_size
    with small_filesystem(tmp_path / "fs", int(size * 1.5)) as fs:
        path = fs / "checkpoint.pt"
        _save(path, objs, 1)
        good = path.read_bytes()
        with pytest.raises(Exception) as e:  # torch wraps the OSError in a RuntimeError
            _save(path, objs, 2)
        full = find_disk_full(e.value)
        assert full is not None and full.errno in (28, 122)
        assert sorted(p.name for p in fs.iterdir()) == ["checkpoint.pt"]
        assert path.read_bytes() == good and read_checkpoint(path)["loop"]["it"] == 1


def test_remove_temp_files_removes_only_temp_files(tmp_path: Path) -> None:
    for name in (".checkpoint.pt.tmp.123", ".checkpoint.pt.copy.9", ".result.json.tmp.5",
                 "checkpoint.pt", "metrics.jsonl"):
        (tmp_path / name).write_text("x")
    removed = remove_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".checkpoint.pt.copy.9", ".checkpoint.pt.tmp.123",
                                               ".result.json.tmp.5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.jsonl"]
