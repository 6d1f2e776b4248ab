"""Training-step time of every registered attention and MLP variant relative to the GPT-2 baseline.

    python -m bench.mechanisms_bench [--quick] [--device cpu|cuda] [--sizes tiny,small]
        [--rounds N] [--inner K] [--threads N]

One step = zero_grad + forward + backward + AdamW step, warm. Each round visits every variant
(in a rotated order) and times it right next to the baseline (and its reference), alternating
which goes first; the reported ratio is the median over rounds of those adjacent ratios, so a
slow spell of a shared machine hits both sides of a ratio (design.md §8: single CPU steps spike
1.5-2x). Each round gives one paired ratio per variant; with >= 10 rounds the table adds the
95 % bootstrap CI of the median ratio and a Wilcoxon signed-rank test of log ratio = 0 (scipy,
bench/train_bench.py's `paired`). `--inner 1` (one step per visit) halves a round's cost, so
that >= 30 paired rounds at `small` fit in minutes on 2 cores; CPU time (process, all threads)
per step is recorded next to the wall time.

Every mechanism in `models.registry` is benchmarked, Gen-3 ones included: `KNOB_SETS` names
the knob sets worth timing per mechanism; a registered name missing there runs with its
default knobs. A variant is built with the other slot at its baseline (`causal` / `gelu`);
MLP variants whose mechanisms need MLA run on `mla` and are also reported against `mla + gelu`.
Results: a table on stdout and bench/results/mechanisms.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models import registry
from models.config import GPTConfig
from models.gpt2 import GPT
from models.presets import PRESETS, TOKENIZER_VOCAB


def paired(ratios: list[float]) -> dict[str, Any]:
    """bench/train_bench.py's paired statistics (median, 95 % bootstrap CI, Wilcoxon p) of
    per-round variant / reference ratios, here > 1 = the variant is slower."""
    from bench.train_bench import paired as stats

    return stats(ratios)

# knob sets per mechanism (label suffix, knobs); names absent here run with default knobs
KNOB_SETS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "mla": [("", {"latent_dim": 64}), ("+ra", {"latent_dim": 64, "ra_alpha": 0.3}),
            ("+ra_ct", {"latent_dim": 64, "ra_ct": "topk"})],
    "reciprocal_mlp": [("(gate)", {"gate": True}), ("(cross)", {"cross": True}),
                       ("(cross r=64)", {"cross": True, "cross_rank": 64}), ("(recip)", {"recip": True}),
                       ("(all)", {"gate": True, "cross": True, "recip": True})],
    "unified_ra": [("(free)", {"fold": "free"}), ("(shared)", {"fold": "shared"}),
                   ("(free+rwr)", {"fold": "free", "self_restart": True})],
    "rmlp": [("", {}), ("(mixer)", {"use_mixer": True})],
    "kv_prune": [("(h2o)", {"policy": "h2o", "recency_frac": 0.0625}),
                 ("(oracle)", {"policy": "oracle", "recency_frac": 0.0625})],
}
# `--kv`: both KV-pruning policies vs the baseline at these shapes (issue 14): name -> (preset,
# batch); the 124M shape runs on the CPU for a few steps only
KV_SHAPES: dict[str, tuple[str, int]] = {"small": ("small", 8), "gpt2-124m": ("gpt2-124m", 1)}
KV_POLICIES: list[tuple[str, str, dict[str, Any]]] = [
    ("baseline", "causal", {}),
    ("kv_prune(h2o)", "kv_prune", {"keep_ratio": 0.382, "recency_frac": 0.0625, "policy": "h2o"}),
    ("kv_prune(oracle)", "kv_prune", {"keep_ratio": 0.382, "recency_frac": 0.0625, "policy": "oracle"}),
]
BATCH = {"tiny": 8, "small": 4}
BASELINE: tuple[str, dict[str, Any], str, dict[str, Any]] = ("causal", {}, "gelu", {})
MLA_REF: tuple[str, dict[str, Any], str, dict[str, Any]] = ("mla", {"latent_dim": 64}, "gelu", {})


@dataclass
class Variant:
    label: str
    attn: str
    attn_knobs: dict[str, Any]
    mlp: str
    mlp_knobs: dict[str, Any]
    ref: str = "baseline"
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    vs_base: list[float] = field(default_factory=list)
    vs_ref: list[float] = field(default_factory=list)
    cpu_vs_base: list[float] = field(default_factory=list)
    error: str | None = None


def variants() -> list[Variant]:
    out = [Variant("baseline", *BASELINE), Variant("mla+gelu (ref)", *MLA_REF)]
    for name in registry.names("attn"):
        if name == "causal":
            continue
        for suffix, knobs in KNOB_SETS.get(name, [("", {})]):
            if name == "mla" and suffix == "":
                continue  # that is the mla reference row
            out.append(Variant(f"{name}{suffix}", name, knobs, "gelu", {},
                               ref="mla+gelu (ref)" if name == "mla" else "baseline"))
    for name in registry.names("mlp"):
        if name == "gelu":
            continue
        for suffix, knobs in KNOB_SETS.get(name, [("", {})]):
            out.append(Variant(f"{name}{suffix}", "causal", {}, name, knobs))
    return out


def build(v: Variant, size: str, device: str) -> tuple[GPT, Variant]:
    shape: dict[str, Any] = dict(PRESETS[size], dropout=0.0, vocab_size=TOKENIZER_VOCAB["byte"])
    for attn, attn_knobs, ref in ((v.attn, v.attn_knobs, v.ref), *((("mla", MLA_REF[1], "mla+gelu (ref)"),)
                                                                   if v.attn == "causal" else ())):
        try:
            cfg = GPTConfig(**shape, attn=attn, attn_knobs=attn_knobs, mlp=v.mlp, mlp_knobs=v.mlp_knobs)
            torch.manual_seed(0)
            model = GPT(cfg).to(device)
        except (ValueError, TypeError) as e:
            v.error = str(e).splitlines()[0]
            continue
        v.attn, v.attn_knobs, v.ref, v.error = attn, attn_knobs, ref, None
        if attn == "mla" and v.mlp != "gelu":
            v.label = f"mla+{v.label}"
        return model, v
    raise ValueError(v.error)


def make_step(model: GPT, batch: tuple[torch.Tensor, torch.Tensor], device: str) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.optim_groups(0.1), lr=1e-4, fused=device == "cuda")
    x, y = batch
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, loss = model(x, y)
        else:
            _, loss = model(x, y)
        loss.backward()
        opt.step()

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_size(size: str, device: str, rounds: int, inner: int, warmup: int) -> list[dict[str, Any]]:
    T = int(str(PRESETS[size]["block_size"]))
    B = BATCH.get(size, 4) * (8 if device == "cuda" else 1)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, TOKENIZER_VOCAB["byte"], (B, T + 1), generator=g)
    batch = (idx[:, :-1].contiguous().to(device), idx[:, 1:].contiguous().to(device))
    live: list[tuple[Variant, Any]] = []
    failed: list[Variant] = []
    for v in variants():
        try:
            model, v = build(v, size, device)
        except ValueError:
            failed.append(v)
            continue
        step = make_step(model, batch, device)
        for _ in range(warmup):
            step()
        live.append((v, step))
    by_label = {v.label: (v, step) for v, step in live}
    base = by_label["baseline"]

    cpu_of: dict[str, float] = {}

    def timed(entry: tuple[Variant, Callable[[], None]]) -> float:
        sync(device)
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(inner):
            entry[1]()
        sync(device)
        cpu_of[entry[0].label] = (time.process_time() - c0) / inner
        return (time.perf_counter() - t0) / inner

    # each measurement times the variant right next to the baseline (and its reference), in
    # alternating order, so both sides of a ratio see the same load
    for r in range(rounds):
        for entry in live[r % len(live):] + live[: r % len(live)]:
            v = entry[0]
            group = [base, entry] + ([by_label[v.ref]] if v.ref not in ("baseline", v.label) else [])
            t = {e[0].label: timed(e) for e in (group if r % 2 == 0 else group[::-1])}
            v.times.append(t[v.label])
            v.cpu.append(cpu_of[v.label])
            v.cpu_vs_base.append(cpu_of[v.label] / cpu_of["baseline"])
            v.vs_base.append(t[v.label] / t["baseline"])
            v.vs_ref.append(t[v.label] / t.get(v.ref, t["baseline"]))
    rows = []
    for v, _ in live:
        row: dict[str, Any] = {
            "size": size, "variant": v.label, "attn": v.attn, "attn_knobs": v.attn_knobs,
            "mlp": v.mlp, "mlp_knobs": v.mlp_knobs, "ref": v.ref,
            "median_ms": 1e3 * statistics.median(v.times),
            "median_cpu_ms": 1e3 * statistics.median(v.cpu),
            "ratio_vs_baseline": statistics.median(v.vs_base),
            "ratio_vs_ref": statistics.median(v.vs_ref),
            "cpu_ratio_vs_baseline": statistics.median(v.cpu_vs_base),
            "rounds": len(v.times),
        }
        if len(v.times) >= 10 and v.label != "baseline":
            row["paired_vs_baseline"] = paired(v.vs_base)
            row["paired_cpu_vs_baseline"] = paired(v.cpu_vs_base)
            if v.ref != "baseline":
                row["paired_vs_ref"] = paired(v.vs_ref)
        rows.append(row)
    for v in failed:
        rows.append({"size": size, "variant": v.label, "attn": v.attn, "mlp": v.mlp, "error": v.error})
    return rows


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def bench_kv_policies(shape: str, device: str, steps: int, n_layer: int | None = None) -> list[dict[str, Any]]:
    """Training-step time of kv_prune h2o and oracle next to the baseline (alternating order
    per round), plus the no-grad selection alone for one layer (`kept_mask`). `n_layer`
    replaces the preset's depth (the 124M shape at T=1024 on a shared CPU: time 1 layer)."""
    preset, B = KV_SHAPES[shape]
    dims: dict[str, Any] = dict(PRESETS[preset], dropout=0.0, vocab_size=TOKENIZER_VOCAB["byte"])
    if n_layer is not None:
        dims["n_layer"] = n_layer
    T, H, E = int(dims["block_size"]), int(dims["n_head"]), int(dims["n_embd"])
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, TOKENIZER_VOCAB["byte"], (B, T + 1), generator=g)
    batch = (idx[:, :-1].contiguous().to(device), idx[:, 1:].contiguous().to(device))
    load_before = loadavg()
    entries = []
    for label, attn, knobs in KV_POLICIES:
        torch.manual_seed(0)
        model = GPT(GPTConfig(**dims, attn=attn, attn_knobs=knobs)).to(device)
        step = make_step(model, batch, device)
        step()  # warm (TorchScript compiles the h2o loop on its first calls)
        entries.append((label, model, step, []))
    for r in range(steps):
        for _label, _model, step, times in (entries if r % 2 == 0 else entries[::-1]):
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - t0)
    base = statistics.median(entries[0][3])
    q = torch.randn(B, H, T, E // H, device=device)
    k = torch.randn(B, H, T, E // H, device=device)
    rows = []
    for label, model, _step, times in entries:
        row: dict[str, Any] = {"shape": shape, "batch": B, "T": T, "n_layer": dims["n_layer"],
                               "variant": label, "steps": len(times),
                               "median_ms": 1e3 * statistics.median(times),
                               "ratio_vs_baseline": statistics.median(times) / base}
        attn = model.transformer.h[0].attn
        if hasattr(attn, "kept_mask"):
            n = attn.keep_count(T)
            attn.kept_mask(q, k, n)
            sel = []
            for _ in range(3):
                sync(device)
                t0 = time.perf_counter()
                attn.kept_mask(q, k, n)
                sync(device)
                sel.append(time.perf_counter() - t0)
            row["selection_ms_per_layer"] = 1e3 * statistics.median(sel)
            row["keep_k"], row["recency"] = n, attn.knobs.recency_at(T)
        rows.append(row)
    for row in rows:
        row["loadavg_before"], row["loadavg_after"] = load_before, loadavg()
    return rows


def render_kv(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'shape':10} {'L':>2} {'B':>2} {'T':>5} {'variant':18} {'ms/step':>9} {'x baseline':>10} "
             f"{'select ms/layer':>15}  loadavg"]
    for r in rows:
        sel = f"{r['selection_ms_per_layer']:.1f}" if "selection_ms_per_layer" in r else "-"
        lines.append(f"{r['shape']:10} {r['n_layer']:>2} {r['batch']:>2} {r['T']:>5} {r['variant']:18} {r['median_ms']:9.1f} "
                     f"{r['ratio_vs_baseline']:10.3f} {sel:>15}  {r['loadavg_before']} -> {r['loadavg_after']}")
    return "\n".join(lines)


def render(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'size':6} {'variant':34} {'ms/step':>9} {'cpu ms':>8} {'x baseline':>10} {'95% CI':>13} "
             f"{'p':>8} {'cpu x':>6} {'x ref':>7}  ref"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['size']:6} {r['variant']:34} {'-':>9} {'-':>8} {'-':>10} {'-':>13} {'-':>8} "
                         f"{'-':>6} {'-':>7}  error: {r['error']}")
            continue
        st = r.get("paired_vs_baseline")
        ci = f"{st['ci95'][0]:.3f}-{st['ci95'][1]:.3f}" if st else "-"
        pv = f"{st['wilcoxon_p']:.2g}" if st and st["wilcoxon_p"] is not None else "-"
        lines.append(f"{r['size']:6} {r['variant']:34} {r['median_ms']:9.1f} {r.get('median_cpu_ms', float('nan')):8.1f} "
                     f"{r['ratio_vs_baseline']:10.3f} {ci:>13} {pv:>8} {r.get('cpu_ratio_vs_baseline', float('nan')):6.3f} "
                     f"{r['ratio_vs_ref']:7.3f}  {r['ref']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, noisier)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--rounds", type=int, default=None, help="paired rounds (default 9; 3 with --quick)")
    ap.add_argument("--inner", type=int, default=None,
                    help="timed steps per visit (default 2; 1 with --quick); x5 on CUDA")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 is steadier on a shared machine); default: torch's")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "mechanisms.json"))
    ap.add_argument("--kv", default=None, metavar="SHAPES",
                    help="only the KV-pruning policies (h2o, oracle) vs the baseline at these shapes, "
                         f"comma-separated from {','.join(KV_SHAPES)}; results in bench/results/kv_policies.json")
    ap.add_argument("--kv-steps", type=int, default=4, help="timed steps per variant with --kv")
    ap.add_argument("--kv-layers", type=int, default=None, help="replace the presets' depth with --kv")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.kv:
        kv_rows: list[dict[str, Any]] = []
        for shape in args.kv.split(","):
            kv_rows += bench_kv_policies(shape.strip(), args.device, args.kv_steps, args.kv_layers)
            print(render_kv(kv_rows), flush=True)
        kv_out = Path(args.out).with_name("kv_policies.json")
        kv_out.parent.mkdir(parents=True, exist_ok=True)
        kv_out.write_text(json.dumps({"device": args.device, "threads": torch.get_num_threads(),
                                      "torch": torch.__version__, "rows": kv_rows}, indent=2) + "\n")
        print(f"wrote {kv_out}")
        return
    rounds = args.rounds or (3 if args.quick else 9)
    inner, warmup = (1, 2) if args.quick else (2, 3)
    if args.inner is not None:
        if args.inner < 1:
            ap.error("--inner must be >= 1")
        inner = args.inner
    if args.device == "cuda":
        inner, warmup = inner * 5, warmup * 5
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    load_before = loadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for size in args.sizes.split(","):
        rows += bench_size(size.strip(), args.device, rounds, inner, warmup)
    print(render(rows))
    print(f"threads {torch.get_num_threads()} | rounds {rounds} | inner {inner} | "
          f"load average {load_before} -> {loadavg()} | started {started}")
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "tokenizer": "byte",
        "vocab_size": TOKENIZER_VOCAB["byte"], "batch": {s: BATCH.get(s, 4) for s in args.sizes.split(",")},
        "rounds": rounds, "inner": inner, "quick": args.quick, "seconds": round(time.time() - t0, 1),
        "started_at": started, "loadavg_before": load_before, "loadavg_after": loadavg(),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
