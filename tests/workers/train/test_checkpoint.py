"""Atomic checkpoints: full round trip (weights_only), atomic replace, corrupt files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import GPTConfig
from models.gpt2 import GPT
from workers.train.budget import Clock, FakeTime
from workers.train.checkpoint import (
    CheckpointCorrupt,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from workers.train.data import Batches
from workers.train.optim import AdamWSPAM

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=320)


def _setup(token_dir: Path, seed: int = 0):
    torch.manual_seed(seed)
    model = GPT(CFG)
    opt = AdamWSPAM(model.optim_groups(0.1), lr=1e-3, spike_clip_theta=50.0, spike_z=2.0, reset_interval=4)
    batches = Batches(token_dir, CFG.block_size, 2, seed=1)
    clock = Clock(time_fn=FakeTime())
    return model, opt, batches, clock


def _step(model, opt, batches):
    x, y = batches.next()
    _, loss = model(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def test_roundtrip_continues_exactly(token_dir: Path, tmp_path: Path):
    model, opt, batches, clock = _setup(token_dir)
    for _ in range(3):
        _step(model, opt, batches)
    clock.time_fn.advance(12.5)
    random.random(), np.random.rand()
    (tmp_path / "ckpt").mkdir()
    path = tmp_path / "ckpt" / "checkpoint.pt"
    save_checkpoint(path, model=model, optimizer=opt, batches=batches, clock=clock,
                    loop={"it": 3, "tokens": 96, "best_val_loss": None})
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]   # no temp file left
    expected = [_step(model, opt, batches) for _ in range(3)]
    py, npy, th = random.random(), float(np.random.rand()), torch.rand(1)

    model2, opt2, batches2, clock2 = _setup(token_dir, seed=99)          # different init
    loop = load_checkpoint(path, model=model2, optimizer=opt2, batches=batches2, clock=clock2)
    assert loop == {"it": 3, "tokens": 96, "best_val_loss": None}
    assert clock2.state_dict()["wall_s"] == pytest.approx(12.5)
    assert opt2.counter == 3
    assert (random.random(), float(np.random.rand())) == (py, npy) and torch.equal(torch.rand(1), th)
    assert [_step(model2, opt2, batches2) for _ in range(3)] == expected


def test_checkpoint_loads_with_weights_only(token_dir: Path, tmp_path: Path):
    model, opt, batches, clock = _setup(token_dir)
    _step(model, opt, batches)
    path = tmp_path / "c.pt"
    save_checkpoint(path, model=model, optimizer=opt, batches=batches, clock=clock, loop={"it": 1})
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format"] == 1 and ckpt["loop"]["it"] == 1
    assert ckpt["optimizer"]["spam"]["counter"] == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_a_checkpoint"])
def test_corrupt_checkpoint_raises_a_clear_error(token_dir: Path, tmp_path: Path, damage: str):
    model, opt, batches, clock = _setup(token_dir)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model=model, optimizer=opt, batches=batches, clock=clock, loop={"it": 0})
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a zip" * 50)
    else:
        torch.save({"hello": torch.zeros(1)}, path)
    with pytest.raises(CheckpointCorrupt, match=r"checkpoint\.pt.*--fresh STEP"):
        read_checkpoint(path)


def test_checkpoint_of_another_model_shape_is_refused(token_dir: Path, tmp_path: Path):
    model, opt, batches, clock = _setup(token_dir)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model=model, optimizer=opt, batches=batches, clock=clock, loop={"it": 0})
    other = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=320))
    opt2 = AdamWSPAM(other.optim_groups(0.1), lr=1e-3)
    with pytest.raises(CheckpointCorrupt, match="does not fit this run"):
        load_checkpoint(path, model=other, optimizer=opt2, batches=batches, clock=clock)
