"""Device and precision, chosen and applied by the trainer, never at import time.

design.md §4 and §8: CUDA when present (bf16 autocast, TF32 matmuls, fused AdamW, pinned
async batch copies, optional torch.compile), else CPU float32. Whatever is set here is
recorded in result.json["precision"].
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.train.artifacts import THREADS_ENV


@dataclass
class DeviceSetup:
    device: torch.device
    dtype: torch.dtype                    # autocast dtype (float32 = no autocast)
    fused_adamw: bool
    compile: bool
    precision: dict[str, Any] = field(default_factory=dict)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def sync(self) -> Callable[[], None] | None:
        if self.is_cuda:
            return lambda: torch.cuda.synchronize(self.device)
        return None


def cpu_threads(environ=os.environ) -> int | None:
    """The torch thread count the worker gave this attempt ($RECIP_THREADS), else None."""
    raw = environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"${THREADS_ENV}={raw!r}: expected a positive number of threads")
    return int(raw)


def setup_device(device: str = "auto", dtype: str = "auto", compile: bool = False) -> DeviceSetup:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {device!r} but no CUDA device is visible; "
                         "use device: auto or cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"train.device must be auto, cpu or cuda[:N], got {device!r}")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())

    if dtype == "auto":
        dtype = "bfloat16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]

    # a CPU worker slot of k cores gives its attempts k threads (workers/pool.py)
    threads = cpu_threads()
    if threads is not None:
        torch.set_num_threads(threads)

    tf32 = False
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        tf32 = True
    # torch.compile on CPU needs a C++ toolchain and minutes of inductor work per graph on
    # these small machines; it is a CUDA option (design.md §4), so a CPU run ignores it
    use_compile = compile and dev.type == "cuda"
    setup = DeviceSetup(device=dev, dtype=torch_dtype, fused_adamw=dev.type == "cuda", compile=use_compile)
    setup.precision = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "autocast_dtype": dtype if torch_dtype != torch.float32 else None,
        "param_dtype": "float32",
        "tf32": tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "fused_adamw": setup.fused_adamw,
        "compile": use_compile,
        "compile_requested": compile,
        "threads": torch.get_num_threads(),
        "threads_from": THREADS_ENV if threads is not None else
        ("OMP_NUM_THREADS" if os.environ.get("OMP_NUM_THREADS") else "torch default"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch_version": torch.__version__,
    }
    return setup
