"""The attempt contract: files a `run_attempt` process writes into its OUTDIR.

No torch import: the WorkerLoop reads these too. The three JSON files have one schema each,
the TypedDicts below: the writers (run_attempt, the trainer's sinks and progress callback)
build them, the readers (`read_result`, `read_progress`, `parse_metric_record`) return them
or None, so no other module spells a key or a status string.

    config.json     the resolved run config (input, written by the worker before spawning)
    metrics.jsonl   append-only; one `MetricRecord` per line
    progress.json   rewritten atomically (tmp + os.replace) at every log interval: `Progress`
    result.json     written atomically once, at the end: `Result` (keys: RESULT_KEYS)
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
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, TypedDict, cast, get_args

CONFIG = "config.json"
METRICS = "metrics.jsonl"
PROGRESS = "progress.json"
RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"  # the good checkpoint the newest one replaced
LOG = "stdout.log"
ATTEMPT_INFO = "attempt.json"     # written by the worker: attempt id/number, code commit

THREADS_ENV = "RECIP_THREADS"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 3
EXIT_DISK_FULL = 4  # the disk filled up and even result.json could not be written

# status values in result.json
Status = Literal["succeeded", "failed", "diverged", "oom", "interrupted", "disk_full"]
STATUS_SUCCEEDED: Final = "succeeded"
STATUS_FAILED: Final = "failed"          # an exception; error_type/error_message say which
STATUS_DIVERGED: Final = "diverged"      # NaN/inf loss at `iters`
STATUS_OOM: Final = "oom"                # out of memory
STATUS_INTERRUPTED: Final = "interrupted"
STATUS_DISK_FULL: Final = "disk_full"    # ENOSPC/EDQUOT; error_message names the path and free space
STATUSES: frozenset[str] = frozenset(get_args(Status))


class MetricRecord(TypedDict):
    """One line of metrics.jsonl; None marks a non-finite value (JSON has no NaN)."""

    iter: int
    tokens: int
    train_s: float
    values: dict[str, float | None]


# what a sink is handed for one record
MetricValues = Mapping[str, float | None]


class Progress(TypedDict, total=False):
    """progress.json. `phase`: preparing_data, training, eval, checkpoint, post_train, then
    the final status; `pid`/`updated_at` are added by run_attempt."""

    phase: str
    iter: int
    tokens: int
    train_s: float
    wall_s: float
    fraction: float
    eta_s: float | None
    loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    lr: float | None
    eval_s: float
    pid: int
    updated_at: str


class Result(TypedDict):
    """result.json: every key is always present (None when unknown)."""

    status: Status
    error_type: str | None
    error_message: str | None
    final_val_loss: float | None
    best_val_loss: float | None
    best_val_iter: int | None
    final_train_loss: float | None
    iters: int | None
    tokens: int | None
    train_s: float | None
    wall_s: float | None
    compile_s: float | None
    final_lr: float | None
    effective_batch_tokens: int | None
    tokens_per_s: float | None
    peak_mem_mb: float | None
    params: dict[str, int] | None
    seed: int | None
    device: str | None
    torch_version: str | None
    config_hash: str | None
    resumed_from_iter: int | None
    spam: dict[str, Any] | None
    precision: dict[str, Any] | None
    # added by the trainer (additive): exception traceback, mechanisms' post_train values,
    # the prepared dataset, process facts
    traceback: str | None
    post_train: dict[str, float] | None
    dataset: dict[str, Any] | None
    pid: int | None
    host: str | None
    started_at: str | None
    finished_at: str | None
    # added by the performance work (additive): 6N + 12LHQT training FLOPs per token, the
    # device's dense bf16 peak and MFU (both None off CUDA/bf16 or on an unknown device)
    flops_per_token: float | None
    peak_flops: float | None
    mfu: float | None
    # added by the dashboard's timing (additive): wall seconds in evals and post-train evals,
    # outside train_s, summed over the attempts a checkpoint chain resumed through
    eval_s: float | None
    # added by the checkpoint fallback (additive): {"skipped": [{path, error}], "resumed_from":
    # path or None, "fresh_start": bool} when an unreadable checkpoint was passed over
    checkpoint_fallback: dict[str, Any] | None


RESULT_KEYS: tuple[str, ...] = tuple(Result.__annotations__)


def new_result(**known: Any) -> Result:
    """A result with every key None except `known`; status `failed` until the end says else."""
    result = cast(Result, dict.fromkeys(RESULT_KEYS))
    result["status"] = STATUS_FAILED
    update_result(result, **known)
    return result


def update_result(result: Result, **values: Any) -> None:
    """Set result keys; a key that `Result` does not declare is a KeyError (no silent typo)."""
    unknown = sorted(set(values) - set(RESULT_KEYS))
    if unknown:
        raise KeyError(f"{unknown} not result.json keys (see workers/train/artifacts.py Result)")
    if "status" in values and values["status"] not in STATUSES:
        raise ValueError(f"result status {values['status']!r} is not one of {sorted(STATUSES)}")
    cast(dict[str, Any], result).update(values)


def read_result(outdir: Path) -> Result | None:
    """result.json of `outdir`, or None when missing, half-written, or without a known status
    (a result from a newer trainer may carry more keys; missing ones read as None)."""
    data = read_json(outdir / RESULT)
    if not isinstance(data, dict) or data.get("status") not in STATUSES:
        return None
    return cast(Result, {**dict.fromkeys(RESULT_KEYS), **data})


def read_progress(outdir: Path) -> Progress | None:
    """progress.json of `outdir`, or None when missing or half-written."""
    data = read_json(outdir / PROGRESS)
    return cast(Progress, data) if isinstance(data, dict) else None


def parse_metric_record(data: object) -> MetricRecord | None:
    """A decoded metrics.jsonl line as a MetricRecord, or None when it is not one (values
    that are not numbers become None)."""
    if not isinstance(data, dict):
        return None
    step, values = data.get("iter"), data.get("values")
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(values, dict):
        return None
    clean: dict[str, float | None] = {}
    for name, raw in values.items():
        number = isinstance(raw, int | float) and not isinstance(raw, bool)
        clean[str(name)] = float(raw) if number and math.isfinite(raw) else None
    tokens, train_s = data.get("tokens"), data.get("train_s")
    return MetricRecord(iter=step, tokens=tokens if isinstance(tokens, int) else 0,
                        train_s=float(train_s) if isinstance(train_s, int | float) else 0.0,
                        values=clean)


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
