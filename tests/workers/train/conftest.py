"""Fixtures for the trainer tests: small token files, a tiny model config, a run config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workers.data.prepare import DatasetInfo, prepare

TINY_MODEL = {"preset": "tiny", "n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 32}


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recip-data")


@pytest.fixture(scope="session")
def kjv_byte(data_root: Path) -> DatasetInfo:
    """The real KJV corpus with the byte tokenizer, prepared once per session."""
    return prepare("kjv", "byte", data_root, progress=False)


@pytest.fixture
def token_dir(tmp_path: Path) -> Path:
    """A small learnable token stream: a repeating pattern over a 320-id vocabulary."""
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 256, size=97)
    stream = np.tile(pattern, 200).astype(np.uint16)
    stream[::50] = 256
    n = int(0.9 * len(stream))
    stream[:n].tofile(tmp_path / "train.bin")
    stream[n:].tofile(tmp_path / "val.bin")
    return tmp_path


def run_config(**train: Any) -> dict[str, Any]:
    """A resolved run config for a tiny CPU run on kjv/byte (wandb off)."""
    t: dict[str, Any] = {"budget": {"seconds": None, "iters": 30, "tokens": None}, "batch_size": 4,
                         "grad_accum": 1, "lr": 3e-3, "min_lr": 3e-4, "warmup": 5,
                         "eval_every": 10, "eval_batches": 2, "log_every": 5, "stats_every": 10}
    t.update(train)
    return {"study": "t", "step": "V0", "seed": 1, "model": dict(TINY_MODEL),
            "data": {"dataset": "kjv", "tokenizer": "byte"}, "train": t,
            "optimizer": {"name": "adamwspam"}, "wandb": {"mode": "disabled"}}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The test machine's 2 cores are shared by many processes; OpenMP threads that spin on
    a busy core make a tiny step 10-50x slower. One thread is steady; restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
