"""train(): budget stop, final eval, LR/coupling set before each forward, stats, hooks,
divergence, interruption, determinism. Real torch on CPU, a real (tiny) GPT."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from models.config import GPTConfig
from models.gpt2 import GPT
from tests.workers.train.conftest import run_config
from workers.train.budget import Clock, FakeTime
from workers.train.checkpoint import read_checkpoint
from workers.train.config import TrainConfig
from workers.train.data import Batches
from workers.train.device import setup_device
from workers.train.loop import train
from workers.train.optim import build_optimizer
from workers.train.sinks import JsonlSink


class ListSink:
    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []

    def log(self, it, tokens, train_s, values):
        self.records.append((it, dict(values)))

    def close(self):
        pass

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(it, v[name]) for it, v in self.records if name in v]


class ProbeGPT(GPT):
    """A GPT with one learnable mixing scalar, a post_train hook and an optional NaN at a
    given training forward (a real module, to exercise the trainer's hooks)."""

    def __init__(self, cfg, nan_at: int | None = None):
        super().__init__(cfg)
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.nan_at = nan_at
        self.forwards = 0
        self.cs_seen: list[float] = []
        self.post_calls: list[dict[str, Any]] = []

    def forward(self, idx, targets=None):
        if self.training:
            self.cs_seen.append(self.coupling_scale)
            self.forwards += 1
        logits, loss = super().forward(idx, targets)
        logits = logits * self.alpha
        if targets is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
            if self.training and self.nan_at is not None and self.forwards > self.nan_at:
                loss = loss * float("nan")
        return logits, loss

    def mixing_scalars(self):
        return {"probe.alpha": self.alpha}

    def post_train(self, model, get_batch, estimate_loss):
        x, y = get_batch("val")
        val = estimate_loss()
        self.post_calls.append({"shape": tuple(x.shape), "val": val})
        return {"probe/val_again": val, "probe/batch_rows": float(x.shape[0])}


def _run(token_dir: Path, tmp_path: Path, model_cls=GPT, model_kwargs=None, stop=None, time_fn=None,
         ckpt=True, resume=None, progress=None, **train_overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.from_dict(run_config(**train_overrides))
    gcfg = GPTConfig.from_dict({**cfg.gpt_config().to_dict(), "vocab_size": 320})
    torch.manual_seed(cfg.seed)
    model = model_cls(gcfg, **(model_kwargs or {}))
    dev = setup_device("cpu", "float32")
    opt = build_optimizer(model, cfg)
    batches = Batches(token_dir, gcfg.block_size, cfg.train.batch_size, cfg.seed)
    clock = Clock(time_fn=time_fn) if time_fn else Clock()
    sink = ListSink()
    lines: list[str] = []
    result = train(cfg, model, opt, batches, clock, sink, device=dev,
                   ckpt_path=tmp_path / "checkpoint.pt" if ckpt else None, resume=resume,
                   stop=stop, log=lines.append, progress=progress)
    return result, sink, model, lines


def test_iteration_budget_evaluates_at_start_every_eval_every_and_last(token_dir, tmp_path):
    res, sink, _, lines = _run(token_dir, tmp_path, budget={"iters": 40}, eval_every=15, log_every=10)
    assert res.status == "succeeded" and res.iters == 40
    evals = sink.series("val_loss")
    assert [it for it, _ in evals] == [0, 15, 30, 40]
    assert evals[-1][1] < evals[0][1] - 1.0                     # it learns the pattern
    assert res.final_val_loss == evals[-1][1] == res.best_val_loss
    assert res.tokens == 40 * 4 * 32 and res.effective_batch_tokens == 4 * 32
    assert [it for it, _ in sink.series("loss")] == [10, 20, 30, 40]
    assert any(line.startswith("step 00010 | loss ") and "| lr " in line and "| tok/s " in line
               for line in lines)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["loop"]["it"] == 40


def test_eval_seconds_are_counted_reported_and_kept_out_of_the_training_clock(token_dir, tmp_path):
    reports: list[dict[str, Any]] = []
    res, sink, model, _ = _run(token_dir, tmp_path, model_cls=ProbeGPT, budget={"iters": 12},
                               eval_every=5, eval_batches=8, progress=reports.append)
    assert model.post_calls                                      # a post-train eval ran too
    assert res.eval_s > 0
    assert [r["phase"] for r in reports if r["phase"] != "training"] == [
        "eval", "eval", "checkpoint", "eval", "checkpoint", "eval", "checkpoint", "post_train",
        "succeeded"]                                             # iters 0, 5, 10 and the last, 12
    seen = [r["eval_s"] for r in reports]
    assert seen == sorted(seen) and seen[0] == 0.0               # accumulates, never resets
    assert reports[-1]["eval_s"] == round(res.eval_s, 3)
    # the post-train eval is counted: eval_s grows between the post_train and final reports
    post = next(i for i, r in enumerate(reports) if r["phase"] == "post_train")
    assert reports[-1]["eval_s"] > reports[post]["eval_s"]
    assert res.eval_s < res.wall_s                               # wall time includes it


def test_eval_at_start_can_be_skipped(token_dir, tmp_path):
    _, sink, _, _ = _run(token_dir, tmp_path, budget={"iters": 12}, eval_every=10, eval_at_start=False)
    assert [it for it, _ in sink.series("val_loss")] == [10, 12]


def test_time_budget_stops_on_the_training_clock_and_lr_ends_near_min_lr(token_dir, tmp_path):
    ft = FakeTime()

    def ticking() -> float:     # every reading of the clock costs 1 ms of fake time
        ft.advance(0.001)
        return ft()

    res, sink, _, _ = _run(token_dir, tmp_path, time_fn=ticking, budget={"seconds": 0.5, "iters": None},
                           eval_every=1000, log_every=1, lr=1e-3, min_lr=1e-4, warmup=2)
    assert 0.5 <= res.train_s < 0.6
    assert res.iters > 20
    assert abs(res.final_lr - 1e-4) / 1e-4 < 0.10
    lrs = [v for _, v in sink.series("lr")]
    assert lrs[0] == 0.0 and max(lrs) > 5e-4               # warmup starts at 0 (§1.3)
    assert lrs[2:] == sorted(lrs[2:], reverse=True)         # then the cosine only decays


def test_coupling_scale_is_set_before_each_forward(token_dir, tmp_path):
    _, _, model, _ = _run(token_dir, tmp_path, model_cls=ProbeGPT, budget={"iters": 14},
                          coupling_warmup={"fraction": 0.0, "steps": 10})
    assert model.cs_seen[:11] == pytest.approx([i / 10 for i in range(11)])
    assert model.cs_seen[11:] == [1.0] * 3
    _, _, model, _ = _run(token_dir, tmp_path, model_cls=ProbeGPT, budget={"iters": 20},
                          coupling_warmup={"fraction": 0.5})
    assert model.cs_seen[:11] == pytest.approx([min(1.0, i / 10) for i in range(11)])


def test_stats_grad_norms_and_post_train_hook(token_dir, tmp_path):
    res, sink, model, _ = _run(token_dir, tmp_path, model_cls=ProbeGPT, budget={"iters": 20},
                               stats_every=10, eval_every=100)
    grads = sink.series("grad/probe.alpha")
    assert [it for it, _ in grads] == [10, 20] and all(v > 0 for _, v in grads)
    assert [it for it, _ in sink.series("stats/coupling_scale")][:2] == [0, 10]
    assert len(model.post_calls) == 1 and model.post_calls[0]["shape"] == (4, 32)
    assert res.post_train["probe/val_again"] == pytest.approx(res.final_val_loss, rel=1e-5)
    assert sink.records[-1] == (20, res.post_train)


def test_nan_loss_stops_as_diverged_at_that_iteration(token_dir, tmp_path):
    res, sink, _, _ = _run(token_dir, tmp_path, model_cls=ProbeGPT, model_kwargs={"nan_at": 7},
                           budget={"iters": 50})
    assert res.status == "diverged" and res.iters == 7
    assert "iteration 7" in res.error_message


def test_stop_request_finishes_the_iteration_checkpoints_and_returns_interrupted(token_dir, tmp_path):
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 6      # polled once per pass: stop after 6 iterations

    res, sink, _, _ = _run(token_dir, tmp_path, stop=stop, budget={"iters": 100}, eval_every=50)
    assert res.status == "interrupted" and res.iters == 6
    assert read_checkpoint(tmp_path / "checkpoint.pt")["loop"]["it"] == 6
    assert [it for it, _ in sink.series("val_loss")] == [0]   # no final eval when interrupted


def test_same_seed_same_losses(token_dir, tmp_path):
    a = _run(token_dir, tmp_path / "a", ckpt=False, budget={"iters": 15}, log_every=1)[1].series("loss")
    b = _run(token_dir, tmp_path / "b", ckpt=False, budget={"iters": 15}, log_every=1)[1].series("loss")
    assert a == b and len(a) == 15


def test_resume_from_checkpoint_gives_the_same_curve(token_dir, tmp_path):
    from workers.train.checkpoint import load_checkpoint

    full = _run(token_dir, tmp_path / "full", budget={"iters": 20}, log_every=1, eval_every=10)[1]
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 8

    _run(token_dir, tmp_path / "part", stop=stop, budget={"iters": 20}, log_every=1, eval_every=10)
    # a fresh process: new model/optimizer/batches, state from the checkpoint
    cfg = TrainConfig.from_dict(run_config(budget={"iters": 20}, log_every=1, eval_every=10))
    gcfg = GPTConfig.from_dict({**cfg.gpt_config().to_dict(), "vocab_size": 320})
    torch.manual_seed(123)
    model = GPT(gcfg)
    opt = build_optimizer(model, cfg)
    batches = Batches(token_dir, gcfg.block_size, 4, cfg.seed)
    clock = Clock()
    loop = load_checkpoint(tmp_path / "part" / "checkpoint.pt", model=model, optimizer=opt,
                           batches=batches, clock=clock)
    sink = ListSink()
    res = train(cfg, model, opt, batches, clock, sink, device=setup_device("cpu", "float32"),
                ckpt_path=tmp_path / "part" / "checkpoint.pt", resume=loop, log=lambda s: None)
    assert res.resumed_from_iter == 8 and res.iters == 20
    assert res.eval_s > loop["eval_s"] > 0                      # eval time kept across the resume
    assert sink.series("loss") == [(it, v) for it, v in full.series("loss") if it > 8]
    assert sink.series("val_loss") == [(it, v) for it, v in full.series("val_loss") if it > 8]


def test_jsonl_sink_writes_append_only_records(tmp_path):
    s = JsonlSink(tmp_path / "metrics.jsonl")
    s.log(3, 96, 1.5, {"loss": 2.5, "bad": float("nan")})
    s.close()
    s = JsonlSink(tmp_path / "metrics.jsonl")
    s.log(4, 128, 2.0, {"loss": 2.4})
    s.close()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[0] == {"iter": 3, "tokens": 96, "train_s": 1.5, "values": {"loss": 2.5, "bad": None}}
    assert recs[1]["iter"] == 4 and not math.isnan(recs[1]["values"]["loss"])


def test_cpu_setup_is_float32_without_compile_and_sets_no_global_state():
    before = torch.get_float32_matmul_precision()
    dev = setup_device("auto", "auto", compile=True)
    if dev.is_cuda:
        pytest.skip("CPU-only check")
    assert dev.dtype == torch.float32 and not dev.compile and not dev.fused_adamw
    assert dev.precision["compile_requested"] is True and dev.precision["compile"] is False
    assert torch.get_float32_matmul_precision() == before
    with pytest.raises(ValueError, match="no CUDA device is visible"):
        setup_device("cuda")


def test_spam_clip_fraction_and_learned_keep_ratio_grads_are_logged(token_dir, tmp_path):
    """Visible instead of silent (issue 14): every log record carries the fraction of gradient
    entries SPAM clipped at that step, and a learned KV keep ratio logs its value and the
    norms of its LM and cost gradients (the cost part analytic, the LM part the rest)."""
    raw = run_config(budget={"iters": 10}, eval_every=100)
    raw["model"] = {**raw["model"], "attn": "kv_prune",
                    "attn_knobs": {"keep_ratio": 0.382, "recency": 2, "learned": True, "cost": 0.5}}
    cfg = TrainConfig.from_dict(raw)
    gcfg = GPTConfig.from_dict({**cfg.gpt_config().to_dict(), "vocab_size": 320})
    torch.manual_seed(cfg.seed)
    model = GPT(gcfg)
    opt = build_optimizer(model, cfg)
    sink = ListSink()
    train(cfg, model, opt, Batches(token_dir, gcfg.block_size, cfg.train.batch_size, cfg.seed), Clock(),
          sink, device=setup_device("cpu", "float32"), log=lambda _line: None)
    clip = sink.series("spam_clip_frac")
    assert [it for it, _ in clip] == [5, 10] and all(0.0 <= v <= 1.0 for _, v in clip)
    assert clip[-1][1] > 0.0  # the element clip acts after the first step (upstream's 76 %)
    ratio = dict(sink.series("kv_keep_ratio"))
    lm, cost = dict(sink.series("kv_keep_ratio_lm_grad")), dict(sink.series("kv_keep_ratio_cost_grad"))
    assert set(ratio) == set(lm) == set(cost) == {5, 10}
    assert 0.0 < ratio[10] < 1.0 and lm[10] > 0.0
    L = gcfg.n_layer
    assert cost[5] == pytest.approx(math.sqrt(L) * 0.5 / L * ratio[5] * (1 - ratio[5]), rel=0.05)
