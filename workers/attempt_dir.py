"""The attempt directory: where it is, who owns it, and which checkpoint it resumes from.

    <runs_dir>/<study>/<step>/seed<k>/attempt<n>/   (built by orchestrator.core.ids)
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
from workers.train import artifacts

if TYPE_CHECKING:
    from orchestrator.queue.types import ClaimedAttempt
    from workers.provenance import CodeState
    from workers.storage import Storage

ATTEMPT_INFO = "attempt.json"
_OWNER_KEYS = ("attempt_id", "run_id", "db", "config_hash")


class ArtifactDirTaken(QueueError):
    """The attempt's artifact directory already exists and belongs to another attempt."""


def _ids_attempt_dir(runs_dir: Path, *, study: str, step: str, seed: int, config_hash: str,
                     run_id: int, attempt_no: int) -> Path:
    """The call shape of `ids.attempt_dir` (the single path builder, issue 13); until that
    lands, today's `ids.attempt_dir` builds the same `<study>/<step>/seed<k>/attempt<n>`."""
    del config_hash, run_id  # part of the builder's signature; today's layout omits them
    return Path(runs_dir) / ids.attempt_dir(study, step, seed, attempt_no, root=".")


def path_of(runs_dir: Path, claimed: ClaimedAttempt, attempt_no: int | None = None) -> Path:
    """The attempt's directory under `runs_dir` (of attempt `attempt_no` of the same run,
    if given); ArtifactDirTaken for an unsafe name."""
    try:
        return _ids_attempt_dir(runs_dir, study=claimed.study, step=claimed.step,
                                seed=claimed.seed, config_hash=claimed.config_hash,
                                run_id=claimed.run_id,
                                attempt_no=attempt_no or claimed.attempt_no)
    except ValueError as e:
        raise ArtifactDirTaken(f"{e} in the artifact path") from None


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
    }
    resume_from: Path | None = None
    if outdir.exists():
        old = artifacts.read_json(outdir / ATTEMPT_INFO)
        same = isinstance(old, dict) and all(old.get(k) == info[k] for k in _OWNER_KEYS)
        if not same:
            raise ArtifactDirTaken(
                f"artifact dir {outdir} already exists and belongs to another attempt "
                "(another database used this runs dir?): move it away or use --runs-dir")
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
        if (current / artifacts.CHECKPOINT).exists():
            return current
        seen.add(current)
        info = artifacts.read_json(current / ATTEMPT_INFO)
        nxt = info.get("resume_from") if isinstance(info, dict) else None
        current = Path(nxt) if isinstance(nxt, str) and nxt else None
    return None


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


def read_progress(outdir: Path) -> dict[str, Any] | None:
    """progress.json of the attempt, or None while there is none (or it is not an object)."""
    data = artifacts.read_json(outdir / artifacts.PROGRESS)
    return data if isinstance(data, dict) else None
