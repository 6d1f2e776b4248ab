"""The full history of a study: every attempt of every run, superseded runs included, with
the provenance `recip show` prints and `recip resume` compares against the checkout.

Nothing here writes; history is never deleted (runs whose config changed are superseded,
attempts only ever move forward through their states).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orchestrator.queue.schema import ATTEMPTS, EVENTS, RUNS, STUDIES


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt with everything recorded about where and how it ran."""

    attempt_id: int
    attempt_no: int
    state: str
    failure_kind: str | None
    exit_code: int | None
    error_type: str | None
    error_message: str | None
    code_sha: str | None
    code_dirty: bool | None
    diff_hash: str | None
    worker_id: str | None
    host: str | None
    gpu: str | None
    pid: int | None
    artifact_dir: str | None
    env: dict[str, Any]
    """Package versions and CUDA_VISIBLE_DEVICES/OMP_NUM_THREADS of the worker."""
    result: dict[str, Any]
    created_at: datetime | None
    claimed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    queued: dict[str, Any] = field(default_factory=dict)
    """Payload of the attempt's first `queued` event: why it exists (submit, lost, crashed,
    resume, rerun) and, for resume/rerun, the checkout's commit, dirty flag and diff hash."""

    @property
    def device(self) -> str | None:
        dev = self.result.get("device")
        return dev if isinstance(dev, str) else self.gpu


@dataclass(frozen=True)
class RunHistory:
    run_id: int
    step: str
    seed: int
    config_hash: str
    config: dict[str, Any]
    max_attempts: int
    current: bool
    """False once a changed config superseded the run (its attempts stay)."""
    attempts: tuple[AttemptRecord, ...] = ()
    parent: str | None = None
    """The step this run's step inherits from (the spec's `parent:`)."""

    @property
    def latest(self) -> AttemptRecord | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def last_commit(self) -> str | None:
        """The commit of the newest attempt that recorded one."""
        for a in reversed(self.attempts):
            if a.code_sha:
                return a.code_sha
        return None


@dataclass(frozen=True)
class StudyHistory:
    name: str
    spec_hash: str
    code_policy: str
    pinned_sha: str | None
    source: str | None
    runs: tuple[RunHistory, ...] = ()

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.step for r in self.runs))


def study_history(conn: Connection, study_id: int, steps: Sequence[str] | None = None,
                  seed: int | None = None) -> StudyHistory:
    """The study's runs (of `steps` / `seed` when given) in submit order, each with every
    attempt in attempt order."""
    s = conn.execute(
        sa.select(STUDIES.c.name, STUDIES.c.spec_hash, STUDIES.c.code_policy, STUDIES.c.pinned_sha,
                  STUDIES.c.source).where(STUDIES.c.id == study_id)
    ).one()
    runs_q = sa.select(RUNS).where(RUNS.c.study_id == study_id).order_by(RUNS.c.id)
    if steps is not None:
        runs_q = runs_q.where(RUNS.c.step_key.in_(list(steps)))
    if seed is not None:
        runs_q = runs_q.where(RUNS.c.seed == seed)
    runs = conn.execute(runs_q).all()
    run_ids = [r.id for r in runs]
    attempts: dict[int, list[Any]] = {}
    queued: dict[int, dict[str, Any]] = {}
    if run_ids:
        for a in conn.execute(
            sa.select(ATTEMPTS).where(ATTEMPTS.c.run_id.in_(run_ids))
            .order_by(ATTEMPTS.c.run_id, ATTEMPTS.c.attempt_no)
        ):
            attempts.setdefault(a.run_id, []).append(a)
        for attempt_id, payload in conn.execute(
            sa.select(EVENTS.c.attempt_id, EVENTS.c.payload_json)
            .join(ATTEMPTS, ATTEMPTS.c.id == EVENTS.c.attempt_id)
            .where(ATTEMPTS.c.run_id.in_(run_ids), EVENTS.c.kind == "queued")
            .order_by(EVENTS.c.id)
        ):
            queued.setdefault(attempt_id, dict(payload or {}))
    out = []
    for r in runs:
        out.append(RunHistory(
            run_id=r.id, step=r.step_key, seed=r.seed, config_hash=r.config_hash,
            config=r.config_json, max_attempts=r.max_attempts, current=r.superseded_at is None,
            attempts=tuple(_record(a, queued.get(a.id, {})) for a in attempts.get(r.id, [])),
            parent=r.parent_step,
        ))
    return StudyHistory(name=s.name, spec_hash=s.spec_hash, code_policy=s.code_policy,
                        pinned_sha=s.pinned_sha, source=s.source, runs=tuple(out))


def _record(a: Any, queued: dict[str, Any]) -> AttemptRecord:
    return AttemptRecord(
        attempt_id=a.id, attempt_no=a.attempt_no, state=a.state, failure_kind=a.failure_kind,
        exit_code=a.exit_code, error_type=a.error_type, error_message=a.error_message,
        code_sha=a.code_sha, code_dirty=a.code_dirty, diff_hash=a.diff_hash,
        worker_id=a.worker_id, host=a.host, gpu=a.gpu, pid=a.pid, artifact_dir=a.artifact_dir,
        env=dict(a.env_json or {}), result=dict(a.result_json or {}), created_at=a.created_at,
        claimed_at=a.claimed_at, started_at=a.started_at, finished_at=a.finished_at,
        queued=queued,
    )
