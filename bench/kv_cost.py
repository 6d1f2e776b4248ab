"""Where kv_prune's step time goes at `small`: its extra pieces timed side by side.

    python -m bench.kv_cost [--threads 2] [--rounds 30]

One layer's worth of the work bench/mechanisms_bench.py's kv_prune rows add to the baseline,
at its `small` shape (B = 4, H = 6, T = 256, D = 64; keep_ratio 0.382 -> k = 97, recency_frac
0.0625 -> r = 16), interleaved round by round (rotated order), median per piece:

    scores_only             the no-grad q k^T / sqrt(D) of the selection (float32, full T x T)
    select_h2o              scores + the h2o cache (models/mechanisms/h2o.py: softmax, the
                            TorchScript loop over T - k tokens, the keep mask)
    select_oracle           scores + the full causal softmax, its prefix mass, top-k, mask
    sdpa_causal_fwd_bwd     the baseline's attention: SDPA is_causal=True, forward + backward
    sdpa_kept_mask_fwd_bwd  kv_prune's: SDPA with the (B, H, T, T) bool keep mask

plus the aten ops each SDPA call dispatches (profiler). Writes bench/results/kv_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.config import GPTConfig
from models.gpt2 import GPT
from models.mechanisms.h2o import h2o_keep
from models.mechanisms.kv_prune import _scores, heavy_hitter_keep

RESULTS = Path(__file__).parent / "results" / "kv_cost.json"


def measure(rounds: int, B: int = 4, H: int = 6, T: int = 256, D: int = 64) -> dict[str, Any]:
    k, r = int(0.382 * T), round(0.0625 * T)
    g = torch.Generator().manual_seed(0)
    q, kk, v = (torch.randn(B, H, T, D, generator=g, requires_grad=True) for _ in range(3))
    model = GPT(GPTConfig(n_layer=1, n_head=H, n_embd=H * D, block_size=T, vocab_size=320,
                          dropout=0.0, attn="kv_prune",
                          attn_knobs={"policy": "h2o", "recency_frac": 0.0625}))
    attn = model.transformer.h[0].attn
    mask = attn.kept_mask(q.detach(), kk.detach(), k)

    def scores_only() -> None:
        _scores(q.detach(), kk.detach())

    def select_h2o() -> None:
        h2o_keep(_scores(q.detach(), kk.detach()), k, r, attn.knobs.mode)

    def select_oracle() -> None:
        heavy_hitter_keep(attn.attention_mass(q.detach(), kk.detach()), k, r)

    def sdpa_causal_fwd_bwd() -> None:
        F.scaled_dot_product_attention(q, kk, v, is_causal=True).sum().backward()

    def sdpa_kept_mask_fwd_bwd() -> None:
        F.scaled_dot_product_attention(q, kk, v, attn_mask=mask).sum().backward()

    fns: dict[str, Callable[[], None]] = {f.__name__: f for f in (
        scores_only, select_h2o, select_oracle, sdpa_causal_fwd_bwd, sdpa_kept_mask_fwd_bwd)}
    for f in fns.values():
        f()
        f()
    times: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for i in range(rounds):
        for n in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)

    def aten_ops(fn: Callable[[], None]) -> list[str]:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        return sorted({e.key for e in prof.key_averages()
                       if any(w in e.key for w in ("attention", "softmax", "bmm", "matmul"))})

    return {"ms": {n: 1e3 * statistics.median(t) for n, t in times.items()},
            "ops": {"causal": aten_ops(lambda: F.scaled_dot_product_attention(q, kk, v, is_causal=True)),
                    "kept_mask": aten_ops(lambda: F.scaled_dot_product_attention(q, kk, v, attn_mask=mask))},
            "kept_fraction_of_causal": float(mask.sum() / torch.ones(T, T).tril().sum() / (B * H)),
            "shape": {"B": B, "H": H, "T": T, "D": D, "k": k, "r": r}, "rounds": rounds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load0, started = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = measure(args.rounds)
    out.update(threads=torch.get_num_threads(), started_at=started, loadavg_before=load0,
               loadavg_after=os.getloadavg())
    for n, ms in out["ms"].items():
        print(f"{n:24} {ms:8.2f} ms")
    print(f"SDPA ops, causal: {out['ops']['causal']}\nSDPA ops, kept mask: {out['ops']['kept_mask']}")
    print(f"kept keys / causal keys: {out['kept_fraction_of_causal']:.3f}; threads {out['threads']}; "
          f"load {load0[0]:.2f} -> {out['loadavg_after'][0]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
