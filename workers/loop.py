"""WorkerLoop: claim an attempt, run it in a fresh process, keep the database true, repeat.

    register -> loop {
        claim -> attempt_dir.prepare (runs/<study>/<step>/seed<k>/attempt<n>/) -> spawn -> start
        every poll: progress.json -> heartbeat (<= every lease/3); metrics.jsonl -> metric rows
        exit -> outcome.classify -> finish(succeeded | failed+kind | timed_out) or requeue
    }

The loop is the only database writer for its attempt. Every write is fenced by the queue
(workers/retry.py): LeaseLost kills the attempt's process group at once; a database outage
is retried with backoff, and once the lease must have expired the loop kills its attempt
itself, so two processes never train the same attempt. No attempt failure ends the loop.

Pieces: ports.py (the queue), attempt_dir.py, runner.py, outcome.py (the verdict),
retry.py, storage.py (checkpoints any box reads), quarantine.py (bad boxes)."""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.states import LEASED, AttemptState, FailureKind
from workers import attempt_dir, outcome
from workers import provenance as prov
from workers.attempt_dir import ArtifactDirTaken
from workers.clock import Clock, SystemClock
from workers.disk_guard import DiskGuard
from workers.metrics_tail import JsonlTail, MetricThinner, expected_records
from workers.outcome import AttemptOutcome, WorkerReport
from workers.quarantine import Quarantine
from workers.retry import Backoff, FencedWriter, GaveUp, Retrier, Write
from workers.runner import AttemptProcess, Runner, SubprocessRunner, stop_predecessor
from workers.settings import WorkerSettings, default_worker_id
from workers.storage import CheckpointSync, Storage
from workers.train import artifacts
from workers.watch import Watch

if TYPE_CHECKING:
    from orchestrator.queue.types import ClaimedAttempt
    from workers.ports import Queue

logger = logging.getLogger(__name__)

_LIVE = frozenset({AttemptState.QUEUED, *LEASED})

__all__ = ["ArtifactDirTaken", "AttemptOutcome", "WorkerLoop", "WorkerReport",
           "WorkerSettings", "default_worker_id"]


def _log_extra(action: str, claimed: ClaimedAttempt, **more: Any) -> dict[str, Any]:
    """The structured log context of one worker event (procrastinate's `_log_extra`)."""
    return {"action": action, "attempt": claimed.attempt_id, **more}


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
        self._backoff = Backoff(settings.backoff_s, settings.backoff_max_s)
        self._retrier = Retrier(self.clock, self._backoff, self._stop, settings.lease_s)
        self._storage = Storage(settings.storage) if settings.storage else None
        self.lease = timedelta(seconds=settings.lease_s)
        self.current_attempt: int | None = None
        self.disk = DiskGuard(settings.runs_dir, settings.min_free_bytes)
        self.quarantine = Quarantine(queue, self._retrier, settings.worker_id,
                                     settings.quarantine_after)

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
        s, q, r = self.settings, self.queue, self._retrier
        p = self._provenance = self._provenance or prov.collect()
        outcomes: list[AttemptOutcome] = []
        reason = "stopped"
        try:
            r.call("register", lambda: q.register_worker(s.worker_id, self.clock.now(),
                   host=p.host, gpu=p.gpu, pid=os.getpid(), code_sha=p.code.sha))
            self.quarantine.load()
            while not self.stopping:
                if s.max_attempts is not None and len(outcomes) >= s.max_attempts:
                    reason = "max-attempts"
                    break
                code = self._code_state()
                claimed = None if self.quarantine.blocked() else \
                    r.call("claim", functools.partial(self._claim, code.sha))
                if claimed is None:
                    if s.until_empty and self.disk.refused is not None:
                        reason = "low-disk"
                        break
                    if s.until_empty and self._nothing_left():
                        reason = "empty"
                        break
                    r.best_effort(functools.partial(q.worker_heartbeat, s.worker_id,
                                                    self.clock.now(), code_sha=code.sha))
                    self.clock.sleep(s.idle_poll_s, self._stop)
                    continue
                outcomes.append(self.run_one(claimed, code))
                self.quarantine.count(outcomes[-1], self.clock.now())
        except GaveUp:
            pass
        finally:
            r.best_effort(lambda: q.worker_stopped(s.worker_id, self.clock.now()))
        return WorkerReport(s.worker_id, tuple(outcomes), reason)

    def _claim(self, code_sha: str | None) -> ClaimedAttempt | None:
        if self.disk.refusal() is not None:
            return None
        return self.queue.claim(self.worker_id, self.clock.now(), self.lease, code_sha=code_sha,
                                study=self.settings.study)

    def _nothing_left(self) -> bool:
        try:
            snap = self._retrier.call("snapshot", lambda: self.queue.snapshot(
                self.clock.now(), self.settings.study))
        except GaveUp:
            return True
        return not any(r.state in _LIVE for st in snap.studies for r in st.runs)

    # --- one attempt ---------------------------------------------------------------------

    def run_one(self, claimed: ClaimedAttempt, code: prov.CodeState | None = None
                ) -> AttemptOutcome:
        """Run one claimed attempt to its end and record how it ended."""
        code = code or self._code_state()
        self.current_attempt = claimed.attempt_id
        logger.info("claimed %s/%s seed %s attempt %s", claimed.study, claimed.step,
                    claimed.seed, claimed.attempt_no,
                    extra=_log_extra("attempt_claimed", claimed))
        claimed_at = self.clock.monotonic()
        try:
            if claimed.previous_artifact_dir:  # before its checkpoint is looked for
                stop_predecessor(Path(claimed.previous_artifact_dir), self.clock,
                                 self.settings.kill_after_s)
            try:
                prepared = attempt_dir.prepare(
                    claimed, code, self.settings.runs_dir, self.settings.db_label,
                    worker_id=self.worker_id, now=self.clock.now(), storage=self._storage)
            except (ArtifactDirTaken, OSError) as e:
                return self._finish_unstarted(
                    claimed, attempt_dir.prepare_failure(e, self.settings.runs_dir), None)
            outdir, offset = prepared.outdir, prepared.metrics_offset
            try:
                proc = self.runner.spawn(outdir, resume_from=prepared.resume_from)
            except OSError as e:
                return self._finish_unstarted(claimed, outcome.Verdict(
                    AttemptState.FAILED, FailureKind.SPAWN, type(e).__name__,
                    f"cannot start the attempt: {e}"), outdir)
            return self._supervise(claimed, code, outdir, proc, claimed_at, offset)
        finally:
            self.current_attempt = None

    def _finish_unstarted(self, claimed: ClaimedAttempt, verdict: outcome.Verdict,
                          outdir: Path | None) -> AttemptOutcome:
        logger.warning("attempt %s could not start: %s", claimed.attempt_id, verdict.message,
                       extra=_log_extra("attempt_spawn_failed", claimed))
        return self._finish(claimed, outdir, verdict, None, None)

    def _supervise(self, claimed: ClaimedAttempt, code: prov.CodeState, outdir: Path,
                   proc: AttemptProcess, claimed_at: float, offset: int) -> AttemptOutcome:
        s = self.settings
        p = self._provenance or prov.collect()
        fence = FencedWriter(self.clock, s.lease_s, self._backoff, claimed_at,
                             claimed.attempt_id)
        w = Watch(claimed=claimed, outdir=outdir, proc=proc, fence=fence,
                   tail=JsonlTail(outdir / artifacts.METRICS, offset),
                   thinner=MetricThinner(s.metric_points,
                                         lambda: expected_records(claimed.config, dict(w.progress or {}) or None)),
                   sync=CheckpointSync(self._storage, outdir, attempt_dir.storage_rel(claimed))
                   if self._storage else None)
        env = p.env()
        started = fence.write(lambda: self.queue.start(
            claimed.attempt_id, s.worker_id, self.clock.now(), self.lease, env=env,
            artifact_dir=str(outdir), code_sha=code.sha, code_dirty=code.dirty,
            diff_hash=code.diff_hash, host=p.host, gpu=p.gpu, pid=proc.pid), until_fenced=True)
        if started is Write.LOST:
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
            if self._pump_metrics(w, now) is Write.LOST:
                return self._fenced(w, "lease lost while recording metrics")
            if rc is not None:
                break
            if now >= w.next_heartbeat:
                self._sync_checkpoint(w)
                w.progress = attempt_dir.read_progress(outdir) or w.progress
                if self._heartbeat(w, now, beat) is Write.LOST:
                    return self._fenced(w, "lease lost (heartbeat fenced out)")
            if fence.expired:
                return self._fenced(w, "database unreachable until the lease expired")
            if term_at is None:
                if self.stopping:
                    why, term_at = outcome.STOP, now
                    proc.terminate()
                elif deadline is not None and now >= deadline:
                    why, term_at = outcome.TIMEOUT, now
                    logger.warning("attempt %s past budget + grace: terminating", claimed.attempt_id,
                                   extra=_log_extra("attempt_timeout", claimed, grace=s.grace_s))
                    proc.terminate()
            elif now - term_at >= s.kill_after_s:
                proc.kill()
            self.clock.sleep(s.poll_s, None if term_at is not None else self._stop)
        w.pending.extend(w.thinner.flush())
        self._sync_checkpoint(w, final=True)
        if self._pump_metrics(w, self.clock.monotonic(), final=True) is Write.LOST:
            return self._fenced(w, "lease lost while recording the last metrics", killed=False)
        return self._conclude(w, rc, why, budget)

    def _conclude(self, w: Watch, rc: int, why: str | None, budget: float | None
                  ) -> AttemptOutcome:
        result = artifacts.read_result(w.outdir)
        verdict = outcome.classify(outcome.Facts(
            result=dict(result) if result is not None else None, rc=rc, why=why,
            budget_s=budget, grace_s=self.settings.grace_s,
            log_tail=attempt_dir.log_tail(w.outdir),
            disk_full=attempt_dir.disk_full(w.outdir, rc)))
        if not verdict.requeue:
            return self._finish(w.claimed, w.outdir, verdict, rc, result, w)
        claimed = w.claimed
        reason = "stopped" if why == outcome.STOP else "preempted"  # signalled directly
        done = w.fence.write(lambda: self.queue.requeue(
            claimed.attempt_id, self.worker_id, self.clock.now(), reason=reason),
            until_fenced=True)
        state = AttemptState.QUEUED if done is not Write.LOST else AttemptState.LOST
        logger.info("attempt %s stopped (exit %s): back to queued", claimed.attempt_id, rc,
                    extra=_log_extra("attempt_requeued", claimed))
        return AttemptOutcome.of(claimed, state.value, None, rc, verdict.message, w.outdir)

    def _finish(self, claimed: ClaimedAttempt, outdir: Path | None, verdict: outcome.Verdict,
                rc: int | None, result: artifacts.Result | None,
                w: Watch | None = None) -> AttemptOutcome:
        kind = verdict.kind

        def write() -> None:
            self.queue.finish(claimed.attempt_id, self.worker_id, self.clock.now(),
                              verdict.state, failure_kind=kind, exit_code=rc,
                              error_type=verdict.error_type, error_message=verdict.message,
                              result=dict(result) if result is not None else None)

        if w is not None:
            ok = w.fence.write(write, until_fenced=True) is not Write.LOST
        else:
            try:
                self._retrier.call("finish", write, fence=True, while_stopping=True)
                ok = True
            except GaveUp:
                ok = False
        final = verdict.state.value if ok else AttemptState.LOST.value
        logger.info("attempt %s %s%s", claimed.attempt_id, final,
                    f" ({kind.value}: {verdict.message})" if kind else "",
                    extra=_log_extra("attempt_finished", claimed))
        error = f"{verdict.error_type}: {verdict.message}" if verdict.error_type else None
        return AttemptOutcome.of(claimed, final, kind.value if kind else None, rc,
                                 error or verdict.message, outdir)

    def _fenced(self, w: Watch, why: str, *, killed: bool = True) -> AttemptOutcome:
        if killed:
            w.proc.kill()
        logger.warning("attempt %s: %s: process group killed", w.claimed.attempt_id, why,
                       extra=_log_extra("attempt_fenced", w.claimed))
        return AttemptOutcome.of(w.claimed, AttemptState.LOST.value, None, w.proc.poll(), why,
                             w.outdir)

    # --- files -> database ---------------------------------------------------------------

    def _sync_checkpoint(self, w: Watch, *, final: bool = False) -> None:
        """Copy a new checkpoint to storage and record where it is, fenced."""
        if w.sync is not None:
            w.sync.step(lambda uri, it: w.fence.write(functools.partial(
                self.queue.record_checkpoint, w.claimed.attempt_id, self.worker_id,
                self.clock.now(), uri=uri, iteration=it), until_fenced=final) is Write.OK,
                final=final)

    def _heartbeat(self, w: Watch, now: float, beat: float) -> Write:
        s = self.settings
        progress = dict(w.progress) if w.progress is not None else None
        done = w.fence.write(lambda: self.queue.heartbeat(
            w.claimed.attempt_id, s.worker_id, self.clock.now(), self.lease, progress))
        if done is Write.OUTAGE:
            w.next_heartbeat = now + w.fence.next_wait()
        elif done is Write.OK:
            w.next_heartbeat = now + beat
            self._retrier.best_effort(lambda: self.queue.worker_heartbeat(
                s.worker_id, self.clock.now(), w.claimed.attempt_id))
        return done

    def _pump_metrics(self, w: Watch, now: float, *, final: bool = False) -> Write | None:
        for record in w.tail.read():
            w.pending.extend(w.thinner.rows(record))
        if not w.pending or (now < w.next_metrics and not final):
            return None
        rows = list(w.pending)
        tries = 0
        while True:
            done = w.fence.write(lambda: self.queue.record_metrics(
                w.claimed.attempt_id, self.worker_id, rows))
            if done is not Write.OUTAGE:
                if done is Write.OK:
                    del w.pending[: len(rows)]
                return done
            tries += 1
            w.next_metrics = now + w.fence.next_wait()
            if not final or tries > 50:
                return Write.OUTAGE
            self.clock.sleep(w.fence.next_wait())
            if w.fence.expired:
                return Write.LOST
