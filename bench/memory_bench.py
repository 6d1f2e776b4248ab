"""Peak memory of one training step (forward + backward + AdamW step) per variant, relative
to the baseline.

    python -m bench.memory_bench [--quick] [--device cpu|cuda] [--sizes tiny,small]

The variants, batches and vocabulary are bench/mechanisms_bench.py's (every registered
attention and MLP mechanism and its knob sets; byte tokenizer, so the blocks dominate).

CPU: each variant runs in a forked child of a parent that imported torch and did no tensor
work (so the child starts with no allocator state and OpenMP is safe); the child runs a micro
baseline once (torch maps its kernels' code on first use), resets its peak RSS
(`/proc/self/clear_refs`, 5), builds the model, runs forward + backward, and reports
VmHWM - VmRSS-at-start: parameters + gradients + activations + AdamW's two moments +
allocator slack. The child fixes glibc's mmap threshold at 128 KiB (`mallopt`), which also
turns off its dynamic threshold: with it on, a freed large tensor raised the threshold and
later ones came from the brk heap, whose fragmentation made the same variant's peak differ by
up to 25 % between runs (2026-12-04); fixed, every tensor over 128 KiB is its own mapping,
returned on free, so the high-water mark tracks the live bytes.
CUDA: in process, `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`,
bf16 autocast as the trainer uses it. Writes bench/results/memory.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.mechanisms_bench import BATCH, Variant, build, variants
from models.presets import PRESETS, TOKENIZER_VOCAB

RESULTS = Path(__file__).parent / "results" / "memory.json"
MB = 2**20


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _batch(size: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    T = int(str(PRESETS[size]["block_size"]))
    B = BATCH.get(size, 4)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, TOKENIZER_VOCAB["byte"], (B, T + 1), generator=g)
    return idx[:, :-1].contiguous().to(device), idx[:, 1:].contiguous().to(device)


def _fwd_bwd(v: Variant, size: str, device: str) -> dict[str, Any]:
    model, v = build(v, size, device)
    x, y = _batch(size, device)
    model.train()
    if device == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = model(x, y)
    else:
        _, loss = model(x, y)
    loss.backward()
    # the optimizer step of a training step: AdamW's two moments per parameter (2 x params)
    torch.optim.AdamW(model.optim_groups(0.1), lr=1e-4, fused=device == "cuda").step()
    params = sum(p.numel() for p in model.parameters())
    return {"label": v.label, "attn": v.attn, "mlp": v.mlp, "params": params,
            "param_mb": params * 4 / MB}


def _warm_kernels() -> None:
    """A micro baseline forward + backward, so that the code pages torch maps on first use
    of its common kernels are resident before the measurement, not counted in it."""
    from models.config import GPTConfig
    from models.gpt2 import GPT

    m = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32, dropout=0.0))
    idx = torch.zeros((2, 8), dtype=torch.long)
    m(idx, idx)[1].backward()


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD = 128 * 1024


def _fix_mmap_threshold() -> bool:
    """glibc: allocations over 128 KiB always mmapped (and the dynamic threshold off)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def _cpu_child(v: Variant, size: str) -> dict[str, Any]:
    """Fork; measure in the child; the child's dict comes back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        out: dict[str, Any]
        try:
            torch.set_num_threads(1)
            fixed = _fix_mmap_threshold()
            _warm_kernels()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            start = _status_kb("VmRSS")
            out = _fwd_bwd(v, size, "cpu")
            out["peak_mb"] = (_status_kb("VmHWM") - start) / 1024
            out["mmap_threshold_fixed"] = fixed
        except Exception as e:  # noqa: BLE001 - reported as the row's error
            out = {"label": v.label, "attn": v.attn, "mlp": v.mlp, "error": f"{type(e).__name__}: {e}"[:200]}
        os.write(w, json.dumps(out).encode())
        os.close(w)
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return dict(json.loads(b"".join(chunks)))


def _cuda(v: Variant, size: str) -> dict[str, Any]:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    try:
        out = _fwd_bwd(v, size, "cuda")
    except Exception as e:  # noqa: BLE001
        return {"label": v.label, "attn": v.attn, "mlp": v.mlp, "error": f"{type(e).__name__}: {e}"[:200]}
    out["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / MB
    return out


def bench_size(size: str, device: str, only: set[str] | None) -> list[dict[str, Any]]:
    rows = []
    for v in variants():
        if only is not None and v.label not in only:
            continue
        row = _cpu_child(v, size) if device == "cpu" else _cuda(v, size)
        rows.append({"size": size, **row})
    base = next((r for r in rows if r["label"] == "baseline" and "peak_mb" in r), None)
    for r in rows:
        if base is not None and "peak_mb" in r:
            r["ratio_vs_baseline"] = r["peak_mb"] / base["peak_mb"]
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'size':6} {'variant':34} {'params':>10} {'peak MB':>9} {'x baseline':>10}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['size']:6} {r['label']:34} {'-':>10} {'-':>9} {'-':>10}  error: {r['error']}")
            continue
        lines.append(f"{r['size']:6} {r['label']:34} {r['params']:>10,} {r['peak_mb']:>9.1f} "
                     f"{r.get('ratio_vs_baseline', float('nan')):>10.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny only")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default=None, help="default tiny,small (tiny with --quick)")
    ap.add_argument("--variants", default=None, help="comma-separated labels (default: all)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    sizes = (args.sizes or ("tiny" if args.quick else "tiny,small")).split(",")
    only = set(args.variants.split(",")) if args.variants else None
    if args.device == "cpu" and not sys.platform.startswith("linux"):
        ap.error("--device cpu needs Linux (/proc/self/clear_refs)")
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    for size in sizes:
        rows += bench_size(size.strip(), args.device, only)
    print(render(rows))
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "measure": "cuda max_memory_allocated" if args.device == "cuda" else "VmHWM - VmRSS at start (forked child)",
        "torch": torch.__version__, "tokenizer": "byte", "batch": {s: BATCH.get(s, 4) for s in sizes},
        "load_avg": os.getloadavg()[0], "seconds": round(time.time() - t0, 1), "host": platform.node(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
