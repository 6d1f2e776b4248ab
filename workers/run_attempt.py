"""`python -m workers.run_attempt CONFIG.json OUTDIR [--resume-from DIR]`: one attempt.

Reads the resolved run config, prepares (or reuses) the data, builds the model, resumes
from OUTDIR/checkpoint.pt when present (else from a previous attempt's checkpoint, which is
copied, never modified, together with that attempt's metrics.jsonl records up to the
checkpoint's iteration, so the new attempt's metrics cover the whole run), trains under the
budget and writes the files of workers/train/artifacts.py. Exit 0 succeeded, 1 failed/diverged/oom/disk_full (result.json
says why, with the traceback of an exception), 3 interrupted by SIGTERM/SIGINT after a checkpoint, 4 disk full with no room
left for result.json. A full disk (ENOSPC/EDQUOT anywhere, also wrapped by torch) removes the attempt's temp files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator.core import ids
from orchestrator.core.ids import config_hash
from workers.train import artifacts, disk

EXIT_FOR_STATUS = {
    artifacts.STATUS_SUCCEEDED: artifacts.EXIT_OK,
    artifacts.STATUS_INTERRUPTED: artifacts.EXIT_INTERRUPTED,
}


class Interrupted(BaseException):
    """SIGTERM/SIGINT before training started: nothing to checkpoint, so stop at once."""


class StopFlag:
    """Set by SIGTERM/SIGINT; the training loop polls it once per iteration. Before the loop
    starts (imports, data, model, resume copy) a signal stops the process at once, so an
    orphaned attempt never outlives its worker's lease while it is still starting up."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.starting = True

    def __call__(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        if self.starting:
            self.starting = False
            print(f"received signal {signum} before training started: stopping now", flush=True)
            raise Interrupted(signum)
        print(f"received signal {signum}: finishing the iteration, then checkpointing", flush=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _code_sha(outdir: Path) -> str:
    """The commit the worker recorded in attempt.json, else $RECIP_CODE_SHA, else unknown."""
    info = artifacts.read_json(outdir / artifacts.ATTEMPT_INFO)
    sha = info.get("code_sha") if isinstance(info, dict) else None
    return str(sha or os.environ.get("RECIP_CODE_SHA") or "unknown")


def _wandb_ids(outdir: Path, study: str, step: str, seed: int, chash: str) -> tuple[str, str]:
    """(W&B run id, run name): the ones the worker wrote into attempt.json (built by
    `orchestrator.core.ids` from the database, the run and the attempt number), else, for an
    attempt started by hand, the same builder keyed by this directory's absolute path."""
    info = artifacts.read_json(outdir / "attempt.json")
    if isinstance(info, dict) and info.get("wandb_run_id") and info.get("wandb_run_name"):
        return str(info["wandb_run_id"]), str(info["wandb_run_name"])
    no = info.get("attempt_no") if isinstance(info, dict) else None
    attempt_no = int(no) if isinstance(no, int) and no >= 1 else 1
    return (ids.wandb_run_id(db_identity=f"dir:{outdir.resolve()}", study=study, step=step,
                             seed=seed, config_hash=chash, attempt_no=attempt_no),
            ids.wandb_run_name(study, step, seed, attempt_no))


def carry_metrics(src: Path, dst: Path, upto: int) -> int:
    """Copy the records of iterations <= `upto` from a previous attempt's metrics.jsonl into
    a new `dst` (atomically), so an attempt resumed from that attempt's checkpoint holds the
    run's whole series; returns how many. A half-written last line is skipped."""
    if dst.exists() or not src.is_file():
        return 0
    kept = []
    for line in src.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("iter"), int) and record["iter"] <= upto:
            kept.append(line + "\n")
    tmp = dst.with_name(f".{dst.name}.tmp.{os.getpid()}")
    tmp.write_text("".join(kept))
    os.replace(tmp, dst)
    return len(kept)


def _peak_mem_mb(cuda: bool) -> float:
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _is_oom(exc: BaseException) -> bool:
    """CUDA OOM, or a host allocation that failed (torch's CPU allocator, MemoryError).
    Never imports anything: torch may be the half-imported module that failed."""
    torch = sys.modules.get("torch")
    oom_types: tuple[type[BaseException], ...] = (MemoryError,)
    if torch is not None and isinstance(getattr(torch, "OutOfMemoryError", None), type):
        oom_types += (torch.OutOfMemoryError,)
    text = str(exc).lower()
    return (isinstance(exc, oom_types) or "out of memory" in text
            or "can't allocate memory" in text or "cannot allocate memory" in text)


def _caused_by_interrupt(exc: BaseException) -> bool:
    """True when a stop signal's Interrupted was raised inside something (an import of a C
    extension, say) that turned it into another exception."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, Interrupted):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def run(config_path: Path, outdir: Path, resume_from: Path | None = None) -> int:
    """Run one attempt; always writes result.json; returns the exit code."""
    outdir.mkdir(parents=True, exist_ok=True)
    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop.handle)
    signal.signal(signal.SIGINT, stop.handle)
    result = artifacts.new_result(pid=os.getpid(), host=platform.node(), started_at=_now())

    def progress(p: artifacts.Progress) -> None:
        record: artifacts.Progress = {**p, "pid": os.getpid(), "updated_at": _now()}
        artifacts.write_json_atomic(outdir / artifacts.PROGRESS, record)

    try:
        _train_attempt(config_path, outdir, resume_from, stop, result, progress)
    except Interrupted:
        artifacts.update_result(result, status=artifacts.STATUS_INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - recorded in result.json, never swallowed
        stop.starting = False
        if _caused_by_interrupt(e):
            artifacts.update_result(result, status=artifacts.STATUS_INTERRUPTED)
            return _finish(outdir, result)
        full = disk.find_disk_full(e)
        if full is not None:
            disk.remove_temp_files(outdir)
            artifacts.update_result(result, status=artifacts.STATUS_DISK_FULL, error_type="DiskFull",
                          error_message=disk.describe(full.filename or outdir, outdir),
                          traceback=traceback.format_exc())
        else:
            message = str(e).strip()
            artifacts.update_result(
                result,
                status=artifacts.STATUS_OOM if _is_oom(e) else artifacts.STATUS_FAILED,
                error_type=type(e).__name__, error_message=message[:2000] or type(e).__name__,
                traceback=traceback.format_exc(),
            )
        _quietly(traceback.print_exc)
    return _finish(outdir, result)


def _quietly(fn: Callable[[], object]) -> None:
    """Run a print to stdout.log, which may sit on the disk that just filled up."""
    try:
        fn()
    except OSError:
        pass


def _finish(outdir: Path, result: artifacts.Result) -> int:
    result["finished_at"] = _now()
    try:
        artifacts.write_json_atomic(outdir / artifacts.RESULT, result)
    except OSError as e:
        if disk.find_disk_full(e) is None:
            raise
        disk.remove_temp_files(outdir)  # no room even for result.json: the exit code says it
        _quietly(lambda: print(disk.describe(outdir / artifacts.RESULT), flush=True))
        return artifacts.EXIT_DISK_FULL
    code = EXIT_FOR_STATUS.get(result["status"], artifacts.EXIT_FAILED)
    _quietly(lambda: print(f"attempt {result['status']} (exit {code})", flush=True))
    return code


def _train_attempt(config_path: Path, outdir: Path, resume_from: Path | None, stop: StopFlag,
                   result: artifacts.Result, progress: Callable[[artifacts.Progress], None]
                   ) -> None:
    # heavy imports here, after the signal handlers are in place
    import numpy as np
    import torch

    from models.gpt2 import GPT
    from workers.data.prepare import locate, prepare
    from workers.train.budget import Clock
    from workers.train.checkpoint import pick_readable, previous_path, restore_checkpoint
    from workers.train.config import TrainConfig
    from workers.train.data import Batches
    from workers.train.device import setup_device
    from workers.train.loop import train
    from workers.train.mfu import mfu, model_flops_per_token, peak_bf16_flops
    from workers.train.optim import build_optimizer
    from workers.train.sinks import JsonlSink, MetricsSink, TeeSink, WandbSink

    raw = json.loads(config_path.read_text())
    cfg = TrainConfig.from_dict(raw)
    chash = config_hash(raw)
    artifacts.update_result(result, seed=cfg.seed, config_hash=chash, torch_version=torch.__version__)

    # -- data
    progress({"phase": "preparing_data", "iter": 0, "tokens": 0, "train_s": 0.0})
    d = cfg.data
    info = locate(d.dataset, d.tokenizer, config=d.config, tokens=d.tokens) or \
        prepare(d.dataset, d.tokenizer, config=d.config, tokens=d.tokens)
    result["dataset"] = {"path": str(info.path), "dataset": info.dataset, "tokenizer": info.tokenizer,
                         "train_tokens": info.train_tokens, "val_tokens": info.val_tokens}
    gcfg = cfg.gpt_config()
    if gcfg.vocab_size < info.vocab_size:
        raise ValueError(f"model.vocab_size {gcfg.vocab_size} < tokenizer {info.tokenizer} vocabulary "
                         f"{info.vocab_size}; drop model.vocab_size to use the tokenizer's")

    # -- model, optimizer, batches, clock (seeded: same seed = same init and batches)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    dev = setup_device(cfg.train.device, cfg.train.dtype, cfg.train.compile)
    artifacts.update_result(result, device=dev.precision["device_name"] if dev.is_cuda else "cpu", precision=dev.precision)
    model = GPT(gcfg).to(dev.device)
    result["params"] = model.param_counts()
    optimizer = build_optimizer(model, cfg, fused=dev.fused_adamw)
    batches = Batches(info.path, gcfg.block_size, cfg.train.batch_size, cfg.seed, dev.device)
    clock = Clock(sync=dev.sync)

    # -- resume: this attempt's own checkpoint, else a copy of a previous attempt's. An
    # unreadable newest checkpoint falls back to the one it replaced, then to a fresh start;
    # result.json["checkpoint_fallback"] says which (the worker records it as an event)
    ckpt = outdir / artifacts.CHECKPOINT
    previous: Path | None = None
    state: dict[str, Any] | None = None
    skipped: list[dict[str, str]] = []
    own = [ckpt, previous_path(ckpt)]
    if any(p.exists() for p in own):
        chosen, state, skipped = pick_readable(own)
        for bad in skipped:  # kept for a post-mortem, never picked again
            os.replace(bad["path"], f"{bad['path']}.unreadable")
        if chosen is not None and chosen != ckpt:
            os.replace(chosen, ckpt)
    elif resume_from is not None:
        src = resume_from / artifacts.CHECKPOINT if resume_from.is_dir() else resume_from
        if not src.is_file() and not previous_path(src).is_file():
            raise FileNotFoundError(f"--resume-from {resume_from}: no checkpoint at {src}")
        chosen, state, skipped = pick_readable([src, previous_path(src)])
        if chosen is not None:  # copied, never modified
            tmp = ckpt.with_name(f".{ckpt.name}.copy.{os.getpid()}")
            try:
                shutil.copyfile(chosen, tmp)
                os.replace(tmp, ckpt)
            finally:
                tmp.unlink(missing_ok=True)
            previous = chosen.parent
    if skipped:
        used = str(ckpt) if state is not None else None
        result["checkpoint_fallback"] = {"skipped": skipped, "resumed_from": used,
                                         "fresh_start": state is None}
        for bad in skipped:
            print(f"warning: {bad['error']}", flush=True)
        print("falling back to " + (f"the previous checkpoint ({used})" if used
                                    else "a fresh start: no readable checkpoint"), flush=True)
    loop_state = None
    if state is not None:
        loop_state = restore_checkpoint(state, ckpt, model=model, optimizer=optimizer,
                                        batches=batches, clock=clock)
        print(f"resumed from {ckpt} at iteration {loop_state['it']}", flush=True)
        if previous is not None:  # the run's metrics up to the checkpoint come along with it
            n = carry_metrics(previous / artifacts.METRICS, outdir / artifacts.METRICS, loop_state["it"])
            print(f"carried {n} metric records (iterations <= {loop_state['it']}) from {previous}", flush=True)

    # -- sinks
    sinks: list[MetricsSink] = [JsonlSink(outdir / artifacts.METRICS)]
    if cfg.wandb.mode != "disabled":
        run_id, run_name = _wandb_ids(outdir, cfg.study, cfg.step, cfg.seed, chash)
        sinks.append(WandbSink(
            run_id=run_id, name=run_name, study=cfg.study, step=cfg.step,
            mode=cfg.wandb.mode, project=cfg.wandb.project, entity=cfg.wandb.entity,
            directory=outdir, config=raw,
            tags=[f"study:{cfg.study[:58]}", f"step:{cfg.step[:59]}", f"seed:{cfg.seed}",
                  f"attempt:{run_name.rsplit('/attempt', 1)[-1]}", f"config:{chash[:12]}",
                  f"commit:{_code_sha(outdir)[:12]}"]))
    sink = TeeSink(*sinks)

    stop.starting = False  # from here a signal finishes the iteration and checkpoints
    try:
        out = train(cfg, model, optimizer, batches, clock, sink, device=dev, ckpt_path=ckpt,
                    resume=loop_state, progress=progress, stop=stop,
                    log=lambda line: print(line, flush=True))
    finally:
        sink.close()
    statuses: dict[str, artifacts.Status] = {"succeeded": artifacts.STATUS_SUCCEEDED,
                                             "diverged": artifacts.STATUS_DIVERGED,
                                             "interrupted": artifacts.STATUS_INTERRUPTED}
    status = statuses[out.status]
    artifacts.update_result(result, 
        status=status, error_type="Diverged" if out.status == "diverged" else None,
        error_message=out.error_message, final_val_loss=out.final_val_loss,
        best_val_loss=out.best_val_loss, best_val_iter=out.best_val_iter,
        final_train_loss=out.final_train_loss, iters=out.iters, tokens=out.tokens,
        train_s=round(out.train_s, 3), wall_s=round(out.wall_s, 3), compile_s=round(out.compile_s, 3),
        eval_s=round(out.eval_s, 3),
        final_lr=out.final_lr, effective_batch_tokens=out.effective_batch_tokens,
        tokens_per_s=round(out.tokens_per_s, 1), peak_mem_mb=round(_peak_mem_mb(dev.is_cuda), 1),
        resumed_from_iter=out.resumed_from_iter, spam=out.spam, post_train=out.post_train,
    )
    fpt = model_flops_per_token(model)
    peak = peak_bf16_flops(dev.precision["device_name"]) if dev.is_cuda and dev.dtype == torch.bfloat16 else None
    artifacts.update_result(result, flops_per_token=fpt, peak_flops=peak,
                  mfu=None if (m := mfu(fpt, out.tokens_per_s, peak)) is None else round(m, 4))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workers.run_attempt", description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, help="the resolved run config (config.json)")
    p.add_argument("outdir", type=Path, help="the attempt directory to write into")
    p.add_argument("--resume-from", type=Path, default=None,
                   help="a previous attempt's directory or checkpoint.pt to continue from (copied)")
    args = p.parse_args(argv)
    return run(args.config, args.outdir, args.resume_from)


if __name__ == "__main__":
    sys.exit(main())
