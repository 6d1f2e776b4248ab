"""GPU check: bf16 step time, tokens/s and MFU of every variant, compile on/off, SDPA backends,
fused AdamW vs AdamWSPAM, and a bf16-vs-fp32 loss check.

    python -m bench gpu                      # = python -m bench.gpu_bench (gpt2-124m, T=1024)
    python -m bench.gpu_bench --budget-s 420 --batch 8 --steps 10
    python -m bench.gpu_bench --cpu-smoke    # tiny shape, a few steps, fp32 (the test suite)

Imports only torch, `models` and `workers.train` (no SQLAlchemy, Ray, rich): a device image
with its own torch runs it from a bare checkout. On CUDA: bf16 autocast when supported,
TF32 matmuls, fused AdamW; elsewhere fp32 (the fallback is named in the output).

1. Per variant (the baseline and every registered mechanism with the knob sets of
   bench/mechanisms_bench.py): eager, then `torch.compile` while the time budget lasts
   (baseline first): warm-up, then `--steps` timed steps (zero_grad + forward + backward +
   optimizer step, synchronised): ms/step, tokens/s, MFU = the model's 6N + 12LHQT FLOPs per
   token x tokens/s / the device's dense bf16 peak (workers/train/mfu.py), and MFU on the
   baseline's FLOPs (what the variant costs per baseline-equivalent token).
2. The SDPA kernel each variant's forward actually runs (profiler op names:
   flash / efficient / cudnn / math / none = no SDPA call, explicit softmax).
3. Optimizer step alone on the baseline: torch AdamW (fused on CUDA) vs AdamWSPAM (the
   project's, with spike clip, z-score spikes, resets).
4. Baseline trained `--loss-steps` steps from one seed on the same batches in bf16 autocast
   and in fp32: both final losses and their relative difference (fails over `--loss-tol`).

A variant that fails (e.g. out of memory) is reported with its error, not dropped. Writes
bench/results/gpu.json; the exit code is 1 when the loss check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bench.mechanisms_bench import Variant, variants
from models.config import GPTConfig
from models.gpt2 import GPT
from models.presets import PRESETS
from workers.train.mfu import model_flops_per_token, peak_bf16_flops
from workers.train.optim import AdamWSPAM

RESULTS = Path(__file__).parent / "results" / "gpu.json"
SDPA_OPS = (("_scaled_dot_product_flash_attention", "flash"),
            ("_scaled_dot_product_efficient_attention", "efficient"),
            ("_scaled_dot_product_cudnn_attention", "cudnn"),
            ("_scaled_dot_product_fused_attention_overrideable", "overrideable"),
            ("_scaled_dot_product_attention_math", "math"))


class Setup:
    """Device, precision and shape of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = args.device
        self.cuda = self.device == "cuda"
        self.bf16 = self.cuda and torch.cuda.is_bf16_supported() and not args.fp32
        self.precision = "bf16 autocast" if self.bf16 else "fp32"
        self.shape: dict[str, Any] = dict(PRESETS[args.preset], dropout=0.0, vocab_size=args.vocab)
        if args.seq:
            self.shape["block_size"] = args.seq
        if args.layers:
            self.shape["n_layer"] = args.layers
        self.T = int(self.shape["block_size"])
        self.B = args.batch
        self.name = torch.cuda.get_device_name() if self.cuda else (platform.processor() or "cpu")
        self.peak = peak_bf16_flops(self.name) if self.bf16 else None
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.set_float32_matmul_precision("high")

    def autocast(self, bf16: bool | None = None) -> contextlib.AbstractContextManager[Any]:
        use = self.bf16 if bf16 is None else bf16
        if use:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def batch(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, int(self.shape["vocab_size"]), (self.B, self.T + 1), generator=g)
        return (idx[:, :-1].contiguous().to(self.device), idx[:, 1:].contiguous().to(self.device))


def build(setup: Setup, v: Variant) -> GPT:
    """The variant's model (falling back to MLA for MLP mechanisms that need it, as
    bench/mechanisms_bench.py does)."""
    error = None
    for attn, knobs in ((v.attn, v.attn_knobs), *((("mla", {"latent_dim": 64}),)
                                                   if v.attn == "causal" else ())):
        try:
            cfg = GPTConfig(**setup.shape, attn=attn, attn_knobs=knobs, mlp=v.mlp,
                            mlp_knobs=v.mlp_knobs)
            torch.manual_seed(0)
            model = GPT(cfg).to(setup.device)
        except (ValueError, TypeError) as e:
            error = e
            continue
        if attn != v.attn:
            v.label, v.attn, v.attn_knobs = f"mla+{v.label}", attn, knobs
        return model
    raise ValueError(str(error).splitlines()[0] if error else "cannot build")


def optimizer(model: GPT, setup: Setup, kind: str = "adamw") -> torch.optim.Optimizer:
    groups = model.optim_groups(0.1)
    if kind == "adamwspam":
        return AdamWSPAM(groups, lr=6e-4, betas=(0.9, 0.95), fused=True if setup.cuda else None,
                         amsgrad=False, grad_clip=1.0, spike_clip_theta=5000.0, spike_z=10.0,
                         reset_interval=500, rewarm_steps=100)
    return torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), fused=setup.cuda)


def step_fn(model: Any, opt: torch.optim.Optimizer, setup: Setup,
            batch: tuple[torch.Tensor, torch.Tensor], bf16: bool | None = None
            ) -> Callable[[], float]:
    x, y = batch

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with setup.autocast(bf16):
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def timed_steps(step: Callable[[], float], setup: Setup, warmup: int, steps: int
                ) -> tuple[float, float]:
    """(seconds of the warm-up incl. compilation, median seconds per timed step)."""
    t = time.perf_counter()
    for _ in range(warmup):
        step()
    setup.sync()
    warm_s = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        setup.sync()
        times.append(time.perf_counter() - t)
    return warm_s, statistics.median(times)


def sdpa_backend(model: GPT, setup: Setup, batch: tuple[torch.Tensor, torch.Tensor]) -> str:
    """Which SDPA kernels one eager forward calls ("none": the variant never calls SDPA)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), setup.autocast(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(batch[0][:1], batch[1][:1])
    names = {e.key for e in prof.key_averages()}
    found = sorted({label for op, label in SDPA_OPS for n in names if op in n})
    return "+".join(found) if found else "none"


@contextlib.contextmanager
def freed(setup: Setup) -> Iterator[None]:
    try:
        yield
    finally:
        if setup.cuda:
            torch.cuda.empty_cache()


def bench_variants(setup: Setup, args: argparse.Namespace, deadline: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    batch = setup.batch()
    tokens = setup.B * setup.T
    base_flops: float | None = None
    chosen = variants()
    if args.variants:
        wanted = set(args.variants.split(","))
        chosen = [v for v in chosen if v.label in wanted or v.label == "baseline"]
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    for compiled in modes:
        for v in [Variant(c.label, c.attn, dict(c.attn_knobs), c.mlp, dict(c.mlp_knobs), c.ref)
                  for c in chosen]:
            row: dict[str, Any] = {"variant": v.label, "compile": compiled}
            left = deadline - time.perf_counter()
            need = args.compile_cost_s if compiled else 5.0
            if left < need:
                row["error"] = f"skipped: {left:.0f} s of the time budget left (< {need:.0f} s)"
                rows.append(row)
                continue
            with freed(setup):
                try:
                    model = build(setup, v)
                    row["variant"] = v.label
                    flops = model_flops_per_token(model)
                    if v.label == "baseline":
                        base_flops = flops
                    if not compiled:
                        row["sdpa"] = sdpa_backend(model, setup, batch)
                    runner: Any = torch.compile(model) if compiled else model
                    step = step_fn(runner, optimizer(model, setup), setup, batch)
                    warm_s, dt = timed_steps(step, setup, args.warmup, args.steps)
                    tps = tokens / dt
                    row.update({
                        "params": sum(p.numel() for p in model.parameters()),
                        "ms_per_step": round(1000 * dt, 2), "tokens_per_s": round(tps),
                        "warmup_s": round(warm_s, 1), "flops_per_token": flops,
                        "mfu": round(flops * tps / setup.peak, 4) if setup.peak else None,
                        "mfu_on_baseline_flops": round((base_flops or flops) * tps / setup.peak, 4)
                        if setup.peak else None,
                    })
                    if setup.cuda:
                        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                        torch.cuda.reset_peak_memory_stats()
                    del model, runner, step
                except Exception as e:  # noqa: BLE001 - one variant's failure is its row
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            rows.append(row)
            print(f"  {row['variant']:34} compile={'on ' if compiled else 'off'} "
                  + (f"{row['ms_per_step']:9.2f} ms  {row['tokens_per_s']:>9,} tok/s  "
                     f"mfu={row['mfu']}  sdpa={row.get('sdpa', '-')}"
                     if "ms_per_step" in row else row.get("error", "")), flush=True)
    base = {r["compile"]: r["ms_per_step"] for r in rows
            if r["variant"] == "baseline" and "ms_per_step" in r}
    for r in rows:
        if "ms_per_step" in r and r["compile"] in base:
            r["x_baseline"] = round(r["ms_per_step"] / base[r["compile"]], 3)
    return rows


def bench_optimizers(setup: Setup, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Optimizer step alone (gradients fixed) for AdamW and AdamWSPAM on the baseline."""
    out = []
    with freed(setup):
        model = build(setup, Variant("baseline", "causal", {}, "gelu", {}))
        x, y = setup.batch()
        with setup.autocast():
            _, loss = model(x, y)
        loss.backward()
        for kind in ("adamw", "adamwspam"):
            opt = optimizer(model, setup, kind)
            _, dt = timed_steps(opt.step, setup, 3, max(5, args.steps))
            out.append({"optimizer": kind, "fused": setup.cuda, "ms_per_step": round(1000 * dt, 3)})
            print(f"  optimizer {kind:10} fused={setup.cuda}: {1000 * dt:.3f} ms/step", flush=True)
    return out


def loss_check(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    """Baseline, same init and batches, `loss_steps` steps in bf16 autocast and in fp32."""
    losses: dict[str, float] = {}
    batches = [setup.batch(seed=i % 4) for i in range(args.loss_steps)]
    for label, bf16 in (("bf16", True), ("fp32", False)):
        if bf16 and not setup.bf16:
            continue
        with freed(setup):
            model = build(setup, Variant("baseline", "causal", {}, "gelu", {}))
            opt = optimizer(model, setup)
            last = math.nan
            for b in batches:
                last = step_fn(model, opt, setup, b, bf16=bf16)()
            losses[label] = last
    out: dict[str, Any] = {"steps": args.loss_steps, **losses, "tolerance": args.loss_tol}
    if "bf16" in losses:
        out["rel_diff"] = abs(losses["bf16"] - losses["fp32"]) / abs(losses["fp32"])
        out["ok"] = out["rel_diff"] <= args.loss_tol
    else:
        out["ok"] = math.isfinite(losses["fp32"])
        out["note"] = "no bf16 on this device: fp32 only"
    print(f"  loss after {args.loss_steps} steps: {losses} ok={out['ok']}", flush=True)
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"),
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="gpt2-124m", choices=sorted(PRESETS))
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--seq", type=int, default=None, help="context T (default: the preset's)")
    ap.add_argument("--layers", type=int, default=None, help="override n_layer")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", choices=("off", "on", "both"), default="both")
    ap.add_argument("--compile-cost-s", type=float, default=45.0,
                    help="skip a compiled variant when less than this is left of the budget")
    ap.add_argument("--variants", default="", help="comma-separated labels (default: all)")
    ap.add_argument("--loss-steps", type=int, default=30)
    ap.add_argument("--loss-tol", type=float, default=0.02)
    ap.add_argument("--budget-s", type=float, default=400.0,
                    help="time budget for the variant runs (the rest is skipped, and said so)")
    ap.add_argument("--fp32", action="store_true", help="no autocast even on CUDA")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny shape on the CPU, 2 steps, fp32: the test-suite run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.cpu_smoke:
        args.device, args.preset, args.vocab, args.seq, args.layers = "cpu", "tiny", 320, 32, 1
        args.batch, args.steps, args.warmup, args.loss_steps = 2, 2, 1, 3
        args.compile = "off"
        args.loss_tol = 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t0 = time.perf_counter()
    setup = Setup(args)
    print(f"gpu bench: {setup.name}, {setup.precision}, {args.preset} T={setup.T} B={setup.B}, "
          f"torch {torch.__version__}, peak {setup.peak}", flush=True)
    rows = bench_variants(setup, args, t0 + args.budget_s)
    opts = bench_optimizers(setup, args)
    check = loss_check(setup, args)
    result = {
        "bench": "gpu", "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": setup.name, "precision": setup.precision, "torch": torch.__version__,
        "python": platform.python_version(), "preset": args.preset, "T": setup.T, "B": setup.B,
        "vocab": args.vocab, "peak_flops": setup.peak, "load_avg": os.getloadavg(),
        "seconds": round(time.perf_counter() - t0, 1), "variants": rows, "optimizers": opts,
        "loss_check": check,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} in {result['seconds']} s", file=sys.stderr)
    return 0 if check["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
