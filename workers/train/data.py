"""Token batches from the uint16 memmaps of a prepared dataset (nanoGPT get_batch).

mechanisms.md §1.2: each micro-batch draws B independent uniform offsets i in
[0, len - T - 1]; x = tokens[i:i+T], y = tokens[i+1:i+T+1]. Unlike upstream the offsets
come from a seeded torch.Generator whose state (plus the count of batches drawn) is the
"data position" that goes into checkpoints: same seed = same batches, and a resumed run
draws exactly the batches the uninterrupted run would have drawn.

Eval batches come from a separate generator re-seeded at every eval, so every eval of a
run (and every run with the same seed) scores the same fixed sample of each split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class Batches:

    def __init__(self, data_dir: str | Path, block_size: int, batch_size: int, seed: int,
                 device: str | torch.device = "cpu", pin_memory: bool | None = None):
        self.data_dir = Path(data_dir)
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device)
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.lengths = {}
        for split in ("train", "val"):
            n = self._memmap(split).shape[0]
            if n < block_size + 2:
                raise ValueError(f"{self.data_dir / (split + '.bin')} has {n} tokens; "
                                 f"block_size {block_size} needs at least {block_size + 2}")
            self.lengths[split] = n
        self.gen = torch.Generator().manual_seed(seed)
        self.drawn = 0   # train batches drawn so far

    def _memmap(self, split: str) -> np.memmap:
        # re-open each call: a long-lived memmap leaks memory (nanoGPT's note)
        return np.memmap(self.data_dir / f"{split}.bin", dtype=np.uint16, mode="r")

    def _draw(self, split: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        data = self._memmap(split)
        T = self.block_size
        ix = torch.randint(self.lengths[split] - T - 1, (self.batch_size,), generator=gen)  # (B,)
        x = torch.stack([torch.from_numpy(data[i:i + T].astype(np.int64)) for i in ix.tolist()])  # (B, T)
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + T].astype(np.int64)) for i in ix.tolist()])  # (B, T)
        if self.pin_memory:
            x, y = x.pin_memory(), y.pin_memory()
        return (x.to(self.device, non_blocking=self.pin_memory),
                y.to(self.device, non_blocking=self.pin_memory))

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training micro-batch."""
        self.drawn += 1
        return self._draw("train", self.gen)

    def eval_batches(self, split: str, n: int):
        """The same `n` batches of `split` at every call (fixed eval sample)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + (1 if split == "train" else 2))
        for _ in range(n):
            yield self._draw(split, gen)

    def sample(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of `split` that does not move the training data position."""
        gen = torch.Generator().manual_seed(self.seed * 7_919 + self.drawn)
        return self._draw(split, gen)

    def state_dict(self) -> dict:
        return {"gen_state": self.gen.get_state(), "drawn": self.drawn, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        assert state["seed"] == self.seed, f"checkpoint data seed {state['seed']} != run seed {self.seed}"
        self.gen.set_state(state["gen_state"])
        self.drawn = int(state["drawn"])
