"""The attempt contract: files a `run_attempt` process writes into its OUTDIR.

No torch import: the WorkerLoop reads these too.

    config.json     the resolved run config (input, written by the worker before spawning)
    metrics.jsonl   append-only; one JSON object per line:
                    {"iter": int, "tokens": int, "train_s": float, "values": {name: float}}
    progress.json   rewritten atomically (tmp + os.replace) at every log interval:
                    {"phase", "iter", "tokens", "train_s", "wall_s", "fraction", "eta_s",
                     "loss", "val_loss", "best_val_loss", "lr", "pid", "updated_at"}
    result.json     written atomically once, at the end: see RESULT_KEYS
    checkpoint.pt   atomic; model, optimizer, RNG, data position, clock, loop state
    checkpoint.prev.pt  the checkpoint the newest one replaced (fallback when it is unreadable)
    stdout.log      the process's stdout+stderr (written by the worker)

Metric names: "loss" (train loss per log interval), "lr", "tokens_per_s", "grad_norm",
"train_loss"/"val_loss" (eval estimates), "spam/spikes", "spam/resets", "coupling_scale",
"stats/<module>.<stat>/L<i>" (mechanism statistics), "grad/<module>.<scalar>/L<i>";
added by the trainer: "val_ppl", "best_val_loss", "spam/clipped", "dt_ms", and the values a
mechanism's post_train() returns (at the final iteration, also in result.json["post_train"]).

Environment: RECIP_THREADS=k (set by the worker pool on a CPU slot of k cores, with
OMP_NUM_THREADS=k) makes the attempt use k torch threads; result.json["precision"]["threads"]
records what it used.

Exit codes: 0 succeeded; 1 failed (result.json says why); 3 interrupted by SIGTERM/SIGINT
after writing a checkpoint (the worker re-queues the same attempt); 4 disk full with no room
for result.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONFIG = "config.json"
METRICS = "metrics.jsonl"
PROGRESS = "progress.json"
RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"  # the good checkpoint the newest one replaced
LOG = "stdout.log"

THREADS_ENV = "RECIP_THREADS"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 3
EXIT_DISK_FULL = 4  # the disk filled up and even result.json could not be written

# status values in result.json
STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"          # an exception; error_type/error_message say which
STATUS_DIVERGED = "diverged"      # NaN/inf loss at `iters`
STATUS_OOM = "oom"                # out of memory
STATUS_INTERRUPTED = "interrupted"
STATUS_DISK_FULL = "disk_full"    # ENOSPC/EDQUOT; error_message names the path and free space

RESULT_KEYS = (
    "status", "error_type", "error_message", "final_val_loss", "best_val_loss",
    "best_val_iter", "final_train_loss", "iters", "tokens", "train_s", "wall_s", "compile_s",
    "final_lr", "effective_batch_tokens", "tokens_per_s", "peak_mem_mb", "params", "seed",
    "device", "torch_version", "config_hash", "resumed_from_iter", "spam", "precision",
    # added by the trainer (additive): exception traceback, mechanisms' post_train values,
    # the prepared dataset, process facts
    "traceback", "post_train", "dataset", "pid", "host", "started_at", "finished_at",
    # added by the performance work (additive): 6N + 12LHQT training FLOPs per token, the
    # device's dense bf16 peak and MFU (both None off CUDA/bf16 or on an unknown device)
    "flops_per_token", "peak_flops", "mfu",
    # added by the checkpoint fallback (additive): {"skipped": [{path, error}], "resumed_from":
    # path or None, "fresh_start": bool} when an unreadable checkpoint was passed over
    "checkpoint_fallback",
)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to `path` via a temp file in the same directory and os.replace (the temp
    file is removed when the write fails)."""
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk leaves no half-written temp file behind
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or half-written."""
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
