"""Token batches: nanoGPT shapes, seeded determinism, data position in the state."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.train.data import Batches


def test_batch_shapes_and_next_token_targets(tmp_path: Path):
    np.arange(5000, dtype=np.uint16).tofile(tmp_path / "train.bin")   # token i at offset i
    np.arange(500, dtype=np.uint16).tofile(tmp_path / "val.bin")
    b = Batches(tmp_path, block_size=16, batch_size=4, seed=1)
    x, y = b.next()
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=False):
        i = row_x[0]
        assert row_x == list(range(i, i + 16)) and row_y == list(range(i + 1, i + 17))
        assert 0 <= i <= 5000 - 16 - 1


def test_same_seed_same_batches_other_seed_differs(token_dir: Path):
    a = [Batches(token_dir, 16, 4, seed=7).next()[0] for _ in range(1)]
    b1, b2 = Batches(token_dir, 16, 4, seed=7), Batches(token_dir, 16, 4, seed=8)
    assert torch.equal(a[0], b1.next()[0])
    assert not torch.equal(a[0], b2.next()[0])


def test_state_restores_the_data_position(token_dir: Path):
    b = Batches(token_dir, 16, 4, seed=3)
    for _ in range(5):
        b.next()
    buf = io.BytesIO()
    torch.save(b.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    expected = [b.next()[0] for _ in range(3)]
    c = Batches(token_dir, 16, 4, seed=3)
    c.load_state_dict(state)
    assert c.drawn == 5
    assert all(torch.equal(e, c.next()[0]) for e in expected)


def test_eval_batches_are_fixed_and_do_not_move_training(token_dir: Path):
    b = Batches(token_dir, 16, 4, seed=3)
    first = [x for x, _ in b.eval_batches("val", 3)]
    b.next()
    again = [x for x, _ in b.eval_batches("val", 3)]
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=False))
    fresh = Batches(token_dir, 16, 4, seed=3)
    fresh.next()
    _ = list(b.eval_batches("train", 2)), b.sample("val")
    assert torch.equal(b.next()[0], fresh.next()[0])


def test_too_short_split_is_a_clear_error(tmp_path: Path):
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(10, dtype=np.uint16).tofile(tmp_path / "val.bin")
    with pytest.raises(ValueError, match="val.bin has 10 tokens"):
        Batches(tmp_path, 16, 4, seed=1)
