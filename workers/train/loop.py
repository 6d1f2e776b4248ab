"""The training loop: one top-to-bottom function under a Budget. design.md §4.

- one stop predicate, `budget.exhausted(it, tokens, train_s)`; the pass that finds it true
  evaluates (always a final eval), checkpoints, runs the mechanisms' post_train hooks, stops
- the Clock counts training only: paused around eval, checkpoints and post-training; with
  torch.compile the first iteration of a process is booked as compile time
- eval_s: wall seconds spent in evals and post-training evals (monotonic clock), kept across
  resumes, so the dashboard can count them in its timing
- LR (schedule.py) and the coupling scale cs (mechanisms.md §9) are set BEFORE each forward
  from the budget progress
- "iter" in every record = optimizer steps completed; eval at iter 0 is optional
- a NaN/inf loss or grad norm stops the run as `diverged` at that iteration
- `stop()` returning True (SIGTERM/SIGINT in run_attempt) finishes the current iteration,
  checkpoints, and returns status `interrupted`
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from workers.train.artifacts import Progress
from workers.train.budget import Budget, Clock
from workers.train.checkpoint import save_checkpoint
from workers.train.config import TrainConfig
from workers.train.device import DeviceSetup
from workers.train.schedule import CouplingWarmup, LRSchedule
from workers.train.sinks import MetricsSink


@dataclass
class LoopState:
    """Everything the loop needs to continue; stored as JSON-able values in checkpoints."""
    it: int = 0
    tokens: int = 0
    best_val_loss: float | None = None
    best_val_iter: int | None = None
    val_loss: float | None = None
    train_loss: float | None = None       # eval estimate on the train split
    last_loss: float | None = None        # mean train loss of the last log interval
    lr: float | None = None
    warmup_progress: float | None = None  # budget progress when the LR warmup ended (schedule.py)
    evaluated_at: int = -1
    checkpointed_at: int = -1
    eval_s: float = 0.0                   # seconds in evals + post-train evals, all attempts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class TrainResult:
    status: str                            # succeeded | diverged | interrupted
    iters: int
    tokens: int
    train_s: float
    wall_s: float
    compile_s: float
    eval_s: float                          # evals + post-train evals, outside train_s
    final_val_loss: float | None
    best_val_loss: float | None
    best_val_iter: int | None
    final_train_loss: float | None
    final_lr: float | None
    tokens_per_s: float
    effective_batch_tokens: int
    resumed_from_iter: int | None
    error_message: str | None = None
    spam: dict[str, float] = field(default_factory=dict)
    post_train: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def estimate_loss(model, batches, n_batches: int, device: DeviceSetup, splits=("train", "val")) -> dict[str, float]:
    """Mean loss over the fixed eval sample of each split, model in eval mode."""
    was_training = model.training
    model.eval()
    out = {}
    for split in splits:
        total = torch.zeros((), device=device.device)
        for x, y in batches.eval_batches(split, n_batches):
            with device.autocast():
                _, loss = model(x, y)
            total += loss.float()
        out[split] = (total / n_batches).item()
    model.train(was_training)
    return out


def grad_norms(params: dict[str, torch.nn.Parameter]) -> dict[str, float]:
    return {name: (p.grad.detach().float().norm().item() if p.grad is not None else 0.0)
            for name, p in params.items()}


def train(cfg: TrainConfig, model, optimizer, batches, clock: Clock, sink: MetricsSink, *,
          device: DeviceSetup, ckpt_path=None, resume: dict[str, Any] | None = None,
          progress: Callable[[Progress], None] | None = None,
          stop: Callable[[], bool] | None = None, log: Callable[[str], None] = print) -> TrainResult:
    t = cfg.train
    budget = Budget(t.budget.seconds, t.budget.iters, t.budget.tokens)
    lr_at = LRSchedule(t.lr, t.min_lr, t.warmup, t.schedule_horizon, t.max_iters)
    cs_at = CouplingWarmup(t.coupling_warmup.fraction, t.coupling_warmup.steps)
    block_size = model.config.block_size
    tokens_per_iter = t.batch_size * t.grad_accum * block_size
    ckpt_every = t.checkpoint_every or t.eval_every
    fwd = torch.compile(model) if device.compile else model   # `model` stays the raw module

    st = LoopState.from_dict(resume) if resume else LoopState()
    resumed_from = st.it if resume else None
    start_it = st.it
    window: list[float] = []          # train losses since the last log line
    status, error = "succeeded", None
    post: dict[str, float] = {}

    def report(phase: str) -> None:
        if progress is None:
            return
        frac = budget.progress(st.it, st.tokens, clock.train_s)
        wall = clock.wall_s
        progress({
            "phase": phase, "iter": st.it, "tokens": st.tokens, "train_s": round(clock.train_s, 3),
            "wall_s": round(wall, 3), "fraction": round(frac, 5),
            "eta_s": round(wall / frac * (1 - frac), 1) if frac > 0 else None,
            "loss": st.last_loss, "val_loss": st.val_loss, "best_val_loss": st.best_val_loss,
            "lr": st.lr, "eval_s": round(st.eval_s, 3),
        })

    def checkpoint() -> None:
        if ckpt_path is None or st.checkpointed_at == st.it:
            return
        st.checkpointed_at = st.it
        save_checkpoint(ckpt_path, model=model, optimizer=optimizer, batches=batches, clock=clock,
                        loop=st.to_dict(), meta={"study": cfg.study, "step": cfg.step, "seed": cfg.seed})

    model.train()
    report("training")
    clock.resume()
    while True:
        # ------------------------------------------------------------------------------
        # the one stop predicate (+ a requested stop, which skips the final eval)
        last = budget.exhausted(st.it, st.tokens, clock.train_s)
        interrupted = stop is not None and stop() and not last

        # ------------------------------------------------------------------------------
        # EVAL: at iter 0 (optional), every eval_every, and always on the last pass
        do_eval = last or (st.it % t.eval_every == 0 and (st.it > 0 or t.eval_at_start))
        if do_eval and not interrupted and st.evaluated_at != st.it:
            with clock.paused():
                report("eval")
                t_eval = time.monotonic()
                losses = estimate_loss(fwd, batches, t.eval_batches, device)
                st.eval_s += time.monotonic() - t_eval
                st.train_loss, st.val_loss = losses["train"], losses["val"]
                st.evaluated_at = st.it
                if math.isfinite(st.val_loss) and (st.best_val_loss is None or st.val_loss < st.best_val_loss):
                    st.best_val_loss, st.best_val_iter = st.val_loss, st.it
                values = {"train_loss": st.train_loss, "val_loss": st.val_loss,
                          "val_ppl": math.exp(min(st.val_loss, 20.0)), "best_val_loss": st.best_val_loss}
                values.update({f"stats/{k}": v for k, v in model.mechanism_stats().items()})
                sink.log(st.it, st.tokens, clock.train_s, values)
                best = st.best_val_loss if st.best_val_loss is not None else float("nan")
                log(f"eval {st.it:05d} | train {st.train_loss:.4f} | val {st.val_loss:.4f} | "
                    f"best {best:.4f} | {budget.describe(clock.train_s, st.it)}")
                report("training")

        # ------------------------------------------------------------------------------
        # CHECKPOINT: every checkpoint_every iterations (default: at each eval), at the end,
        # and on a requested stop
        if last or interrupted or (st.it > start_it and st.it % ckpt_every == 0):
            with clock.paused():
                report("checkpoint")
                checkpoint()
                report("training")

        # ------------------------------------------------------------------------------
        # END: post-training hooks of the mechanisms (e.g. KVSplice calibration), then stop
        if interrupted:
            status = "interrupted"
            break
        if last:
            with clock.paused():
                report("post_train")
                t_eval = time.monotonic()
                model.eval()
                for m in model.modules():
                    hook = getattr(m, "post_train", None)
                    if callable(hook):
                        out = hook(model, lambda split: batches.sample(split),
                                   lambda: estimate_loss(model, batches, t.eval_batches, device, ("val",))["val"])
                        post.update({k: float(v) for k, v in (out or {}).items()})
                model.train()
                st.eval_s += time.monotonic() - t_eval
                if post:
                    sink.log(st.it, st.tokens, clock.train_s, dict(post))
            break

        # ------------------------------------------------------------------------------
        # STEP: LR and coupling scale from the budget progress, then grad_accum micro-steps
        t_step = clock.train_s
        frac = budget.progress(st.it, st.tokens, clock.train_s, horizon_iters=t.max_iters)
        if st.warmup_progress is None and st.it == t.warmup:
            st.warmup_progress = frac                          # the cosine starts here, at lr
        lr = lr_at(st.it, frac, st.warmup_progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.set_coupling_scale(cs_at(st.it, frac))

        loss_sum = torch.zeros((), device=device.device)
        for _ in range(t.grad_accum):
            x, y = batches.next()                              # (B, T), (B, T)
            with device.autocast():
                _, loss = fwd(x, y)
            (loss / t.grad_accum).backward()
            loss_sum += loss.detach().float()
        loss_val = loss_sum.item() / t.grad_accum
        if not math.isfinite(loss_val):
            status, error = "diverged", f"loss {loss_val} at iteration {st.it}"
            break

        do_stats = (st.it + 1) % t.stats_every == 0
        mix_grads = grad_norms(model.mixing_scalars()) if do_stats else {}
        keep = model.keep_ratio_stats() if (st.it + 1) % t.log_every == 0 else {}  # grads before the step
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(optimizer.last_grad_norm):
            status, error = "diverged", f"grad norm {optimizer.last_grad_norm} at iteration {st.it}"
            break
        st.it += 1
        st.tokens += tokens_per_iter
        st.lr = lr * optimizer.last_lr_factor
        window.append(loss_val)
        dt = clock.train_s - t_step
        if device.compile and st.it == start_it + 1:
            clock.move_to_compile(dt)      # first compiled step = compile warm-up

        # ------------------------------------------------------------------------------
        # LOG: one line and one record per log interval; mechanism stats every stats_every
        if st.it % t.log_every == 0:
            st.last_loss = sum(window) / len(window)
            window.clear()
            spam = optimizer.spam_stats()
            sink.log(st.it, st.tokens, clock.train_s, {
                "loss": st.last_loss, "lr": st.lr, "tokens_per_s": tokens_per_iter / max(dt, 1e-9),
                "grad_norm": optimizer.last_grad_norm, "coupling_scale": model.coupling_scale,
                "spam/spikes": spam["spikes"], "spam/resets": spam["resets"],
                "spam/clipped": spam["clipped"], "dt_ms": 1000 * dt,
                "spam_clip_frac": spam["clip_frac"],   # entries clipped by SPAM part 1 at this step
                **keep,                                 # kv_keep_ratio(+_lm_grad, _cost_grad) if learned
            })
            log(f"step {st.it:05d} | loss {st.last_loss:.3f} | lr {st.lr:.1e} | dt {1000 * dt:.0f}ms | "
                f"tok/s {_si(tokens_per_iter / max(dt, 1e-9))} | {budget.describe(clock.train_s, st.it)}")
            report("training")
        if do_stats:
            values = {f"stats/{k}": v for k, v in model.mechanism_stats().items()}
            values.update({f"grad/{k}": v for k, v in mix_grads.items()})
            sink.log(st.it, st.tokens, clock.train_s, values)

    # ----------------------------------------------------------------------------------
    clock.pause()
    if window:
        st.last_loss = sum(window) / len(window)
    report(status)
    return TrainResult(
        status=status, iters=st.it, tokens=st.tokens, train_s=clock.train_s, wall_s=clock.wall_s,
        compile_s=clock.compile_s, eval_s=st.eval_s, final_val_loss=st.val_loss if st.evaluated_at == st.it else None,
        best_val_loss=st.best_val_loss, best_val_iter=st.best_val_iter,
        final_train_loss=st.train_loss if st.evaluated_at == st.it else st.last_loss,
        final_lr=st.lr, tokens_per_s=st.tokens / clock.train_s if clock.train_s > 0 else 0.0,
        effective_batch_tokens=tokens_per_iter, resumed_from_iter=resumed_from,
        error_message=error, spam=optimizer.spam_stats(), post_train=post,
    )


def _si(x: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
