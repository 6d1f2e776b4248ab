"""Learning-rate schedule and coupling warmup. mechanisms.md §1.3, §9, §19 decision 8.

lr(it, progress):
  it < warmup            lr * it / warmup                     (exactly 0 at it = 0, §1.3)
  horizon "max_iters"    cosine lr -> min_lr over it in [warmup, max_iters], then min_lr
                         (upstream: a time-budgeted run never anneals, §17 #24)
  horizon "budget"       cosine lr -> min_lr over the budget progress left after the
                         warmup: (p - p_w) / (1 - p_w), p = max(it/max_iters,
                         train_s/max_train_s, tokens/max_tokens), p_w = p when the warmup
                         ended (the trainer records it; default warmup/max_iters). So the
                         peak is exactly lr at it = warmup (§1.3: warm up to lr, then
                         cosine from lr; decision 8 changes only the horizon) and a time
                         budget still ends at min_lr
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LRSchedule:
    lr: float
    min_lr: float
    warmup: int
    horizon: str = "budget"      # "budget" | "max_iters"
    max_iters: int = 10000

    def __post_init__(self):
        assert self.horizon in ("budget", "max_iters"), self.horizon
        assert 0 <= self.min_lr <= self.lr

    def __call__(self, it: int, progress: float, warmup_progress: float | None = None) -> float:
        if it < self.warmup:
            return self.lr * it / self.warmup
        if self.horizon == "max_iters":
            if it >= self.max_iters:
                return self.min_lr
            ratio = (it - self.warmup) / max(1, self.max_iters - self.warmup)
            return self._cosine(ratio)
        pw = self.warmup / self.max_iters if warmup_progress is None else warmup_progress
        pw = min(max(pw, 0.0), 1.0)
        if pw >= 1.0:
            return self.lr if progress < 1.0 else self.min_lr
        return self._cosine(min(1.0, max(0.0, (progress - pw) / (1.0 - pw))))

    def _cosine(self, ratio: float) -> float:
        coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
        return self.min_lr + coeff * (self.lr - self.min_lr)


@dataclass(frozen=True)
class CouplingWarmup:
    """cs in [0, 1] set before each forward (§9): linear over an explicit number of steps,
    or over a fraction of the planned run (budget progress), or always 1.0 (fraction 0)."""

    fraction: float = 0.0
    steps: int | None = None

    def __call__(self, it: int, progress: float) -> float:
        if self.steps is not None:
            return 1.0 if self.steps == 0 else min(1.0, it / self.steps)
        if self.fraction <= 0.0:
            return 1.0
        return min(1.0, max(0.0, progress) / self.fraction)
