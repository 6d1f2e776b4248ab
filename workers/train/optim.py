"""AdamW and AdamWSPAM: one optimizer class, five switchable parts, one counter.

mechanisms.md §14.1 and §19 decision 12. Per optimizer step, after backward:
  1. element clip (spike_clip_theta): g := clamp(g, ±sqrt(theta * (v + 1e-12))), v the raw
     exp_avg_sq; skipped for a parameter with no state yet (first step)
  2. spike detection (spike_z): n = global grad norm after 1, before 3; n is stored (if
     finite; the last `norm_window` = 100 are kept, n included) and once `min_norms` = 10
     norms are stored INCLUDING n, z = (n - mean(prev))/std(prev) over the stored norms
     before n (population std; up to 99), as §14.1 and upstream; z > spike_z -> soft reset:
     exp_avg *= 0.5, exp_avg_sq *= 0.9. `spike_test_previous` = the project's earlier rule
     (the test needs 10 PREVIOUS norms, window of 100 previous), which misses a spike at
     the 10th step
  3. global grad-norm clip (grad_clip; 0 = off)
  4. periodic reset (reset_interval): the ONE counter advances by 1 per step (by 2 with
     `legacy_double_count`, upstream's bug: resets every interval/2 steps); when it hits a
     multiple of reset_interval, exp_avg := 0 and exp_avg_sq := 0 (max_exp_avg_sq and step
     kept) and a re-warm window of rewarm_steps opens
  5. LR re-warm (rewarm_steps): inside the window the scheduled LR is multiplied by
     max(1e-3, 0.5 * (1 - cos(pi * t))), t the fraction of the window elapsed
then torch AdamW's step. The scheduled LR in param_groups is restored after the step.
`name: adamw` is this class with parts 1, 2, 4, 5 off (plain AdamW + global clip).
A non-finite grad norm skips the update (the trainer then stops the run as diverged).
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch


# torch.optim imports torch._dynamo (sympy, fx, distributed...: ~0.8 s of a cold attempt's
# start on a quiet 2-core box, ~2 s under load) on the first call of Optimizer.add_param_group,
# zero_grad, state_dict, load_state_dict (`torch._disable_dynamo`) and of every step
# (`_use_grad_for_differentiable`), only so that dynamo can skip or break the graph around
# them. While dynamo has not been imported nothing is being compiled, and those wrappers
# reduce to the undecorated functions below (step: under no_grad, which ours is), so
# AdamWSPAM calls them directly then; once torch._dynamo is loaded (torch.compile, a kv_prune
# model), or where this torch lays its functions out differently (no `__wrapped__`), it calls
# torch's decorated methods as before.
def _undecorated(fn: Callable[..., Any]) -> Callable[..., Any] | None:
    inner = inspect.unwrap(fn)
    return inner if inner is not fn else None


_ADD_PARAM_GROUP = _undecorated(torch.optim.Optimizer.add_param_group)
_ZERO_GRAD = _undecorated(torch.optim.Optimizer.zero_grad)
_STATE_DICT = _undecorated(torch.optim.Optimizer.state_dict)
_LOAD_STATE_DICT = _undecorated(torch.optim.Optimizer.load_state_dict)
_ADAM_STEP = _undecorated(torch.optim.AdamW.step)


def _dynamo_free(fn: Callable[..., Any] | None) -> bool:
    return fn is not None and "torch._dynamo" not in sys.modules


class AdamWSPAM(torch.optim.AdamW):

    def __init__(self, params: Iterable[Any], lr: float = 6e-4, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = True, fused: bool | None = None, *,
                 grad_clip: float = 1.0, spike_clip_theta: float | None = None,
                 spike_z: float | None = None, reset_interval: int | None = None,
                 rewarm_steps: int | None = None, legacy_double_count: bool = False,
                 spike_test_previous: bool = False, norm_window: int = 100, min_norms: int = 10):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, fused=fused)
        self.grad_clip = grad_clip
        self.spike_clip_theta = spike_clip_theta or None
        self.spike_z = spike_z or None
        self.reset_interval = reset_interval or None
        self.rewarm_steps = rewarm_steps or None
        self.legacy_double_count = legacy_double_count
        self.spike_test_previous = spike_test_previous
        self.norm_window = norm_window
        self.min_norms = min_norms
        # everything below goes into state_dict()["spam"]
        self.counter = 0            # the one step counter (x2 per step under legacy_double_count)
        self.warmup_until = 0       # counter value where the re-warm window ends
        self.norms: list[float] = []
        self.spikes = 0             # soft resets triggered by a grad-norm spike
        self.resets = 0             # periodic resets
        self.clipped = 0            # gradient entries clipped by part 1
        self.last_clip_frac = 0.0   # fraction of gradient entries part 1 clipped at the last step
        self.skipped = 0            # updates skipped for a non-finite grad norm
        self.last_grad_norm = float("nan")
        self.last_lr_factor = 1.0

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if _dynamo_free(_ADD_PARAM_GROUP):
            _ADD_PARAM_GROUP(self, param_group)  # type: ignore[misc]
        else:
            super().add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if _dynamo_free(_ZERO_GRAD):
            _ZERO_GRAD(self, set_to_none)  # type: ignore[misc]
        else:
            super().zero_grad(set_to_none)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, "AdamWSPAM does not take a closure"
        params = self._params()

        # 1. spike-aware element clip, bounded by the raw second moment
        self.last_clip_frac = 0.0
        if self.spike_clip_theta is not None:
            n_clipped = torch.zeros((), dtype=torch.long, device=params[0].device) if params else None
            n_total = sum(p.numel() for p in params)
            for p in params:
                st = self.state.get(p)
                if not st or "exp_avg_sq" not in st:
                    continue
                thr = (self.spike_clip_theta * (st["exp_avg_sq"] + 1e-12)).sqrt()
                n_clipped += (p.grad.abs() > thr).sum()
                torch.clamp_(p.grad, min=-thr, max=thr)
            if n_clipped is not None:
                n = int(n_clipped)
                self.clipped += n
                self.last_clip_frac = n / max(1, n_total)

        # 2. + 3. global norm (after 1), spike test against the previous norms, global clip
        max_norm = self.grad_clip if self.grad_clip and self.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
        self.last_grad_norm = norm
        finite = math.isfinite(norm)
        if self.spike_test_previous:   # the project's earlier rule: 10 previous norms needed
            enough, prev = len(self.norms) >= self.min_norms, self.norms
        else:                          # §14.1: 10 stored including this one, window 99 + this
            prev = self.norms[-(self.norm_window - 1):] if self.norm_window > 1 else []
            enough = len(prev) + 1 >= self.min_norms
        if self.spike_z is not None and finite and enough and prev:
            mean = sum(prev) / len(prev)
            std = math.sqrt(sum((x - mean) ** 2 for x in prev) / len(prev))
            if std > 0 and (norm - mean) / std > self.spike_z:
                self._soft_reset()
        if finite:
            self.norms = (self.norms + [norm])[-self.norm_window:]

        # 4. one counter; periodic reset every reset_interval optimizer steps
        self.counter += 2 if self.legacy_double_count else 1
        if self.reset_interval is not None and self.counter % self.reset_interval == 0:
            self._hard_reset()

        # 5. post-reset LR re-warm, on top of the scheduled LR
        factor = 1.0
        if self.rewarm_steps is not None and self.counter < self.warmup_until:
            t = (self.rewarm_steps - (self.warmup_until - self.counter)) / self.rewarm_steps
            factor = max(1e-3, 0.5 * (1.0 - math.cos(math.pi * t)))
        self.last_lr_factor = factor

        if not finite:
            self.skipped += 1
            return None
        scheduled = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            g["lr"] = g["lr"] * factor
        try:
            if _dynamo_free(_ADAM_STEP):
                _ADAM_STEP(self)  # type: ignore[misc]  # we are under no_grad, as its wrapper sets
            else:
                super().step()
        finally:
            for g, lr in zip(self.param_groups, scheduled, strict=True):
                g["lr"] = lr
        return None

    def _soft_reset(self):
        for st in self.state.values():
            if "exp_avg" in st:
                st["exp_avg"].mul_(0.5)
                st["exp_avg_sq"].mul_(0.9)
        self.spikes += 1

    def _hard_reset(self):
        for st in self.state.values():
            if "exp_avg" in st:
                st["exp_avg"].zero_()
                st["exp_avg_sq"].zero_()
        self.resets += 1
        if self.rewarm_steps is not None:
            self.warmup_until = self.counter + self.rewarm_steps

    def spam_stats(self) -> dict[str, float]:
        return {"spikes": self.spikes, "resets": self.resets, "clipped": self.clipped,
                "skipped": self.skipped, "counter": self.counter, "lr_factor": self.last_lr_factor,
                "clip_frac": self.last_clip_frac}

    # plain JSON-able values next to torch's state, so torch.load(weights_only=True) works
    def state_dict(self):
        sd = _STATE_DICT(self) if _dynamo_free(_STATE_DICT) else super().state_dict()  # type: ignore[misc]
        sd["spam"] = {"counter": self.counter, "warmup_until": self.warmup_until,
                      "norms": list(self.norms), "spikes": self.spikes, "resets": self.resets,
                      "clipped": self.clipped, "skipped": self.skipped}
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        spam = state_dict.pop("spam", None)
        if _dynamo_free(_LOAD_STATE_DICT):
            _LOAD_STATE_DICT(self, state_dict)  # type: ignore[misc]
        else:
            super().load_state_dict(state_dict)
        if spam is not None:
            self.counter = int(spam["counter"])
            self.warmup_until = int(spam["warmup_until"])
            self.norms = [float(x) for x in spam["norms"]]
            self.spikes, self.resets = int(spam["spikes"]), int(spam["resets"])
            self.clipped, self.skipped = int(spam["clipped"]), int(spam["skipped"])


def build_optimizer(model, cfg, fused: bool = False) -> AdamWSPAM:
    """The optimizer of a TrainConfig: groups from model.optim_groups (every parameter)."""
    o, t = cfg.optimizer, cfg.train
    spam = o.name == "adamwspam"
    return AdamWSPAM(
        model.optim_groups(t.weight_decay), lr=t.lr, betas=tuple(o.betas), eps=o.eps,
        amsgrad=o.amsgrad, fused=True if fused else None, grad_clip=t.grad_clip,
        spike_clip_theta=o.spam.spike_clip_theta if spam else None,
        spike_z=o.spam.spike_z if spam else None,
        reset_interval=o.spam.reset_interval if spam else None,
        rewarm_steps=o.spam.rewarm_steps if spam else None,
        legacy_double_count=o.spam.legacy_double_count if spam else False,
        spike_test_previous=o.spam.spike_test_previous if spam else False,
    )
