"""Training-step speed of our baseline GPT-2 next to a minimal nanoGPT-style reference.

    python -m bench.train_bench [--quick] [--presets tiny,small] [--vocab 320] [--threads N]

Peers: a nanoGPT-style re-implementation (below) and, when `transformers` is installed (the
optional `bench` extra), Hugging Face's GPT2LMHeadModel of the same shape. All get the same
config, batch and optimizer (torch AdamW) at the machine's thread count; their steps
(forward + backward + optimizer step) are interleaved, rotating which goes first, each
iteration gives one paired ratio per peer (median, bootstrap CI, Wilcoxon; >= 30 pairs),
and the median of the warm steps is reported, wall and process CPU time (all threads) (design.md §8: single steps spike 1.5-2x on
this machine, only medians of interleaved runs mean anything). The vocabulary defaults to
the byte tokenizer's 320 so that the blocks, not the LM head, dominate. Writes
bench/results/train.json and prints a table; ratio = ours tok/s / reference tok/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.config import GPTConfig
from models.gpt2 import GPT
from models.presets import PRESETS

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"
BATCH = {"tiny": 8, "small": 4, "gpt2-124m": 4}


# ---------------------------------------------------------------------------------------
# the reference: nanoGPT's model.py, trimmed to what the baseline needs

class RefAttention(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.n_head = c.n_head

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class RefBlock(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd)
        self.attn = RefAttention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd)
        self.mlp = nn.Sequential(nn.Linear(c.n_embd, 4 * c.n_embd), nn.GELU(), nn.Linear(4 * c.n_embd, c.n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class RefGPT(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.h = nn.ModuleList([RefBlock(c) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight

    def forward(self, idx, targets):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


class HFGPT(nn.Module):
    """The installable peer: Hugging Face transformers' GPT2LMHeadModel of the same shape
    (exact GELU, no dropout, SDPA attention, tied head), same loss as ours on its logits."""

    def __init__(self, c: GPTConfig):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        hf = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                        n_layer=c.n_layer, n_head=c.n_head, activation_function="gelu",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
        hf._attn_implementation = "sdpa"
        self.model = GPT2LMHeadModel(hf)

    def forward(self, idx, targets):
        logits = self.model(input_ids=idx).logits
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def hf_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------

def _step_fn(model, device: torch.device):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))

    def step(x, y) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        c0, t0 = time.process_time(), time.perf_counter()
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0

    return step


def paired(ratios: list[float]) -> dict:
    """Median of per-iteration (peer time / our time) ratios, its 95 % bootstrap CI and a
    Wilcoxon signed-rank test of log ratio = 0 (scipy); > 1 means ours is faster."""
    import numpy as np
    from scipy import stats

    logs = np.log(np.asarray(ratios))
    ci = stats.bootstrap((np.asarray(ratios),), np.median, n_resamples=2000,
                         random_state=0, method="percentile").confidence_interval
    p = float(stats.wilcoxon(logs).pvalue) if len(logs) >= 10 and np.any(logs != 0) else None
    return {"n": len(ratios), "median": float(np.median(ratios)), "ci95": [float(ci.low), float(ci.high)],
            "wilcoxon_p": p}


def bench_preset(preset: str, vocab: int, steps: int, warmup: int, device: torch.device,
                 hf: bool = True) -> dict:
    cfg = GPTConfig(**{**PRESETS[preset], "dropout": 0.0, "vocab_size": vocab})
    B, T = BATCH.get(preset, 4), cfg.block_size
    torch.manual_seed(0)
    ours = GPT(cfg).to(device).train()
    ref = RefGPT(cfg).to(device).train()
    models: dict[str, nn.Module] = {"ours": ours, "ref": ref}
    if hf and hf_available():
        models["hf"] = HFGPT(cfg).to(device).train()
    fns = {k: _step_fn(m, device) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}  # process CPU time, all threads
    g = torch.Generator().manual_seed(0)
    names = list(models)
    for i in range(warmup + steps):
        x = torch.randint(0, vocab, (B, T), generator=g).to(device)
        y = torch.randint(0, vocab, (B, T), generator=g).to(device)
        order = names[i % len(names):] + names[:i % len(names)]  # rotate who goes first
        for name in order:
            dt, dc = fns[name](x, y)
            if i >= warmup:
                times[name].append(dt)
                cpu[name].append(dc)
    med = {k: statistics.median(v) for k, v in times.items()}
    tok = B * T
    peers, peers_cpu = {}, {}
    for peer in ("ref", "hf"):
        if peer in times:  # paired: ours and the peer ran in the same iteration
            ratios = [p / o for o, p in zip(times["ours"], times[peer], strict=True)]
            peers[peer] = paired(ratios)
            peers_cpu[peer] = paired([p / o for o, p in zip(cpu["ours"], cpu[peer], strict=True)])
    return {
        "preset": preset, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "block_size": T, "batch": B,
        "vocab_size": vocab, "steps": steps, "warmup": warmup,
        "ours_ms": 1000 * med["ours"], "ref_ms": 1000 * med["ref"],
        "ours_tok_s": tok / med["ours"], "ref_tok_s": tok / med["ref"],
        "ratio": med["ref"] / med["ours"],
        "hf_ms": 1000 * med["hf"] if "hf" in med else None,
        "hf_tok_s": tok / med["hf"] if "hf" in med else None,
        "paired": peers,
        "paired_cpu": peers_cpu,
        "cpu_ms": {k: 1000 * statistics.median(v) for k, v in cpu.items()},
        "params_hf": sum(p.numel() for p in models["hf"].parameters()) if "hf" in models else None,
        "params_ours": sum(p.numel() for p in ours.parameters()),
        "params_ref": sum(p.numel() for p in ref.parameters()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    p.add_argument("--presets", default="tiny,small")
    p.add_argument("--vocab", type=int, default=320, help="320 = byte tokenizer; 50304 = GPT-2")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the machine's CPU count)")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers GPT-2 peer")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    load0, started = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows = []
    for preset in args.presets.split(","):
        steps = args.steps or (10 if args.quick else 60) * (2 if preset == "tiny" else 1)
        warmup = 3 if args.quick else 10
        rows.append(bench_preset(preset, args.vocab, steps, warmup, device, hf=not args.no_hf))

    print(f"device {device} | threads {torch.get_num_threads()} | torch {torch.__version__} | vocab {args.vocab}")
    print(f"{'preset':8} {'shape':>12} {'ours ms':>9} {'ref ms':>9} {'ours tok/s':>11} {'ref tok/s':>11} {'ratio':>6}")
    for r in rows:
        shape = f"{r['n_layer']}x{r['n_embd']}/{r['block_size']}"
        print(f"{r['preset']:8} {shape:>12} {r['ours_ms']:9.1f} {r['ref_ms']:9.1f} "
              f"{r['ours_tok_s']:11,.0f} {r['ref_tok_s']:11,.0f} {r['ratio']:6.3f}")
        for peer, st in r["paired"].items():
            print(f"    paired vs {peer}: median {st['median']:.3f} (95% CI {st['ci95'][0]:.3f}-"
                  f"{st['ci95'][1]:.3f}, n={st['n']}, Wilcoxon p={st['wilcoxon_p']})"
                  + (f"; hf {r['hf_ms']:.1f} ms" if peer == "hf" else ""))
            sc = r["paired_cpu"][peer]
            print(f"    CPU time vs {peer}: median {sc['median']:.3f} (95% CI {sc['ci95'][0]:.3f}-"
                  f"{sc['ci95'][1]:.3f}); CPU ms ours {r['cpu_ms']['ours']:.1f}, {peer} {r['cpu_ms'][peer]:.1f}")
    worst = min(r["ratio"] for r in rows)
    print(f"ratio = ours tok/s / reference tok/s (>= 1 means ours is not slower); worst {worst:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "quick": args.quick, "rows": rows, "worst_ratio": worst,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "started_at": started,
        "loadavg_before": load0, "loadavg_after": os.getloadavg(),
    }, indent=2))
    return 0 if math.isfinite(worst) else 1


if __name__ == "__main__":
    raise SystemExit(main())
