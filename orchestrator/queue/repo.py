"""QueueRepo: the durable queue over one engine, the same on SQLite and PostgreSQL.

Every state change is a guarded `UPDATE ... WHERE id = :id AND state IN (:expected)`; the
writes a worker makes for its attempt (start, heartbeat, metrics, finish, requeue) are also
fenced on `worker_id = :me`, so once an attempt is reaped, cancelled or re-queued its old
worker changes nothing and gets `LeaseLost`. Each change writes its event in the same
transaction. Methods take `now` (aware UTC) so tests drive time with a fake clock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

from orchestrator.core import states
from orchestrator.core.errors import (
    DatabaseUnavailable,
    LeaseLost,
    QueueError,
    SchemaOutOfDate,
    StaleTransition,
    UnknownStep,
    UnknownStudy,
)
from orchestrator.core.plan import StudyPlan
from orchestrator.core.results import AttemptResult, MetricSeries, MetricSummaries, StudyResults
from orchestrator.core.states import TERMINAL, AttemptState, FailureKind, can_transition
from orchestrator.core.views import Snapshot
from orchestrator.queue import history, looks, migrate, reads
from orchestrator.queue.db import READ_ONLY, describe_error, is_read_only, make_engine, redact_url
from orchestrator.queue.history import StudyHistory
from orchestrator.queue.looks import SeedsAdded
from orchestrator.queue.schema import (
    ATTEMPTS,
    EVENTS,
    METRICS,
    RUNS,
    STUDIES,
    WORKERS,
)
from orchestrator.queue.types import AttemptRef, ClaimedAttempt, SubmitResult, finite_json

__all__ = ["ClaimedAttempt", "QueueRepo", "SeedsAdded", "SubmitResult"]

logger = logging.getLogger(__name__)

QUEUED = AttemptState.QUEUED.value
CLAIMED = AttemptState.CLAIMED.value
RUNNING = AttemptState.RUNNING.value
LEASED = states.values(states.LEASED)
LIVE = states.values(states.LIVE)
PROGRESS_KEYS: dict[str, type] = {
    "iter": int, "tokens": int, "train_s": float, "fraction": float,
    "loss": float, "val_loss": float, "best_val_loss": float, "lr": float,
    "eval_s": float, "phase": str,
}
RESULT_TO_COLUMN = {
    "iters": "iter", "tokens": "tokens", "train_s": "train_s",
    "final_val_loss": "val_loss", "best_val_loss": "best_val_loss",
    "final_train_loss": "loss", "final_lr": "lr", "eval_s": "eval_s",
}
_PHASE_MAX = 32  # attempts.phase is a String(32)
_MESSAGE_MAX = 8000


FRESH_START = "fresh_start"
"""Event kind of an attempt queued by `recip resume --fresh`: it carries no checkpoint."""


def _lit(*states: str) -> sa.ColumnElement[bool]:
    """`attempts.state` tested against literals, so partial indexes stay usable."""
    if len(states) == 1:
        return ATTEMPTS.c.state == sa.literal_column(repr(states[0]))
    return ATTEMPTS.c.state.in_([sa.literal_column(repr(s)) for s in states])


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now!r}: pass an aware UTC datetime")
    return now


def _number(kind: type, value: Any) -> Any:
    """A progress or result value as its column's type; None when it is not one (NaN too).
    A string column (the phase) takes only a string, cut to the column's width."""
    if value is None:
        return None
    if kind is str:
        return value[:_PHASE_MAX] if isinstance(value, str) else None
    try:
        out = kind(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if out != out else out  # NaN -> None: the same on both backends


def worker_slot(worker_id: str) -> str:
    """`host:slot` of a `host:slot-pid` worker id (the id itself for any other id): what a
    quarantine sticks to across restarts of the same box's worker."""
    head, sep, pid = worker_id.rpartition("-")
    return head if sep and ":" in head and pid.isdigit() else worker_id


def _claim_cte(picked: Any, worker_id: str, now: datetime, expires: datetime,
               payload: dict[str, Any]) -> sa.Select[Any]:
    """PostgreSQL's claim as one statement: lease the picked row, append its `claimed`
    event, return the attempt with its run, study and previous artifact directory."""
    claimed = (
        sa.update(ATTEMPTS)
        .where(ATTEMPTS.c.id == picked.c.id, _lit(QUEUED))
        .values(state=CLAIMED, worker_id=worker_id, claimed_at=now, heartbeat_at=now,
                lease_expires_at=expires)
        .returning(ATTEMPTS.c.id, ATTEMPTS.c.run_id, ATTEMPTS.c.attempt_no)
        .cte("claimed")
    )
    events = EVENTS.c
    event = (
        sa.insert(EVENTS)
        .from_select(["attempt_id", "at", "kind", "payload_json"], sa.select(
            claimed.c.id, sa.bindparam("ev_at", now, type_=events.at.type),
            sa.literal("claimed", sa.String()),
            sa.bindparam("ev_payload", finite_json(payload), type_=events.payload_json.type)))
        .returning(EVENTS.c.id)
        .cte("claimed_event")
    )
    previous = (
        sa.select(ATTEMPTS.c.artifact_dir)
        .where(ATTEMPTS.c.run_id == claimed.c.run_id, ATTEMPTS.c.attempt_no <= claimed.c.attempt_no,
               ATTEMPTS.c.artifact_dir.is_not(None))
        .order_by(ATTEMPTS.c.attempt_no.desc()).limit(1)
        .correlate(claimed)
        .scalar_subquery()
    )
    fresh = sa.exists().where(EVENTS.c.attempt_id == claimed.c.id,
                              EVENTS.c.kind == FRESH_START).correlate(claimed)
    return (
        sa.select(claimed.c.id, claimed.c.run_id, claimed.c.attempt_no, STUDIES.c.name,
                  RUNS.c.step_key, RUNS.c.seed, RUNS.c.config_json, RUNS.c.config_hash,
                  RUNS.c.budget_seconds, RUNS.c.max_attempts, previous.label("previous"),
                  fresh.label("fresh"))
        .select_from(claimed)
        .join(RUNS, RUNS.c.id == claimed.c.run_id)
        .join(STUDIES, STUDIES.c.id == RUNS.c.study_id)
        .add_cte(event)
    )


class QueueRepo:
    """The queue's repository over `engine` (see the module docstring for the guarantees)."""

    def __init__(self, engine: Engine, *, label: str = "") -> None:
        self.engine = engine
        self.label = label or redact_url(engine.url.render_as_string(hide_password=True))
        self.dialect = engine.dialect.name
        self.read_only = is_read_only(engine)
        """Opened from a read-only SQLite URL: reads work, writes fail with one line."""
        self._last_reap: datetime | None = None
        self._lock_path: str | None = None
        if self.dialect == "sqlite" and engine.url.database and not self.read_only:
            self._lock_path = f"{engine.url.database}-claims.lock"

    @classmethod
    def open(cls, url: str, *, check_schema: bool = True) -> QueueRepo:
        """A repo on a new engine for `url` (SchemaOutOfDate unless at head, when checked)."""
        engine = migrate.open_checked(url) if check_schema else make_engine(url)
        return cls(engine, label=redact_url(url))

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> QueueRepo:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, read_only: bool = False) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                if read_only:  # one consistent view across the read's queries
                    conn.execution_options(**{READ_ONLY: True}, **(
                        {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
                        if self.dialect == "postgresql" else {}))
                with conn.begin():
                    yield conn
        except exc.DBAPIError as e:
            raise self._map_error(e) from e

    def _map_error(self, e: exc.DBAPIError) -> QueueError:
        text = describe_error(e)
        low = text.lower()
        if "no such table" in low or "undefinedtable" in type(e.orig).__name__.lower() or (
            "relation" in low and "does not exist" in low
        ):
            return SchemaOutOfDate(
                f"database {self.label} lacks the recip schema ({text}): run `recip db upgrade`"
            )
        if self.read_only and "readonly database" in low:
            return QueueError(f"database {self.label} is open read-only (?mode=ro) and this "
                              "command writes: drop ?mode=ro to change it")
        if isinstance(e, exc.IntegrityError):
            return QueueError(f"database {self.label} refused the change: {text}")
        if isinstance(e, exc.OperationalError | exc.InterfaceError) or e.connection_invalidated:
            return DatabaseUnavailable(f"database {self.label} unavailable: {text}")
        return QueueError(f"database {self.label}: {text}")

    def _insert(self, table: sa.Table) -> Any:
        # imported here: the other backend's dialect module stays unloaded (startup cost)
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)

    @staticmethod
    def _event(conn: Connection, attempt_ids: Sequence[int], now: datetime, kind: str,
               payload: dict[str, Any] | None = None) -> None:
        if attempt_ids:
            conn.execute(sa.insert(EVENTS), [
                {"attempt_id": a, "at": now, "kind": kind, "payload_json": finite_json(payload)}
                for a in attempt_ids
            ])

    def _lock_study(self, conn: Connection, study: str) -> None:
        """Serialise study-wide changes (submit, resume) on PostgreSQL; SQLite's write
        transactions are serial already."""
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:n))"),
                         {"n": f"recip-study:{study}"})

    # -- submit -------------------------------------------------------------------------

    def submit(self, plan: StudyPlan, now: datetime) -> SubmitResult:
        """Add the plan's study and runs; idempotent (same plan twice = no new rows).

        A (step, seed) whose config hash changed gets a new current run with attempt 1
        queued; the run it supersedes keeps its history, and its queued attempt is
        cancelled. The current runs of a changed step whose seeds the plan lacks (seeds
        added after a look) are superseded as well: their config is the old one."""
        now = _aware(now)
        seen: set[tuple[str, int]] = set()
        for r in plan.runs:
            if (r.step, r.seed) in seen:
                raise QueueError(f"plan {plan.name!r} has step {r.step!r} seed {r.seed} twice")
            seen.add((r.step, r.seed))
        with self._tx() as conn:
            self._lock_study(conn, plan.name)
            values = {
                "description": plan.description, "spec_hash": plan.spec_hash,
                "spec_json": plan.spec, "source": plan.source, "code_policy": plan.code_policy,
                "pinned_sha": plan.pinned_sha, "updated_at": now,
            }
            study_id = conn.execute(
                sa.select(STUDIES.c.id).where(STUDIES.c.name == plan.name)
            ).scalar_one_or_none()
            created = study_id is None
            if study_id is None:
                study_id = conn.execute(
                    sa.insert(STUDIES).values(name=plan.name, created_at=now, **values)
                    .returning(STUDIES.c.id)
                ).scalar_one()
            else:
                conn.execute(sa.update(STUDIES).where(STUDIES.c.id == study_id).values(**values))

            known: dict[tuple[str, int, str], int] = {}
            current: dict[tuple[str, int], tuple[int, str]] = {}
            for rid, step, seed, chash, superseded in conn.execute(
                sa.select(RUNS.c.id, RUNS.c.step_key, RUNS.c.seed, RUNS.c.config_hash,
                          RUNS.c.superseded_at).where(RUNS.c.study_id == study_id)
            ):
                known[(step, seed, chash)] = rid
                if superseded is None:
                    current[(step, seed)] = (rid, chash)

            new, reactivate, supersede = [], [], []
            changed: dict[str, None] = {}
            unchanged = 0
            for r in plan.runs:
                cur = current.get((r.step, r.seed))
                if cur is not None and cur[1] == r.config_hash:
                    unchanged += 1
                    continue
                if cur is not None:
                    supersede.append(cur[0])
                    changed.setdefault(r.step, None)
                old = known.get((r.step, r.seed, r.config_hash))
                if old is not None:
                    reactivate.append(old)
                else:
                    new.append(r)
            if changed:  # seeds the plan lacks (e.g. added by `recip seeds add`) keep the
                # old config: a changed step supersedes them too
                planned = {(r.step, r.seed) for r in plan.runs}
                supersede += [rid for (step, seed), (rid, _) in current.items()
                              if step in changed and (step, seed) not in planned]

            cancelled: list[int] = []
            if supersede:
                conn.execute(sa.update(RUNS).where(RUNS.c.id.in_(supersede))
                             .values(superseded_at=now))
                cancelled = list(conn.execute(
                    sa.update(ATTEMPTS)
                    .where(ATTEMPTS.c.run_id.in_(supersede), _lit(QUEUED))
                    .values(state=AttemptState.CANCELLED.value, finished_at=now,
                            error_message="superseded by a changed config")
                    .returning(ATTEMPTS.c.id)
                ).scalars())
                self._event(conn, cancelled, now, "cancelled", {"reason": "superseded"})
            if reactivate:
                conn.execute(sa.update(RUNS).where(RUNS.c.id.in_(reactivate))
                             .values(superseded_at=None))

            queued = 0
            if new:
                run_ids = list(conn.execute(
                    sa.insert(RUNS).returning(RUNS.c.id, sort_by_parameter_order=True),
                    [{
                        "study_id": study_id, "step_key": r.step, "seed": r.seed,
                        "config_hash": r.config_hash, "config_json": r.config,
                        "parent_step": r.parent, "description": r.description,
                        "priority": r.priority, "max_attempts": r.max_attempts,
                        "budget_seconds": r.budget_seconds, "created_at": now,
                    } for r in new],
                ).scalars())
                attempt_ids = list(conn.execute(
                    sa.insert(ATTEMPTS).returning(ATTEMPTS.c.id, sort_by_parameter_order=True),
                    [{"run_id": rid, "attempt_no": 1, "state": QUEUED, "priority": r.priority,
                      "created_at": now} for rid, r in zip(run_ids, new, strict=True)],
                ).scalars())
                self._event(conn, attempt_ids, now, "queued",
                            {"reason": "submit", "overrides": plan.overrides})
                queued = len(attempt_ids)
        result = SubmitResult(
            study=plan.name, study_created=created,
            new_runs=tuple((r.step, r.seed, r.config_hash) for r in new),
            unchanged_runs=unchanged, changed_steps=tuple(changed), queued_attempts=queued,
            superseded_runs=len(supersede), cancelled_attempts=len(cancelled),
        )
        logger.info("study submitted", extra={"action": "study_submitted", "study": plan.name,
                                              "new_runs": len(new), "changed": list(changed)})
        return result

    # -- claim and leases ---------------------------------------------------------------

    REAP_EVERY = timedelta(seconds=1)
    """A claim reaps expired leases at most this often (by the `now` it is given) per repo,
    and always when it finds nothing queued: a lease lasts minutes, so a lost attempt is
    re-queued at most a second late while a claim costs one statement, not two."""

    def claim(self, worker_id: str, now: datetime, lease: timedelta, *,
              code_sha: str | None = None, study: str | None = None) -> ClaimedAttempt | None:
        """Lease the next queued attempt (priority desc, id) to `worker_id`, or None.

        Reaps expired leases first (amortised: see REAP_EVERY). PostgreSQL: one statement,
        a CTE that picks with `FOR UPDATE SKIP LOCKED`, updates the lease, appends the
        `claimed` event and returns what the worker needs. SQLite: the same steps under
        `BEGIN IMMEDIATE`, claimers of one database file queued on a file lock (woken in
        order, where SQLite's busy handler would sleep up to 100 ms per retry). Studies
        pinned to a commit are only claimed by a worker whose `code_sha` matches; with `study`,
        only that study's attempts are claimed. An attempt queued with a fresh start
        (`recip resume --fresh`) gets no previous artifact directory."""
        now = _aware(now)
        reap = self._last_reap is None or now - self._last_reap >= self.REAP_EVERY \
            or now < self._last_reap
        got = self._claim_once(worker_id, now, lease, code_sha, study, reap=reap)
        if got is None and not reap:  # an empty queue may hide an expired lease
            got = self._claim_once(worker_id, now, lease, code_sha, study, reap=True)
        if got is not None:
            logger.info("attempt claimed", extra={"action": "attempt_claimed",
                                                  "attempt": got.attempt_id, "worker": worker_id})
        return got

    def _claim_once(self, worker_id: str, now: datetime, lease: timedelta,
                    code_sha: str | None, study: str | None, *, reap: bool
                    ) -> ClaimedAttempt | None:
        eligible = STUDIES.c.code_policy != "pinned"
        if code_sha is not None:  # pinned_sha may be abbreviated (hex only: no LIKE wildcards)
            eligible = sa.or_(eligible, sa.literal(code_sha).startswith(STUDIES.c.pinned_sha))
        if study is not None:  # `recip run`: only the study it submitted
            eligible = sa.and_(eligible, STUDIES.c.name == study)
        pick = (
            sa.select(ATTEMPTS.c.id)
            .join(RUNS, RUNS.c.id == ATTEMPTS.c.run_id)
            .join(STUDIES, STUDIES.c.id == RUNS.c.study_id)
            .where(_lit(QUEUED), eligible)
            .order_by(ATTEMPTS.c.priority.desc(), ATTEMPTS.c.id)
            .limit(1)
            .with_for_update(skip_locked=True, of=ATTEMPTS)
        )
        expires = now + lease
        payload = {"worker": worker_id, "lease_expires_at": expires.isoformat()}
        with self._claim_lock(), self._tx() as conn:
            if reap:
                self._reap(conn, now)
                self._last_reap = now
            if self.dialect == "postgresql":
                row = conn.execute(_claim_cte(pick.cte("picked"), worker_id, now, expires,
                                              payload)).first()
                if row is None:
                    return None
            else:
                row = self._claim_steps(conn, pick.scalar_subquery(), worker_id, now, expires,
                                        payload)
                if row is None:
                    return None
        return ClaimedAttempt(
            attempt_id=row.id, attempt_no=row.attempt_no, run_id=row.run_id, study=row.name,
            step=row.step_key, seed=row.seed, config=row.config_json,
            config_hash=row.config_hash, budget_seconds=row.budget_seconds,
            max_attempts=row.max_attempts,
            previous_artifact_dir=None if row.fresh else row.previous,
            lease_expires_at=expires,
        )

    def _claim_steps(self, conn: Connection, pick: Any, worker_id: str, now: datetime,
                     expires: datetime, payload: dict[str, Any]) -> Any:
        """SQLite's claim: update, read the run, append the event (one write transaction)."""
        claimed = conn.execute(
            sa.update(ATTEMPTS)
            .where(ATTEMPTS.c.id == pick, _lit(QUEUED))
            .values(state=CLAIMED, worker_id=worker_id, claimed_at=now, heartbeat_at=now,
                    lease_expires_at=expires)
            .returning(ATTEMPTS.c.id, ATTEMPTS.c.run_id, ATTEMPTS.c.attempt_no)
        ).first()
        if claimed is None:
            return None
        previous = (
            sa.select(ATTEMPTS.c.artifact_dir)
            .where(ATTEMPTS.c.run_id == claimed.run_id, ATTEMPTS.c.attempt_no <= claimed.attempt_no,
                   ATTEMPTS.c.artifact_dir.is_not(None))
            .order_by(ATTEMPTS.c.attempt_no.desc()).limit(1)
            .scalar_subquery()
        )
        fresh = sa.exists().where(EVENTS.c.attempt_id == claimed.id, EVENTS.c.kind == FRESH_START)
        row = conn.execute(
            sa.select(sa.literal(claimed.id).label("id"),
                      sa.literal(claimed.run_id).label("run_id"),
                      sa.literal(claimed.attempt_no).label("attempt_no"),
                      STUDIES.c.name, RUNS.c.step_key, RUNS.c.seed, RUNS.c.config_json,
                      RUNS.c.config_hash, RUNS.c.budget_seconds, RUNS.c.max_attempts,
                      previous.label("previous"), fresh.label("fresh"))
            .join(STUDIES, STUDIES.c.id == RUNS.c.study_id)
            .where(RUNS.c.id == claimed.run_id)
        ).one()
        self._event(conn, [claimed.id], now, "claimed", payload)
        return row

    @contextmanager
    def _claim_lock(self) -> Iterator[None]:
        """On SQLite, claimers of one file wait for each other on an flock (FIFO-ish wake-up
        at release); elsewhere nothing."""
        if self._lock_path is None:
            yield
            return
        import fcntl

        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def reap_expired(self, now: datetime) -> list[int]:
        """Mark leased attempts whose lease expired `lost`, queue their runs' next attempts
        (within max_attempts); return the reaped attempt ids. A read-only database is
        looked at, not changed: nothing is reaped."""
        now = _aware(now)
        if self.read_only:
            return []
        with self._tx() as conn:
            return self._reap(conn, now)

    def _reap(self, conn: Connection, now: datetime) -> list[int]:
        rows = conn.execute(
            sa.update(ATTEMPTS)
            .where(_lit(*LEASED), ATTEMPTS.c.lease_expires_at < now)
            .values(state=AttemptState.LOST.value, finished_at=now,
                    error_message="lease expired: the worker stopped heartbeating")
            .returning(ATTEMPTS.c.id, ATTEMPTS.c.run_id, ATTEMPTS.c.worker_id)
        ).all()
        for attempt_id, run_id, worker in rows:
            self._event(conn, [attempt_id], now, "lost", {"worker": worker})
            self._queue_next(conn, run_id, now, reason="lost", after=attempt_id)
            # info, not warning: the caller says it once (`recip status`: "reaped N expired
            # leases"), the `lost` event records each; a bare line per attempt was noise
            logger.info("attempt %s of worker %s: lease expired, marked lost", attempt_id,
                        worker, extra={"action": "attempt_lost", "attempt": attempt_id,
                                       "worker": worker})
        return [r[0] for r in rows]

    def _queue_next(self, conn: Connection, run_id: int, now: datetime, *, reason: str,
                    after: int | None, bounded: bool = True,
                    payload: dict[str, Any] | None = None) -> int | None:
        """Queue attempt_no+1 of `run_id` unless bounded by max_attempts or superseded."""
        run = conn.execute(
            sa.select(RUNS.c.max_attempts, RUNS.c.priority, RUNS.c.superseded_at)
            .where(RUNS.c.id == run_id)
        ).one()
        count, last = conn.execute(
            sa.select(sa.func.count(), sa.func.max(ATTEMPTS.c.attempt_no))
            .where(ATTEMPTS.c.run_id == run_id)
        ).one()
        if bounded and (count >= run.max_attempts or run.superseded_at is not None):
            return None
        attempt_no = (last or 0) + 1
        attempt_id: int = conn.execute(
            sa.insert(ATTEMPTS).values(run_id=run_id, attempt_no=attempt_no, state=QUEUED,
                                         priority=run.priority, created_at=now)
            .returning(ATTEMPTS.c.id)
        ).scalar_one()
        self._event(conn, [attempt_id], now, "queued",
                    {**(payload or {}), "reason": reason, "after": after})
        if payload and payload.get("fresh"):  # `recip resume --fresh`: no checkpoint carried
            self._event(conn, [attempt_id], now, FRESH_START, None)
        return attempt_no

    def _fenced(self, conn: Connection, attempt_id: int, worker_id: str,
                states: Sequence[str], values: dict[str, Any], action: str) -> int:
        """Apply `values` if `worker_id` holds the attempt in one of `states`; the run id."""
        row = conn.execute(
            sa.update(ATTEMPTS)
            .where(ATTEMPTS.c.id == attempt_id, ATTEMPTS.c.worker_id == worker_id,
                   ATTEMPTS.c.state.in_(states))
            .values(**values)
            .returning(ATTEMPTS.c.run_id)
        ).scalar_one_or_none()
        if row is None:
            self._refuse(conn, attempt_id, worker_id, action)
        return int(row)

    def _refuse(self, conn: Connection, attempt_id: int, worker_id: str,
                action: str) -> NoReturn:
        found = conn.execute(
            sa.select(ATTEMPTS.c.state, ATTEMPTS.c.worker_id).where(ATTEMPTS.c.id == attempt_id)
        ).first()
        if found is None:
            raise LeaseLost(f"attempt {attempt_id} does not exist; worker {worker_id} cannot "
                            f"{action} it")
        state, owner = found
        if owner != worker_id or state not in LEASED:
            raise LeaseLost(
                f"worker {worker_id} no longer holds attempt {attempt_id} (now {state}"
                f"{f', worker {owner}' if owner else ''}); cannot {action}: stop the attempt"
            )
        raise StaleTransition(f"attempt {attempt_id} is {state}: cannot {action}")

    def start(self, attempt_id: int, worker_id: str, now: datetime, lease: timedelta, *,
              artifact_dir: str, code_sha: str | None, code_dirty: bool | None,
              diff_hash: str | None, host: str, gpu: str | None, pid: int | None,
              env: dict[str, Any]) -> None:
        """claimed -> running with the process's provenance; fenced."""
        now = _aware(now)
        with self._tx() as conn:
            self._fenced(conn, attempt_id, worker_id, (CLAIMED,), {
                "state": RUNNING, "started_at": now, "heartbeat_at": now,
                "lease_expires_at": now + lease, "artifact_dir": artifact_dir,
                "code_sha": code_sha, "code_dirty": code_dirty, "diff_hash": diff_hash,
                "host": host, "gpu": gpu, "pid": pid, "env_json": finite_json(env),
            }, "start")
            self._event(conn, [attempt_id], now, "started",
                        {"worker": worker_id, "host": host, "gpu": gpu, "pid": pid,
                         "code_sha": code_sha, "code_dirty": code_dirty})

    def heartbeat(self, attempt_id: int, worker_id: str, now: datetime, lease: timedelta,
                  progress: dict[str, Any] | None = None) -> None:
        """Extend the lease to now + lease and copy progress into the attempt; fenced
        (LeaseLost once the attempt was reaped, cancelled or re-queued)."""
        now = _aware(now)
        values: dict[str, Any] = {"heartbeat_at": now, "lease_expires_at": now + lease}
        for key, kind in PROGRESS_KEYS.items():
            if progress and key in progress:
                values[key] = _number(kind, progress[key])
        with self._tx() as conn:
            self._fenced(conn, attempt_id, worker_id, LEASED, values, "heartbeat")

    def record_metrics(self, attempt_id: int, worker_id: str,
                       rows: Sequence[tuple[str, int, float]]) -> int:
        """Upsert (name, step, value) rows of the attempt; fenced. Returns rows written."""
        unique = {(str(n), int(s)): float(v) for n, s, v in rows}
        with self._tx() as conn:
            held = conn.execute(
                sa.select(ATTEMPTS.c.id)
                .where(ATTEMPTS.c.id == attempt_id, ATTEMPTS.c.worker_id == worker_id,
                       ATTEMPTS.c.state.in_(LEASED))
                .with_for_update(read=True)
            ).first()
            if held is None:
                self._refuse(conn, attempt_id, worker_id, "record metrics")
            if unique:
                stmt = self._insert(METRICS)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[METRICS.c.attempt_id, METRICS.c.name, METRICS.c.step],
                    set_={"value": stmt.excluded.value},
                )
                conn.execute(stmt, [
                    {"attempt_id": attempt_id, "name": n, "step": s, "value": v}
                    for (n, s), v in unique.items()
                ])
        return len(unique)

    def finish(self, attempt_id: int, worker_id: str, now: datetime, state: AttemptState, *,
               failure_kind: FailureKind | None = None, exit_code: int | None = None,
               error_type: str | None = None, error_message: str | None = None,
               result: dict[str, Any] | None = None) -> None:
        """Move the attempt to terminal `state`, storing its result; fenced.

        A lost or crashed attempt gets the run's next attempt queued in the same transaction
        while the run has fewer than max_attempts attempts; other failures wait for
        `recip resume`."""
        now = _aware(now)
        state = AttemptState(state)
        if state not in TERMINAL:
            raise QueueError(f"finish needs a terminal state, not {state}")
        sources = [s.value for s in (AttemptState.CLAIMED, AttemptState.RUNNING)
                   if can_transition(s, state)]
        values: dict[str, Any] = {
            "state": state.value, "finished_at": now,
            "failure_kind": FailureKind(failure_kind).value if failure_kind else None,
            "exit_code": exit_code, "error_type": error_type,
            "error_message": error_message[:_MESSAGE_MAX] if error_message else None,
            "result_json": finite_json(result) if result is not None else None,
        }
        for key, column in RESULT_TO_COLUMN.items():
            if result and result.get(key) is not None:
                values[column] = _number(PROGRESS_KEYS[column], result[key])
        with self._tx() as conn:
            run_id = self._fenced(conn, attempt_id, worker_id, sources, values, f"finish as {state}")
            self._event(conn, [attempt_id], now, "finished", {
                "state": state.value, "failure_kind": values["failure_kind"],
                "exit_code": exit_code, "error_type": error_type,
            })
            fallback = result.get("checkpoint_fallback") if result else None
            if isinstance(fallback, dict):  # an unreadable checkpoint was passed over
                self._event(conn, [attempt_id], now, "checkpoint_fallback", fallback)
            if state is AttemptState.LOST or failure_kind == FailureKind.CRASHED:
                self._queue_next(conn, run_id, now, reason=values["failure_kind"] or state.value,
                                 after=attempt_id)
        logger.info("attempt finished", extra={"action": "attempt_finished",
                                               "attempt": attempt_id, "state": state.value})

    def requeue(self, attempt_id: int, worker_id: str, now: datetime, *,
                reason: str = "stopped") -> None:
        """claimed/running -> queued, same attempt row, lease released; fenced. For a worker
        stopping cleanly or preempted (`reason`): the attempt resumes from its own
        checkpoint and costs no retry (max_attempts counts attempt rows)."""
        now = _aware(now)
        with self._tx() as conn:
            self._fenced(conn, attempt_id, worker_id, LEASED, {
                "state": QUEUED, "worker_id": None, "claimed_at": None,
                "lease_expires_at": None,
            }, "requeue")
            self._event(conn, [attempt_id], now, "requeued",
                        {"worker": worker_id, "reason": reason})

    def record_checkpoint(self, attempt_id: int, worker_id: str, now: datetime, *,
                          uri: str, iteration: int | None) -> None:
        """Record where the attempt's newest checkpoint is stored (a `checkpoint` event);
        fenced, so a worker that lost the attempt records nothing."""
        now = _aware(now)
        with self._tx() as conn:
            self._fenced(conn, attempt_id, worker_id, LEASED, {"heartbeat_at": now},
                         "record a checkpoint")
            self._event(conn, [attempt_id], now, "checkpoint",
                        {"worker": worker_id, "uri": uri, "iter": iteration})

    # -- studies ------------------------------------------------------------------------

    def _study_id(self, conn: Connection, study: str) -> int:
        sid = conn.execute(sa.select(STUDIES.c.id).where(STUDIES.c.name == study)).scalar()
        if sid is None:
            names = conn.execute(sa.select(STUDIES.c.name).order_by(STUDIES.c.name)).scalars().all()
            known = ", ".join(names[:20]) or "none"
            raise UnknownStudy(f"no study {study!r} in {self.label} (studies: {known})")
        return int(sid)

    def _check_steps(self, conn: Connection, study_id: int, study: str,
                     steps: Sequence[str] | None) -> None:
        if steps is None:
            return
        known = set(conn.execute(
            sa.select(RUNS.c.step_key).where(RUNS.c.study_id == study_id).distinct()
        ).scalars())
        missing = [s for s in steps if s not in known]
        if missing:
            raise UnknownStep(f"no step {', '.join(map(repr, missing))} in study {study!r} "
                              f"(steps: {', '.join(sorted(known))})")

    def cancel(self, study: str, now: datetime, steps: Sequence[str] | None = None) -> int:
        """Cancel the study's live attempts (queued, and leased ones, whose workers are then
        fenced out); return how many."""
        now = _aware(now)
        with self._tx() as conn:
            sid = self._study_id(conn, study)
            self._check_steps(conn, sid, study, steps)
            runs = sa.select(RUNS.c.id).where(RUNS.c.study_id == sid)
            if steps is not None:
                runs = runs.where(RUNS.c.step_key.in_(list(steps)))
            ids = list(conn.execute(
                sa.update(ATTEMPTS)
                .where(ATTEMPTS.c.run_id.in_(runs), _lit(*LIVE))
                .values(state=AttemptState.CANCELLED.value, finished_at=now)
                .returning(ATTEMPTS.c.id)
            ).scalars())
            self._event(conn, ids, now, "cancelled", {"reason": "cancel"})
        return len(ids)

    def add_seeds(self, study: str, now: datetime, *,
                  seeds: Mapping[str, Sequence[int]] | None = None,
                  counts: Mapping[str, int] | None = None, max_seeds: int | None = None,
                  source: str = "seeds add") -> SeedsAdded:
        """Add seeds to existing steps as new runs (attempt 1 queued) and record the look.

        Give `seeds` (step -> seeds; those already present are skipped) or `counts` (step ->
        how many more, chosen by `looks.choose_seeds` so the steps stay paired, and clipped
        at `max_seeds` per step). Stored runs are never changed; nothing added = no look."""
        now = _aware(now)
        if (seeds is None) == (counts is None):
            raise QueueError("add_seeds needs exactly one of seeds or counts")
        asked = list(seeds if seeds is not None else counts or {})
        if counts is not None and any(n < 1 for n in counts.values()):
            raise QueueError(f"seed counts must be >= 1, got {dict(counts)}")
        with self._tx() as conn:
            self._lock_study(conn, study)
            sid = self._study_id(conn, study)
            self._check_steps(conn, sid, study, asked)
            capped: list[str] = []
            if counts is not None:
                seeds, capped = looks.choose_seeds(looks.current_seeds(conn, sid), counts,
                                                   max_seeds)
            assert seeds is not None
            out = looks.add_seeds(conn, sid, study, now, seeds, max_seeds=max_seeds,
                                  capped=capped, source=source)
        logger.info("seeds added", extra={"action": "seeds_added", "study": study,
                                          "runs": out.runs})
        return out

    def declare_design(self, study: str, now: datetime, max_seeds: int, *,
                       steps: Sequence[str] | None = None) -> bool:
        """Record a sequential design before the first analysis: `steps` (default: every
        step with runs) may get seeds up to `max_seeds`, so the report tests look 0 of
        their comparisons at its spent alpha too. False when already recorded."""
        now = _aware(now)
        with self._tx() as conn:
            self._lock_study(conn, study)
            sid = self._study_id(conn, study)
            self._check_steps(conn, sid, study, steps)
            if steps is None:
                steps = list(looks.current_seeds(conn, sid))
            return looks.declare_design(conn, sid, now, steps, max_seeds)

    def resumable(self, study: str, *, steps: Sequence[str] | None = None,
                  states: Sequence[str] | None = None,
                  force: bool = False) -> list[tuple[str, int]]:
        """(step, seed) of the runs `new_attempts` would queue now, without queueing them."""
        wanted = self._wanted_states(states, force)
        with self._tx(read_only=True) as conn:
            sid = self._study_id(conn, study)
            self._check_steps(conn, sid, study, steps)
            return [(step, seed) for _, step, seed in
                    self._select_resumable(conn, sid, steps, wanted, force)]

    def new_attempts(self, study: str, now: datetime, *, steps: Sequence[str] | None = None,
                     states: Sequence[str] | None = None,
                     force: bool = False,
                     payload: dict[str, Any] | None = None) -> list[tuple[str, int, int]]:
        """Queue attempt_no+1 for each current run with nothing live and no success (any run,
        with `force`) whose latest attempt ended in one of `states` (default: any terminal
        state but succeeded; with `force`, any terminal state). Idempotent; returns
        (step, seed, attempt_no) created. `payload` is added to each `queued` event."""
        now = _aware(now)
        wanted = self._wanted_states(states, force)
        created: list[tuple[str, int, int]] = []
        with self._tx() as conn:
            self._lock_study(conn, study)
            sid = self._study_id(conn, study)
            self._check_steps(conn, sid, study, steps)
            for run_id, step, seed in self._select_resumable(conn, sid, steps, wanted, force):
                no = self._queue_next(conn, run_id, now, reason="rerun" if force else "resume",
                                      after=None, bounded=False, payload=payload)
                assert no is not None
                created.append((step, seed, no))
        return created

    @staticmethod
    def _wanted_states(states: Sequence[str] | None, force: bool) -> set[str]:
        if states is None:
            wanted = {s.value for s in TERMINAL}
            if not force:
                wanted.discard(AttemptState.SUCCEEDED.value)
            return wanted
        bad = [s for s in states if s not in {t.value for t in TERMINAL}]
        if bad:
            raise QueueError(f"not terminal states: {', '.join(bad)} (terminal: "
                             f"{', '.join(sorted(t.value for t in TERMINAL))})")
        return set(states)

    @staticmethod
    def _select_resumable(conn: Connection, sid: int, steps: Sequence[str] | None,
                          wanted: set[str], force: bool) -> list[tuple[int, str, int]]:
        query = (sa.select(RUNS.c.id, RUNS.c.step_key, RUNS.c.seed)
                 .where(RUNS.c.study_id == sid, RUNS.c.superseded_at.is_(None))
                 .order_by(RUNS.c.id))
        if steps is not None:
            query = query.where(RUNS.c.step_key.in_(list(steps)))
        runs = conn.execute(query).all()
        history: dict[int, list[str]] = {}
        for run_id, state in conn.execute(
            sa.select(ATTEMPTS.c.run_id, ATTEMPTS.c.state)
            .where(ATTEMPTS.c.run_id.in_(query.with_only_columns(RUNS.c.id)))
            .order_by(ATTEMPTS.c.run_id, ATTEMPTS.c.attempt_no)
        ):
            history.setdefault(run_id, []).append(state)
        out: list[tuple[int, str, int]] = []
        for run_id, step, seed in runs:
            seen = history.get(run_id, [])
            if any(s in LIVE for s in seen):
                continue
            if not force and AttemptState.SUCCEEDED.value in seen:
                continue
            if seen and seen[-1] not in wanted:
                continue
            out.append((run_id, step, seed))
        return out

    # -- workers ------------------------------------------------------------------------

    def register_worker(self, worker_id: str, now: datetime, *, host: str, gpu: str | None,
                        pid: int | None, code_sha: str | None = None) -> None:
        """Insert or refresh the worker row (started now, not stopped; the commit of its
        checkout, if known)."""
        now = _aware(now)
        values = {"host": host, "gpu": gpu, "pid": pid, "started_at": now,
                  "last_heartbeat": now, "stopped_at": None, "current_attempt": None,
                  "code_sha": code_sha}
        stmt = self._insert(WORKERS).values(id=worker_id, **values)
        stmt = stmt.on_conflict_do_update(index_elements=[WORKERS.c.id], set_=values)
        with self._tx() as conn:
            conn.execute(stmt)
            # a restarted worker of a quarantined slot (same host, same slot) stays out
            slot = worker_slot(worker_id)
            held = [r for r in conn.execute(
                sa.select(WORKERS.c.id, WORKERS.c.quarantined_at, WORKERS.c.quarantine_reason)
                .where(WORKERS.c.host == host, WORKERS.c.id != worker_id,
                       WORKERS.c.quarantined_at.is_not(None))
                .order_by(WORKERS.c.quarantined_at.desc())) if worker_slot(r.id) == slot]
            if held:
                conn.execute(sa.update(WORKERS).where(WORKERS.c.id == worker_id).values(
                    quarantined_at=held[0].quarantined_at,
                    quarantine_reason=held[0].quarantine_reason))

    def quarantine_worker(self, worker_id: str, now: datetime, *, reason: str) -> None:
        """Set the worker aside: it stops claiming until `release_workers`."""
        now = _aware(now)
        with self._tx() as conn:
            conn.execute(sa.update(WORKERS).where(WORKERS.c.id == worker_id)
                         .values(quarantined_at=now, quarantine_reason=reason))
        logger.warning("worker quarantined", extra={"action": "worker_quarantined",
                                                    "worker": worker_id, "reason": reason})

    def worker_quarantine(self, worker_id: str) -> str | None:
        """Why the worker is quarantined, or None when it may claim."""
        with self._tx(read_only=True) as conn:
            row = conn.execute(
                sa.select(WORKERS.c.quarantined_at, WORKERS.c.quarantine_reason)
                .where(WORKERS.c.id == worker_id)).first()
        if row is None or row.quarantined_at is None:
            return None
        return row.quarantine_reason or "quarantined"

    def release_workers(self, now: datetime, *, worker: str | None = None,
                        host: str | None = None) -> list[str]:
        """Let quarantined workers claim again: one worker (its id, or its `host:slot`),
        every worker of `host`, or, with neither, all of them. The ids released."""
        with self._tx() as conn:
            rows = conn.execute(sa.select(WORKERS.c.id, WORKERS.c.host)
                                .where(WORKERS.c.quarantined_at.is_not(None))).all()
            ids = [r.id for r in rows
                   if (worker is None or worker in (r.id, worker_slot(r.id)))
                   and (host is None or r.host == host)]
            if ids:
                conn.execute(sa.update(WORKERS).where(WORKERS.c.id.in_(ids))
                             .values(quarantined_at=None, quarantine_reason=None))
        return sorted(ids)

    def worker_heartbeat(self, worker_id: str, now: datetime,
                         current_attempt: int | None = None, *,
                         code_sha: str | None = None) -> None:
        """Record that the worker is alive (and what it runs; its checkout's commit if
        given, which changes after a `git pull`)."""
        now = _aware(now)
        values: dict[str, Any] = {"last_heartbeat": now, "current_attempt": current_attempt}
        if code_sha is not None:
            values["code_sha"] = code_sha
        with self._tx() as conn:
            n = conn.execute(
                sa.update(WORKERS).where(WORKERS.c.id == worker_id).values(**values)
            ).rowcount
        if n == 0:
            raise QueueError(f"worker {worker_id} is not registered; call register_worker first")

    def worker_stopped(self, worker_id: str, now: datetime) -> None:
        """Mark the worker stopped."""
        now = _aware(now)
        with self._tx() as conn:
            conn.execute(sa.update(WORKERS).where(WORKERS.c.id == worker_id)
                         .values(stopped_at=now, last_heartbeat=now, current_attempt=None))

    # -- reads --------------------------------------------------------------------------

    def snapshot(self, now: datetime, study: str | None = None) -> Snapshot:
        """The dashboard: one row per current run (its latest attempt); O(runs)."""
        now = _aware(now)
        with self._tx(read_only=True) as conn:
            if study is not None:
                self._study_id(conn, study)
            return reads.snapshot(conn, now, self.label, study)

    def study_names(self) -> list[str]:
        """Every study name, sorted."""
        with self._tx(read_only=True) as conn:
            return list(conn.execute(sa.select(STUDIES.c.name).order_by(STUDIES.c.name)).scalars())

    def study_results(self, name: str) -> StudyResults:
        """Everything the analysis of study `name` needs (UnknownStudy if none)."""
        with self._tx(read_only=True) as conn:
            sid = self._study_id(conn, name)
            return reads.study_results(conn, sid)

    def metric_series(self, attempt_ids: Sequence[int], names: Sequence[str] | None = None,
                      prefix: str | Sequence[str] | None = None) -> MetricSeries:
        """attempt -> name -> [(step, value)] for metrics named in `names` or starting with
        `prefix` (one or several; all metrics when neither is given)."""
        with self._tx(read_only=True) as conn:
            return reads.metric_series(conn, attempt_ids, names, prefix)

    def metric_summaries(self, attempt_ids: Sequence[int],
                         prefix: Sequence[str]) -> MetricSummaries:
        """attempt -> name -> SeriesSummary of the metrics starting with any of `prefix`
        (aggregated in the database)."""
        with self._tx(read_only=True) as conn:
            return reads.metric_summaries(conn, attempt_ids, prefix)

    def history(self, study: str, steps: Sequence[str] | None = None,
                seed: int | None = None) -> StudyHistory:
        """Every attempt of the study's runs (superseded runs included), with provenance;
        UnknownStudy / UnknownStep when the names do not exist."""
        with self._tx(read_only=True) as conn:
            sid = self._study_id(conn, study)
            self._check_steps(conn, sid, study, steps)
            return history.study_history(conn, sid, steps, seed)

    def find_attempt(self, study: str, step: str, seed: int | None = None,
                     attempt: int | None = None) -> AttemptRef:
        """The attempt `recip logs` shows (UnknownStudy / UnknownStep naming what exists)."""
        with self._tx(read_only=True) as conn:
            return reads.find_attempt(conn, self._study_id(conn, study), study, step, seed,
                                      attempt)

    def events(self, attempt_id: int) -> list[dict[str, Any]]:
        """The attempt's events, oldest first: {id, at, kind, payload}."""
        with self._tx(read_only=True) as conn:
            return reads.events(conn, attempt_id)

    def attempt(self, attempt_id: int) -> AttemptResult:
        """One attempt with its run and result (QueueError if there is none)."""
        with self._tx(read_only=True) as conn:
            found = reads.attempt_results(conn, ATTEMPTS.c.id == attempt_id)
        if not found:
            raise QueueError(f"no attempt {attempt_id} in {self.label}")
        return found[0]
