"""WorkerLoop: claim an attempt, run it in a fresh process, keep the database true, repeat.

    register -> loop {
        claim -> runs/<study>/<step>/seed<k>/attempt<n>/ (new) -> config.json -> spawn -> start
        every poll: progress.json -> heartbeat (<= every lease/3); metrics.jsonl -> metric rows
        exit -> result.json -> finish(succeeded | failed+kind | timed_out) or requeue (stop)
    }

The loop is the only database writer for its attempt. Every write is fenced by the queue:
LeaseLost kills the attempt's process group at once. A database outage is retried with
backoff; once the lease must have expired the loop kills its attempt itself (fencing), so
two processes never train the same attempt. No attempt failure ends the loop.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from orchestrator.core import ids
from orchestrator.core.errors import LeaseLost, QueueError, StaleTransition
from orchestrator.core.states import AttemptState, FailureKind
from workers import provenance as prov
from workers.clock import Clock, SystemClock
from workers.metrics_tail import JsonlTail, MetricRow, MetricThinner
from workers.runner import RUN_ATTEMPT, AttemptProcess, Runner, SubprocessRunner
from workers.train import artifacts, disk

logger = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPT_INFO = artifacts.ATTEMPT_INFO


class ClaimedAttemptLike(Protocol):
    @property
    def attempt_id(self) -> int: ...
    @property
    def attempt_no(self) -> int: ...
    @property
    def run_id(self) -> int: ...
    @property
    def study(self) -> str: ...
    @property
    def step(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def config_hash(self) -> str: ...
    @property
    def budget_seconds(self) -> float | None: ...
    @property
    def previous_artifact_dir(self) -> str | None: ...


class RunStateLike(Protocol):
    @property
    def state(self) -> str | None: ...


class StudyLike(Protocol):
    @property
    def runs(self) -> Sequence[RunStateLike]: ...


class SnapshotLike(Protocol):
    @property
    def studies(self) -> Sequence[StudyLike]: ...


class Queue(Protocol):
    """The part of QueueRepo a worker uses (orchestrator/queue/repo.py)."""

    def claim(self, worker_id: str, now: datetime, lease: timedelta, *,
              code_sha: str | None = None, study: str | None = None
              ) -> ClaimedAttemptLike | None: ...

    def start(self, attempt_id: int, worker_id: str, now: datetime, lease: timedelta, *,
              artifact_dir: str, code_sha: str | None, code_dirty: bool | None,
              diff_hash: str | None, host: str, gpu: str | None, pid: int | None,
              env: dict[str, Any]) -> None: ...

    def heartbeat(self, attempt_id: int, worker_id: str, now: datetime, lease: timedelta,
                  progress: dict[str, Any] | None = None) -> None: ...

    def record_metrics(self, attempt_id: int, worker_id: str,
                       rows: Sequence[tuple[str, int, float]]) -> object: ...

    def finish(self, attempt_id: int, worker_id: str, now: datetime, state: AttemptState, *,
               failure_kind: FailureKind | None, exit_code: int | None,
               error_type: str | None, error_message: str | None,
               result: dict[str, Any] | None) -> None: ...

    def requeue(self, attempt_id: int, worker_id: str, now: datetime) -> None: ...

    def register_worker(self, worker_id: str, now: datetime, *, host: str, gpu: str | None,
                        pid: int | None) -> None: ...

    def worker_heartbeat(self, worker_id: str, now: datetime,
                         current_attempt: int | None = None) -> None: ...

    def worker_stopped(self, worker_id: str, now: datetime) -> None: ...

    def snapshot(self, now: datetime, study: str | None = None) -> SnapshotLike: ...


@dataclass(frozen=True)
class WorkerSettings:
    worker_id: str
    runs_dir: Path
    lease_s: float = 30.0
    poll_s: float = 0.5
    """How often a running attempt's files are read."""
    idle_poll_s: float = 2.0
    """How long to wait after an empty claim."""
    grace_s: float = 120.0
    """Wall time allowed past budget_seconds (startup, evals, checkpoints) before timed_out."""
    kill_after_s: float = 30.0
    """SIGTERM -> SIGKILL delay."""
    max_attempts: int | None = None
    """Stop after running this many attempts (`--once` = 1)."""
    until_empty: bool = False
    """Stop once nothing is queued or running (in `study`, or anywhere)."""
    study: str | None = None
    """Claim only this study's attempts (`recip run`); None: any study."""
    gpu_index: int | None = None
    db_label: str = ""
    """The database URL (redacted); an artifact dir is only resumed by the same database."""
    metric_points: int = 1000
    backoff_s: float = 0.5
    backoff_max_s: float = 15.0
    min_free_bytes: int = field(default_factory=disk.min_free_bytes)
    """No claim while runs_dir has less free space ($RECIP_MIN_FREE_MB, default 200 MB)."""


@dataclass(frozen=True)
class AttemptOutcome:
    attempt_id: int
    study: str
    step: str
    seed: int
    attempt_no: int
    state: str
    """succeeded, failed, timed_out, lost (fenced out), or queued (requeued on stop)."""
    failure_kind: str | None = None
    exit_code: int | None = None
    error: str | None = None
    artifact_dir: str | None = None


@dataclass(frozen=True)
class WorkerReport:
    worker_id: str
    outcomes: tuple[AttemptOutcome, ...] = ()
    reason: str = ""
    """Why the loop ended: stopped, max-attempts, empty, low-disk (too little free space to
    claim; the warning logged says how much)."""

    @property
    def succeeded(self) -> int:
        return sum(o.state == AttemptState.SUCCEEDED.value for o in self.outcomes)


class ArtifactDirTaken(QueueError):
    """The attempt's artifact directory already exists and belongs to another attempt."""


@dataclass
class _Watch:
    """Mutable state of one running attempt."""

    claimed: ClaimedAttemptLike
    outdir: Path
    proc: AttemptProcess
    lease_ok_at: float
    tail: JsonlTail
    thinner: MetricThinner
    pending: list[MetricRow] = field(default_factory=list)
    progress: artifacts.Progress | None = None
    next_heartbeat: float = 0.0
    next_metrics: float = 0.0
    failures: int = 0


def _is_outage(e: BaseException) -> bool:
    from orchestrator.core.errors import DatabaseUnavailable

    if isinstance(e, DatabaseUnavailable):
        return True
    names = {cls.__name__ for cls in type(e).__mro__}
    return bool(names & {"OperationalError", "InterfaceError", "DisconnectionError",
                         "TimeoutError", "ConnectionError"})


def _signal_name(code: int) -> str:
    import signal

    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _log_tail(path: Path, lines: int = 1) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


class WorkerLoop:
    """One worker: claims attempts one at a time until stopped (see the module docstring)."""

    def __init__(self, queue: Queue, settings: WorkerSettings, *, runner: Runner | None = None,
                 clock: Clock | None = None,
                 code_state: Callable[[], prov.CodeState] = prov.code_state,
                 provenance: prov.Provenance | None = None) -> None:
        self.queue = queue
        self.settings = settings
        self.runner: Runner = runner or SubprocessRunner()
        self.clock: Clock = clock or SystemClock()
        self._code_state = code_state
        self._provenance = provenance
        self._stop = threading.Event()
        self.current_attempt: int | None = None
        self._low_disk_said: str | None = None

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_s)

    @property
    def worker_id(self) -> str:
        return self.settings.worker_id

    def stop(self) -> None:
        """Ask the loop to stop: the running attempt checkpoints and goes back to queued."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> WorkerReport:
        """Claim and run attempts until stopped, out of work (`until_empty`) or at max."""
        s = self.settings
        if self._provenance is None:
            self._provenance = prov.collect()
        p = self._provenance
        outcomes: list[AttemptOutcome] = []
        registered = self._retry("register", lambda: self.queue.register_worker(
            s.worker_id, self.clock.now(), host=p.host, gpu=p.gpu, pid=os.getpid()))
        reason = "stopped"
        try:
            if registered is _GAVE_UP:
                return WorkerReport(s.worker_id, (), reason)
            while not self.stopping:
                if s.max_attempts is not None and len(outcomes) >= s.max_attempts:
                    reason = "max-attempts"
                    break
                code = self._code_state()
                claimed = self._retry("claim", functools.partial(self._claim, code.sha))
                if claimed is _GAVE_UP:
                    break
                if claimed is None:
                    if s.until_empty and self._low_disk_said is not None:
                        reason = "low-disk"
                        break
                    if s.until_empty and self._nothing_left():
                        reason = "empty"
                        break
                    self._best_effort(lambda: self.queue.worker_heartbeat(
                        s.worker_id, self.clock.now()))
                    self.clock.sleep(s.idle_poll_s, self._stop)
                    continue
                assert not isinstance(claimed, _GaveUp)
                outcomes.append(self.run_one(claimed, code))
        finally:
            self._best_effort(lambda: self.queue.worker_stopped(s.worker_id, self.clock.now()))
        return WorkerReport(s.worker_id, tuple(outcomes), reason)

    def _low_disk(self) -> str | None:
        """Why this worker must not claim now (too little free space in runs_dir), or None."""
        need = self.settings.min_free_bytes
        free = disk.free_bytes(self.settings.runs_dir)
        if need <= 0 or free is None or free >= need:
            self._low_disk_said = None
            return None
        why = (f"not claiming: {disk.fmt_bytes(free)} free in {self.settings.runs_dir}, below "
               f"the {disk.fmt_bytes(need)} a worker needs ({disk.MIN_FREE_ENV}); free space there")
        if self._low_disk_said is None:
            logger.warning("%s", why, extra={"action": "claim_refused_low_disk", "free": free})
        self._low_disk_said = why
        return why

    def _claim(self, code_sha: str | None) -> ClaimedAttemptLike | None:
        if self._low_disk() is not None:
            return None
        return self.queue.claim(self.settings.worker_id, self.clock.now(), self.lease,
                                code_sha=code_sha, study=self.settings.study)

    def _nothing_left(self) -> bool:
        snap = self._retry("snapshot", lambda: self.queue.snapshot(
            self.clock.now(), self.settings.study))
        if isinstance(snap, _GaveUp):
            return True
        live = {AttemptState.QUEUED.value, AttemptState.CLAIMED.value,
                AttemptState.RUNNING.value}
        return not any(r.state in live for st in snap.studies for r in st.runs)

    # --- one attempt ---------------------------------------------------------------------

    def run_one(self, claimed: ClaimedAttemptLike, code: prov.CodeState | None = None
                ) -> AttemptOutcome:
        """Run one claimed attempt to its end and record how it ended."""
        code = code or self._code_state()
        s = self.settings
        self.current_attempt = claimed.attempt_id
        extra = {"action": "attempt_claimed", "attempt": claimed.attempt_id}
        logger.info("claimed %s/%s seed %s attempt %s", claimed.study, claimed.step,
                    claimed.seed, claimed.attempt_no, extra=extra)
        claimed_at = self.clock.monotonic()
        try:
            if claimed.previous_artifact_dir:  # before its checkpoint is looked for
                self._stop_predecessor(Path(claimed.previous_artifact_dir))
            try:
                outdir, resume_from = self._prepare_dir(claimed, code)
            except OSError as e:
                if disk.find_disk_full(e) is None:
                    return self._finish_unstarted(claimed, type(e).__name__, str(e), None)
                where = Path(e.filename) if e.filename else s.runs_dir
                disk.remove_temp_files(where if where.is_dir() else where.parent)
                return self._finish(claimed, None, AttemptState.FAILED, FailureKind.DISK_FULL,
                                    None, "DiskFull", disk.describe(where), None)
            except ArtifactDirTaken as e:
                return self._finish_unstarted(claimed, "ArtifactDirExists", str(e), None)
            # rows already in metrics.jsonl (resumed in place) are in the database; measured
            # before the spawn, since a warm attempt writes its first record within a second
            metrics_path = outdir / artifacts.METRICS
            offset = metrics_path.stat().st_size if metrics_path.exists() else 0
            try:
                proc = self.runner.spawn(outdir, resume_from=resume_from)
            except OSError as e:
                return self._finish_unstarted(claimed, type(e).__name__,
                                              f"cannot start the attempt: {e}", outdir)
            return self._supervise(claimed, code, outdir, proc, claimed_at, offset)
        finally:
            self.current_attempt = None

    def _prepare_dir(self, claimed: ClaimedAttemptLike, code: prov.CodeState
                     ) -> tuple[Path, Path | None]:
        try:
            outdir = ids.attempt_dir(self.settings.runs_dir, study=claimed.study,
                                     step=claimed.step, seed=claimed.seed,
                                     config_hash=claimed.config_hash, run_id=claimed.run_id,
                                     attempt_no=claimed.attempt_no)
        except ValueError as e:
            raise ArtifactDirTaken(f"no artifact path for this attempt: {e}") from None
        info = {
            "attempt_id": claimed.attempt_id, "attempt_no": claimed.attempt_no,
            "run_id": claimed.run_id, "study": claimed.study, "step": claimed.step,
            "seed": claimed.seed, "config_hash": claimed.config_hash,
            "db": self.settings.db_label, "worker_id": self.worker_id,
            "code_sha": code.sha, "code_dirty": code.dirty,
            "claimed_at": self.clock.now().isoformat(),
            "wandb_run_id": ids.wandb_run_id(
                db_identity=self.settings.db_label, study=claimed.study, step=claimed.step,
                seed=claimed.seed, config_hash=claimed.config_hash,
                attempt_no=claimed.attempt_no),
            "wandb_run_name": ids.wandb_run_name(claimed.study, claimed.step, claimed.seed,
                                                 claimed.attempt_no),
        }
        resume_from: Path | None = None
        if outdir.exists():
            old = artifacts.read_json(outdir / ATTEMPT_INFO)
            same = isinstance(old, dict) and all(
                old.get(k) == info[k] for k in ("attempt_id", "run_id", "db", "config_hash"))
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
        info["resume_from"] = str(resume_from) if resume_from else None
        artifacts.write_json_atomic(outdir / artifacts.CONFIG, claimed.config)
        artifacts.write_json_atomic(outdir / ATTEMPT_INFO, info)
        return outdir, resume_from

    def _stop_predecessor(self, previous: Path) -> None:
        """Before a run's next attempt starts, make sure its previous attempt's process is
        gone on this host: an orphan of a dead worker got SIGTERM and checkpoints; one that
        is still alive after kill_after_s is killed, so two attempts never train at once."""
        pid = attempt_pid(previous)
        if pid is None:
            return
        logger.warning("previous attempt %s still running as pid %s: stopping it", previous, pid,
                       extra={"action": "predecessor_stopped", "pid": pid})
        _signal_group(pid, signal.SIGTERM)
        deadline = self.clock.monotonic() + self.settings.kill_after_s
        while attempt_pid(previous) == pid and self.clock.monotonic() < deadline:
            self.clock.sleep(0.1)
        if attempt_pid(previous) == pid:
            _signal_group(pid, signal.SIGKILL)
            while attempt_pid(previous) == pid and self.clock.monotonic() < deadline + 10:
                self.clock.sleep(0.1)

    def _finish_unstarted(self, claimed: ClaimedAttemptLike, error_type: str, message: str,
                          outdir: Path | None) -> AttemptOutcome:
        logger.warning("attempt %s could not start: %s", claimed.attempt_id, message,
                       extra={"action": "attempt_spawn_failed", "attempt": claimed.attempt_id})
        return self._finish(claimed, outdir, AttemptState.FAILED, FailureKind.SPAWN, None,
                            error_type, message, None)

    def _supervise(self, claimed: ClaimedAttemptLike, code: prov.CodeState, outdir: Path,
                   proc: AttemptProcess, claimed_at: float, offset: int) -> AttemptOutcome:
        s = self.settings
        p = self._provenance or prov.collect()
        metrics_path = outdir / artifacts.METRICS
        w = _Watch(claimed=claimed, outdir=outdir, proc=proc, lease_ok_at=claimed_at,
                   tail=JsonlTail(metrics_path, offset),
                   thinner=MetricThinner(s.metric_points, lambda: self._expected_records(w)))
        env = p.env()
        started = self._attempt_write(w, lambda: self.queue.start(
            claimed.attempt_id, s.worker_id, self.clock.now(), self.lease,
            artifact_dir=str(outdir), code_sha=code.sha, code_dirty=code.dirty,
            diff_hash=code.diff_hash, host=p.host, gpu=p.gpu, pid=proc.pid, env=env),
            retry_until_fenced=True)
        if started is _LOST:
            return self._fenced(w, "lease lost before the attempt started")
        spawned = self.clock.monotonic()
        budget = claimed.budget_seconds
        deadline = spawned + budget + s.grace_s if budget else None
        beat = s.lease_s / 3.0
        w.next_heartbeat = spawned + beat
        term_at: float | None = None
        why: str | None = None
        while True:
            rc = proc.poll()
            now = self.clock.monotonic()
            if self._pump_metrics(w, now) is _LOST:
                return self._fenced(w, "lease lost while recording metrics")
            if rc is not None:
                break
            if now >= w.next_heartbeat:
                w.progress = self._read_progress(outdir) or w.progress
                if self._heartbeat(w, now, beat) is _LOST:
                    return self._fenced(w, "lease lost (heartbeat fenced out)")
            if now - w.lease_ok_at >= s.lease_s * 5 / 6:
                return self._fenced(w, "database unreachable until the lease expired")
            if term_at is None:
                if self.stopping:
                    why, term_at = "stop", now
                    proc.terminate()
                elif deadline is not None and now >= deadline:
                    why, term_at = "timeout", now
                    logger.warning("attempt %s past budget %.0fs + grace %.0fs: terminating",
                                   claimed.attempt_id, budget or 0.0, s.grace_s,
                                   extra={"action": "attempt_timeout",
                                          "attempt": claimed.attempt_id})
                    proc.terminate()
            elif now - term_at >= s.kill_after_s:
                proc.kill()
            self.clock.sleep(s.poll_s, None if term_at is not None else self._stop)
        w.pending.extend(w.thinner.flush())
        if self._pump_metrics(w, self.clock.monotonic(), final=True) is _LOST:
            return self._fenced(w, "lease lost while recording the last metrics", killed=False)
        return self._conclude(w, rc, why, budget)

    def _conclude(self, w: _Watch, rc: int, why: str | None, budget: float | None
                  ) -> AttemptOutcome:
        s = self.settings
        claimed = w.claimed
        result = artifacts.read_result(w.outdir)
        status = result["status"] if result else None
        if status == artifacts.STATUS_SUCCEEDED and rc == artifacts.EXIT_OK:
            return self._finish(claimed, w.outdir, AttemptState.SUCCEEDED, None, rc, None, None,
                                result, w)
        if result and status in _STATUS_KIND:
            kind = _STATUS_KIND[str(status)]
            etype = result.get("error_type") or str(status)
            emsg = result.get("error_message") or f"the trainer reported {status}"
            return self._finish(claimed, w.outdir, AttemptState.FAILED, kind, rc, str(etype),
                                str(emsg), result, w)
        if why == "timeout":
            msg = (f"no result after budget {budget or 0:.0f}s + grace {s.grace_s:.0f}s: "
                   f"terminated (exit {rc})")
            return self._finish(claimed, w.outdir, AttemptState.TIMED_OUT, None, rc,
                                "Timeout", msg, result, w)
        if (why == "stop" or rc == artifacts.EXIT_INTERRUPTED
                or status == artifacts.STATUS_INTERRUPTED):
            done = self._attempt_write(w, lambda: self.queue.requeue(
                claimed.attempt_id, s.worker_id, self.clock.now()), retry_until_fenced=True)
            state = AttemptState.QUEUED.value if done is not _LOST else AttemptState.LOST.value
            logger.info("attempt %s stopped (exit %s): back to queued", claimed.attempt_id, rc,
                        extra={"action": "attempt_requeued", "attempt": claimed.attempt_id})
            return self._outcome(claimed, state, None, rc, "stopped by the worker", w.outdir)
        if rc == artifacts.EXIT_DISK_FULL or disk.free_bytes(w.outdir) == 0:
            disk.remove_temp_files(w.outdir)
            return self._finish(claimed, w.outdir, AttemptState.FAILED, FailureKind.DISK_FULL,
                                rc, "DiskFull", disk.describe(w.outdir), result, w)
        if rc < 0:
            how = f"killed by {_signal_name(rc)}"
            if rc == -9:
                how += " (out of host memory?)"
        else:
            how = f"exited {rc}"
        last = _log_tail(w.outdir / artifacts.LOG)
        msg = f"process {how} without result.json" + (f"; last log line: {last}" if last else "")
        return self._finish(claimed, w.outdir, AttemptState.FAILED, FailureKind.CRASHED, rc,
                            "Crashed", msg[:2000], result, w)

    def _finish(self, claimed: ClaimedAttemptLike, outdir: Path | None, state: AttemptState,
                kind: FailureKind | None, rc: int | None, error_type: str | None,
                message: str | None, result: artifacts.Result | None,
                w: _Watch | None = None) -> AttemptOutcome:
        def write() -> None:
            self.queue.finish(claimed.attempt_id, self.settings.worker_id, self.clock.now(),
                              state, failure_kind=kind, exit_code=rc, error_type=error_type,
                              error_message=message,
                              result=dict(result) if result is not None else None)

        if w is not None:
            done = self._attempt_write(w, write, retry_until_fenced=True)
        else:
            done = self._retry("finish", write, fence=True)
        final = state.value if done not in (_LOST, _GAVE_UP) else AttemptState.LOST.value
        logger.info("attempt %s %s%s", claimed.attempt_id, final,
                    f" ({kind.value}: {message})" if kind else "",
                    extra={"action": "attempt_finished", "attempt": claimed.attempt_id})
        return self._outcome(claimed, final, kind.value if kind else None, rc,
                             f"{error_type}: {message}" if error_type else message, outdir)

    def _outcome(self, claimed: ClaimedAttemptLike, state: str, kind: str | None,
                 rc: int | None, error: str | None, outdir: Path | None) -> AttemptOutcome:
        return AttemptOutcome(
            attempt_id=claimed.attempt_id, study=claimed.study, step=claimed.step,
            seed=claimed.seed, attempt_no=claimed.attempt_no, state=state,
            failure_kind=kind, exit_code=rc, error=error,
            artifact_dir=str(outdir) if outdir else None)

    def _fenced(self, w: _Watch, why: str, *, killed: bool = True) -> AttemptOutcome:
        if killed:
            w.proc.kill()
        logger.warning("attempt %s: %s: process group killed", w.claimed.attempt_id, why,
                       extra={"action": "attempt_fenced", "attempt": w.claimed.attempt_id})
        return self._outcome(w.claimed, AttemptState.LOST.value, None, w.proc.poll(), why,
                             w.outdir)

    # --- files -> database ---------------------------------------------------------------

    def _read_progress(self, outdir: Path) -> artifacts.Progress | None:
        return artifacts.read_progress(outdir)

    def _expected_records(self, w: _Watch) -> float | None:
        train = w.claimed.config.get("train", {}) if isinstance(w.claimed.config, dict) else {}
        log_every = train.get("log_every") or 10
        budget = train.get("budget") or {}
        iters = budget.get("iters") if isinstance(budget, dict) else None
        if not iters and w.progress:
            it, frac = w.progress.get("iter"), w.progress.get("fraction")
            if isinstance(it, int | float) and isinstance(frac, int | float) and frac >= 0.05:
                iters = it / frac
        if not iters:
            iters = train.get("max_iters")
        if not isinstance(iters, int | float) or not math.isfinite(iters) or iters <= 0:
            return None
        return float(iters) / float(log_every)

    def _heartbeat(self, w: _Watch, now: float, beat: float) -> object:
        s = self.settings
        progress = dict(w.progress) if w.progress is not None else None
        done = self._attempt_write(w, lambda: self.queue.heartbeat(
            w.claimed.attempt_id, s.worker_id, self.clock.now(), self.lease, progress))
        if done is _LOST:
            return _LOST
        if done is _OUTAGE:
            w.next_heartbeat = now + self._backoff(w.failures)
        else:
            w.next_heartbeat = now + beat
            self._best_effort(lambda: self.queue.worker_heartbeat(
                s.worker_id, self.clock.now(), w.claimed.attempt_id))
        return done

    def _pump_metrics(self, w: _Watch, now: float, *, final: bool = False) -> object:
        for record in w.tail.read():
            w.pending.extend(w.thinner.rows(record))
        if not w.pending or (now < w.next_metrics and not final):
            return None
        rows = list(w.pending)
        attempts = 0
        while True:
            done = self._attempt_write(w, lambda: self.queue.record_metrics(
                w.claimed.attempt_id, self.settings.worker_id, rows))
            if done is _LOST:
                return _LOST
            if done is not _OUTAGE:
                del w.pending[: len(rows)]
                return done
            attempts += 1
            w.next_metrics = now + self._backoff(w.failures)
            if not final or attempts > 50:
                return _OUTAGE
            self.clock.sleep(self._backoff(w.failures))
            if self.clock.monotonic() - w.lease_ok_at >= self.settings.lease_s * 5 / 6:
                return _LOST

    def _attempt_write(self, w: _Watch, fn: Callable[[], T], *,
                       retry_until_fenced: bool = False) -> T | object:
        """One fenced write for the running attempt: LeaseLost/StaleTransition -> _LOST,
        an outage -> _OUTAGE (or retried until the lease must have expired)."""
        while True:
            before = self.clock.monotonic()
            try:
                out = fn()
            except (LeaseLost, StaleTransition) as e:
                logger.warning("attempt %s: %s", w.claimed.attempt_id, e,
                               extra={"action": "lease_lost", "attempt": w.claimed.attempt_id})
                return _LOST
            except Exception as e:  # noqa: BLE001 - an outage must never end the worker
                if not _is_outage(e):
                    raise
                w.failures += 1
                logger.warning("database unavailable (%s): retrying", e,
                               extra={"action": "db_outage", "attempt": w.claimed.attempt_id})
                if not retry_until_fenced:
                    return _OUTAGE
                if self.clock.monotonic() - w.lease_ok_at >= self.settings.lease_s * 5 / 6:
                    return _LOST
                self.clock.sleep(self._backoff(w.failures))
                continue
            w.failures = 0
            w.lease_ok_at = max(w.lease_ok_at, before)
            return out

    # --- retries outside an attempt ------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        s = self.settings
        return float(min(s.backoff_max_s, s.backoff_s * (2 ** max(0, min(failures, 16) - 1))))

    def _retry(self, what: str, fn: Callable[[], T], *, fence: bool = False) -> T | _GaveUp:
        """Call `fn` until it works; outages back off. Stops retrying when the loop is
        stopped (or, with `fence`, after about one lease: the attempt is lost by then)."""
        failures = 0
        first = self.clock.monotonic()
        while True:
            try:
                return fn()
            except (LeaseLost, StaleTransition):
                if fence:
                    return _GAVE_UP
                raise
            except Exception as e:  # noqa: BLE001 - an outage must never end the worker
                if not _is_outage(e):
                    raise
                failures += 1
                logger.warning("database unavailable during %s (%s): retry %d", what, e,
                               failures, extra={"action": "db_outage"})
            if self.stopping and what != "finish":
                return _GAVE_UP
            if fence and self.clock.monotonic() - first >= self.settings.lease_s:
                return _GAVE_UP
            self.clock.sleep(self._backoff(failures), self._stop)

    def _best_effort(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - bookkeeping only
            if not _is_outage(e) and not isinstance(e, QueueError):
                raise
            logger.debug("best-effort write failed: %s", e)


class _GaveUp:
    def __repr__(self) -> str:
        return "<gave up>"


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_GAVE_UP = _GaveUp()
_LOST: object = _Marker("lost")
_OUTAGE: object = _Marker("outage")

_STATUS_KIND: dict[str, FailureKind] = {
    artifacts.STATUS_FAILED: FailureKind.EXCEPTION,
    artifacts.STATUS_DIVERGED: FailureKind.DIVERGED,
    artifacts.STATUS_OOM: FailureKind.OOM,
    artifacts.STATUS_DISK_FULL: FailureKind.DISK_FULL,
}


def attempt_pid(outdir: Path) -> int | None:
    """The pid of a live attempt process of OUTDIR on this host: the pid the trainer writes
    into progress.json, if that process writes its stdout to OUTDIR/stdout.log (a fresh or a
    warm spare interpreter) or runs `workers.run_attempt CONFIG OUTDIR`."""
    info = artifacts.read_progress(outdir)
    pid = info.get("pid") if info else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or pid == os.getpid():
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (OSError, IndexError):
        return None
    try:
        if os.readlink(f"/proc/{pid}/fd/1") == os.path.realpath(outdir / artifacts.LOG):
            return pid
    except OSError:
        pass
    module = RUN_ATTEMPT[-1]
    i = argv.index(module) if module in argv else -1
    return pid if i >= 0 and len(argv) > i + 2 and argv[i + 2] == str(outdir) else None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def latest_checkpoint_dir(previous: Path, *, hops: int = 100) -> Path | None:
    """`previous` if it holds a checkpoint, else the attempt dir it resumed from (its
    attempt.json), and so on: an attempt killed before it copied its predecessor's
    checkpoint does not make the next one start from scratch."""
    seen: set[Path] = set()
    current: Path | None = previous
    while current is not None and current not in seen and len(seen) < hops:
        if (current / artifacts.CHECKPOINT).exists() or (current / artifacts.PREVIOUS_CHECKPOINT).exists():
            return current
        seen.add(current)
        info = artifacts.read_json(current / ATTEMPT_INFO)
        nxt = info.get("resume_from") if isinstance(info, dict) else None
        current = Path(nxt) if isinstance(nxt, str) and nxt else None
    return None


def default_worker_id(slot: str) -> str:
    """`host:slot-pid`, unique among the live workers of one database."""
    return f"{socket.gethostname()}:{slot}-{os.getpid()}"

