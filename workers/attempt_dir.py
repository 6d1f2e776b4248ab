"""The attempt directory: where it is, who owns it, and which checkpoint it resumes from.

    <runs_dir>/<study>/<step>/seed<k>/<hash12>-run<id>/attempt<n>/   (orchestrator.core.ids)
        config.json    written here before the spawn
        attempt.json   ATTEMPT_INFO: which attempt of which database owns the directory
        ...            the rest is the trainer's (workers/train/artifacts.py)

A directory is reused only by the attempt that made it (same attempt id, run id, database
and config hash): a clean stop re-queues the same attempt, which resumes in place. A new
attempt of the run resumes from the newest checkpoint along its predecessors' chain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core import ids
from orchestrator.core.errors import QueueError
from orchestrator.core.states import AttemptState, FailureKind
from workers.outcome import Verdict
from workers.train import artifacts, disk

if TYPE_CHECKING:
    from orchestrator.queue.types import ClaimedAttempt
    from workers.provenance import CodeState
    from workers.storage import Storage

ATTEMPT_INFO = artifacts.ATTEMPT_INFO
_OWNER_KEYS = ("attempt_id", "run_id", "db", "config_hash")


class ArtifactDirTaken(QueueError):
    """The attempt's artifact directory already exists and belongs to another attempt."""


def path_of(runs_dir: Path, claimed: ClaimedAttempt, attempt_no: int | None = None) -> Path:
    """The attempt's directory under `runs_dir` (of attempt `attempt_no` of the same run,
    if given); ArtifactDirTaken for an unsafe name."""
    try:
        return ids.attempt_dir(runs_dir, study=claimed.study, step=claimed.step,
                               seed=claimed.seed, config_hash=claimed.config_hash,
                               run_id=claimed.run_id, attempt_no=attempt_no or claimed.attempt_no)
    except ValueError as e:
        raise ArtifactDirTaken(f"no artifact path for this attempt: {e}") from None


def storage_rel(claimed: ClaimedAttempt, attempt_no: int | None = None) -> str:
    """The attempt's place in checkpoint storage: the same layout as under the runs dir."""
    return path_of(Path("."), claimed, attempt_no).as_posix()


@dataclass(frozen=True)
class Prepared:
    outdir: Path
    resume_from: Path | None
    resume_stored: str | None = None
    """The stored checkpoint that `resume_from` was downloaded from, if any."""
    metrics_offset: int = 0
    """Bytes of metrics.jsonl already in the database (an attempt resumed in place);
    measured before the spawn, since a warm attempt writes its first record within 1 s."""


def prepare(claimed: ClaimedAttempt, code: CodeState, runs_dir: Path, db_label: str, *,
            worker_id: str, now: datetime, storage: Storage | None = None) -> Prepared:
    """Create (or reclaim) the attempt's directory, write config.json and attempt.json and
    pick the checkpoint to resume from: this attempt's own, else its predecessors' on this
    box, else the newest in `storage` (downloaded into OUTDIR/.resume). Raises
    ArtifactDirTaken or OSError."""
    outdir = path_of(runs_dir, claimed)
    info: dict[str, Any] = {
        "attempt_id": claimed.attempt_id, "attempt_no": claimed.attempt_no,
        "run_id": claimed.run_id, "study": claimed.study, "step": claimed.step,
        "seed": claimed.seed, "config_hash": claimed.config_hash,
        "db": db_label, "worker_id": worker_id,
        "code_sha": code.sha, "code_dirty": code.dirty,
        "claimed_at": now.isoformat(),
        "wandb_run_id": ids.wandb_run_id(
            db_identity=db_label, study=claimed.study, step=claimed.step, seed=claimed.seed,
            config_hash=claimed.config_hash, attempt_no=claimed.attempt_no),
        "wandb_run_name": ids.wandb_run_name(claimed.study, claimed.step, claimed.seed,
                                             claimed.attempt_no),
    }
    resume_from: Path | None = None
    if outdir.exists():
        old = artifacts.read_json(outdir / ATTEMPT_INFO)
        same = isinstance(old, dict) and all(old.get(k) == info[k] for k in _OWNER_KEYS)
        if not same:
            owner = old.get("db") if isinstance(old, dict) else None
            raise ArtifactDirTaken(
                f"artifact dir {outdir} already exists and belongs to another attempt"
                + (f" of database {owner}" if owner and owner != info["db"] else "")
                + ": this runs dir is another database's; give each database its own "
                "(`--runs-dir DIR`) or move that directory away")
        # the same attempt, requeued by a clean stop: resume in place
        for name in (artifacts.RESULT, artifacts.PROGRESS):
            if (outdir / name).exists():
                os.replace(outdir / name, outdir / f"{name}.before-resume")
        if (outdir / artifacts.CHECKPOINT).exists():
            resume_from = outdir
    else:
        outdir.mkdir(parents=True)
    if resume_from is None and claimed.previous_artifact_dir:
        resume_from = latest_checkpoint_dir(Path(claimed.previous_artifact_dir))
    stored: str | None = None
    if resume_from is None and storage is not None:
        rels = [storage_rel(claimed, n) for n in range(claimed.attempt_no, 0, -1)]
        stored = storage.newest_checkpoint(rels)
        if stored is not None:
            resume_from = storage.fetch(stored, outdir / ".resume").parent
    info["resume_from"] = str(resume_from) if resume_from else None
    info["resume_from_storage"] = stored
    artifacts.write_json_atomic(outdir / artifacts.CONFIG, claimed.config)
    artifacts.write_json_atomic(outdir / ATTEMPT_INFO, info)
    metrics = outdir / artifacts.METRICS
    offset = metrics.stat().st_size if metrics.exists() else 0
    return Prepared(outdir, resume_from, stored, offset)


def latest_checkpoint_dir(previous: Path, *, hops: int = 100) -> Path | None:
    """`previous` if it holds a checkpoint, else the attempt dir it resumed from (its
    attempt.json), and so on: an attempt killed before it copied its predecessor's
    checkpoint does not make the next one start from scratch."""
    seen: set[Path] = set()
    current: Path | None = previous
    while current is not None and current not in seen and len(seen) < hops:
        if (current / artifacts.CHECKPOINT).exists() or \
                (current / artifacts.PREVIOUS_CHECKPOINT).exists():
            return current
        seen.add(current)
        info = artifacts.read_json(current / ATTEMPT_INFO)
        nxt = info.get("resume_from") if isinstance(info, dict) else None
        current = Path(nxt) if isinstance(nxt, str) and nxt else None
    return None


def prepare_failure(e: ArtifactDirTaken | OSError, runs_dir: Path) -> Verdict:
    """The verdict of an attempt whose directory could not be prepared: `disk_full` (temp
    files removed) when the disk is full, else `spawn`."""
    if isinstance(e, ArtifactDirTaken):
        return Verdict(AttemptState.FAILED, FailureKind.SPAWN, "ArtifactDirExists", str(e))
    if disk.find_disk_full(e) is None:
        return Verdict(AttemptState.FAILED, FailureKind.SPAWN, type(e).__name__, str(e))
    where = Path(e.filename) if e.filename else runs_dir
    disk.remove_temp_files(where if where.is_dir() else where.parent)
    return Verdict(AttemptState.FAILED, FailureKind.DISK_FULL, "DiskFull", disk.describe(where))


def disk_full(outdir: Path, rc: int) -> str | None:
    """What is full (path and free space) when the attempt exited EXIT_DISK_FULL or its disk
    has no free space left, with its temp files removed; else None."""
    if rc != artifacts.EXIT_DISK_FULL and disk.free_bytes(outdir) != 0:
        return None
    disk.remove_temp_files(outdir)
    return disk.describe(outdir)


def log_tail(outdir: Path) -> str:
    """The last non-empty line of the attempt's stdout.log ("" if none)."""
    try:
        with open(outdir / artifacts.LOG, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return kept[-1] if kept else ""


def read_progress(outdir: Path) -> artifacts.Progress | None:
    """progress.json of the attempt, or None while there is none (or it is not an object)."""
    return artifacts.read_progress(outdir)
