"""Read queries of the queue, on a connection the repo opened: dashboard snapshot, analysis
results, metric series, events.

The snapshot is O(runs): progress lives on the attempt row (copied from heartbeats), so no
query here touches `metrics` except `metric_series`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orchestrator.core.errors import UnknownStep
from orchestrator.core.results import AttemptResult, MetricSeries, StudyResults
from orchestrator.core.states import LEASED as _LEASED
from orchestrator.core.states import values
from orchestrator.core.views import RunView, Snapshot, StudyView, WorkerView
from orchestrator.queue.looks import study_looks
from orchestrator.queue.schema import AttemptRow, EventRow, MetricRow, RunRow, StudyRow, WorkerRow
from orchestrator.queue.types import AttemptRef

LEASED = values(_LEASED)
RECENT_WORKERS = timedelta(minutes=10)
_ERROR_MAX = 300

_ATTEMPT_VIEW = (
    AttemptRow.run_id, AttemptRow.id, AttemptRow.attempt_no, AttemptRow.state,
    AttemptRow.failure_kind, AttemptRow.worker_id, AttemptRow.iter, AttemptRow.tokens,
    AttemptRow.train_s, AttemptRow.fraction, AttemptRow.loss, AttemptRow.val_loss,
    AttemptRow.best_val_loss, AttemptRow.heartbeat_at, AttemptRow.lease_expires_at,
    AttemptRow.finished_at, AttemptRow.error_type, AttemptRow.error_message,
    AttemptRow.code_sha, AttemptRow.code_dirty, AttemptRow.phase, AttemptRow.eval_s,
)

# what an AttemptResult carries: not env_json (the largest JSON column, which no reader of
# results uses), so a study read decodes one JSON document per attempt less
_ATTEMPT_RESULT = (
    AttemptRow.id, AttemptRow.run_id, AttemptRow.attempt_no, AttemptRow.state,
    AttemptRow.result_json, AttemptRow.failure_kind, AttemptRow.error_type,
    AttemptRow.error_message, AttemptRow.code_sha, AttemptRow.code_dirty, AttemptRow.diff_hash,
    AttemptRow.gpu, AttemptRow.host, AttemptRow.started_at, AttemptRow.finished_at,
)


def _step_order(spec: dict[str, Any] | None, first_ids: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Sort key per step: position in the spec's `steps`, else first submission."""
    listed = list(spec.get("steps") or {}) if isinstance(spec, dict) and isinstance(
        spec.get("steps"), dict) else []
    pos = {s: i for i, s in enumerate(listed)}
    return {s: (pos.get(s, len(pos)), first) for s, first in first_ids.items()}


def _error(error_type: str | None, message: str | None) -> str | None:
    if not error_type and not message:
        return None
    text = ": ".join(p for p in (error_type, (message or "").splitlines()[0] if message else None)
                     if p)
    return text[:_ERROR_MAX]


def snapshot(conn: Connection, now: datetime, label: str, study: str | None) -> Snapshot:
    """Build the dashboard Snapshot (the caller checked that `study` exists)."""
    studies_q = sa.select(StudyRow.id, StudyRow.name, StudyRow.description,
                          StudyRow.created_at, StudyRow.spec_json, StudyRow.code_policy,
                          StudyRow.pinned_sha).order_by(StudyRow.created_at, StudyRow.id)
    runs_q = (sa.select(RunRow.id, RunRow.study_id, RunRow.step_key, RunRow.seed,
                        RunRow.config_hash, RunRow.budget_seconds)
              .where(RunRow.superseded_at.is_(None)))
    first_q = sa.select(RunRow.study_id, RunRow.step_key, sa.func.min(RunRow.id)).group_by(
        RunRow.study_id, RunRow.step_key)
    if study is not None:
        studies_q = studies_q.where(StudyRow.name == study)
        study_ids = sa.select(StudyRow.id).where(StudyRow.name == study).scalar_subquery()
        runs_q = runs_q.where(RunRow.study_id == study_ids)
        first_q = first_q.where(RunRow.study_id == study_ids)
    studies = conn.execute(studies_q).all()
    runs = conn.execute(runs_q).all()
    first: dict[int, dict[str, int]] = {}
    for sid, step, rid in conn.execute(first_q):
        first.setdefault(sid, {})[step] = rid

    latest: dict[int, Any] = {}
    counts: dict[int, int] = {}
    for row in conn.execute(
        sa.select(*_ATTEMPT_VIEW)
        .where(AttemptRow.run_id.in_(runs_q.with_only_columns(RunRow.id)))
        .order_by(AttemptRow.run_id, AttemptRow.attempt_no)
    ):
        latest[row.run_id] = row
        counts[row.run_id] = counts.get(row.run_id, 0) + 1

    by_study: dict[int, list[RunView]] = {s.id: [] for s in studies}
    names = {s.id: s.name for s in studies}
    for r in runs:
        a = latest.get(r.id)
        flags: list[str] = []
        if a is not None and a.state in LEASED and a.lease_expires_at and a.lease_expires_at < now:
            flags.append("lease_expired")
        if a is not None and a.code_dirty:
            flags.append("code_dirty")
        if counts.get(r.id, 0) > 1:
            flags.append("retried")
        fraction = a.fraction if a is not None else None
        if fraction is None and a is not None and a.train_s is not None and r.budget_seconds:
            fraction = min(1.0, a.train_s / r.budget_seconds)
        by_study.setdefault(r.study_id, []).append(RunView(
            study=names.get(r.study_id, ""), step=r.step_key, seed=r.seed, run_id=r.id,
            config_hash=r.config_hash, budget_s=r.budget_seconds,
            attempts=counts.get(r.id, 0), flags=tuple(flags),
            **({} if a is None else {
                "attempt_id": a.id, "attempt_no": a.attempt_no, "state": a.state,
                "failure_kind": a.failure_kind, "worker": a.worker_id, "iter": a.iter,
                "tokens": a.tokens, "train_s": a.train_s, "fraction": fraction,
                "loss": a.loss, "val_loss": a.val_loss, "best_val_loss": a.best_val_loss,
                "heartbeat_at": a.heartbeat_at, "lease_expires_at": a.lease_expires_at,
                "finished_at": a.finished_at, "error": _error(a.error_type, a.error_message),
                "code_sha": a.code_sha, "code_dirty": a.code_dirty, "phase": a.phase,
                "eval_s": a.eval_s,
            }),
        ))

    views = []
    for s in studies:
        order = _step_order(s.spec_json, first.get(s.id, {}))
        rows = sorted(by_study.get(s.id, []), key=lambda v: (order.get(v.step, (0, 0)), v.seed))
        tally: dict[str, int] = {}
        for v in rows:
            key = v.state or "none"
            tally[key] = tally.get(key, 0) + 1
        views.append(StudyView(name=s.name, description=s.description, created_at=s.created_at,
                               counts=tally, runs=tuple(rows),
                               pinned_sha=s.pinned_sha if s.code_policy == "pinned" else None))

    workers = conn.execute(
        sa.select(WorkerRow.__table__)
        .where(sa.or_(WorkerRow.stopped_at.is_(None), WorkerRow.stopped_at > now - RECENT_WORKERS))
        .order_by(WorkerRow.id)
    ).all()
    return Snapshot(
        taken_at=now, db=label, studies=tuple(views),
        workers=tuple(WorkerView(id=w.id, host=w.host, gpu=w.gpu, pid=w.pid,
                                 started_at=w.started_at, last_heartbeat=w.last_heartbeat,
                                 stopped_at=w.stopped_at, current_attempt=w.current_attempt,
                                 quarantined=w.quarantine_reason
                                 if w.quarantined_at is not None else None,
                                 code_sha=w.code_sha)
                      for w in workers),
    )


def attempt_results(conn: Connection, where: sa.ColumnElement[bool]) -> list[AttemptResult]:
    """AttemptResults for the attempts matching `where`, in (run, attempt_no) order."""
    rows = conn.execute(
        sa.select(StudyRow.name.label("study"), RunRow.step_key, RunRow.seed, RunRow.config_hash,
                  RunRow.config_json, *_ATTEMPT_RESULT)
        .join(RunRow, RunRow.id == AttemptRow.run_id)
        .join(StudyRow, StudyRow.id == RunRow.study_id)
        .where(where)
        .order_by(AttemptRow.run_id, AttemptRow.attempt_no)
    ).all()
    out = []
    for a in rows:
        result = a.result_json or {}
        out.append(AttemptResult(
            study=a.study, step=a.step_key, seed=a.seed, run_id=a.run_id, attempt_id=a.id,
            attempt_no=a.attempt_no, state=a.state, config_hash=a.config_hash,
            config=a.config_json, result=result, failure_kind=a.failure_kind,
            error_type=a.error_type, error_message=a.error_message, code_sha=a.code_sha,
            code_dirty=a.code_dirty, diff_hash=a.diff_hash,
            device=result.get("device") if isinstance(result.get("device"), str) else a.gpu,
            host=a.host, started_at=a.started_at, finished_at=a.finished_at,
        ))
    return out


def study_results(conn: Connection, study_id: int) -> StudyResults:
    """StudyResults of one study: every attempt of each current run."""
    s = conn.execute(sa.select(StudyRow.__table__).where(StudyRow.id == study_id)).one()
    first = dict(conn.execute(
        sa.select(RunRow.step_key, sa.func.min(RunRow.id))
        .where(RunRow.study_id == study_id).group_by(RunRow.step_key)
    ).all())
    order = _step_order(s.spec_json, first)
    listed = list(s.spec_json.get("steps") or {}) if isinstance(s.spec_json.get("steps"), dict) else []
    steps = listed + sorted((k for k in first if k not in listed), key=lambda k: order[k])
    attempts = attempt_results(
        conn, sa.and_(RunRow.study_id == study_id, RunRow.superseded_at.is_(None))
    )
    attempts.sort(key=lambda a: (order.get(a.step, (0, 0)), a.seed, a.attempt_no))
    return StudyResults(name=s.name, description=s.description, spec=s.spec_json,
                        spec_hash=s.spec_hash, steps=tuple(steps), attempts=tuple(attempts),
                        looks=study_looks(conn, study_id),
                        overrides=submit_overrides(conn, study_id))


def submit_overrides(conn: Connection, study_id: int) -> dict[str, Any]:
    """The overrides of the newest submit that queued a current run of the study (recorded
    in its `queued` event by `QueueRepo.submit`); {} when there is none."""
    rows = conn.execute(
        sa.select(EventRow.payload_json)
        .join(AttemptRow, AttemptRow.id == EventRow.attempt_id)
        .join(RunRow, RunRow.id == AttemptRow.run_id)
        .where(RunRow.study_id == study_id, RunRow.superseded_at.is_(None),
               AttemptRow.attempt_no == 1, EventRow.kind == "queued")
        .order_by(EventRow.id.desc()).limit(1)
    ).all()
    payload = rows[0][0] if rows else None
    found = payload.get("overrides") if isinstance(payload, dict) else None
    return dict(found) if isinstance(found, dict) else {}


def _name_prefix(conn: Connection, prefix: str) -> sa.ColumnElement[bool]:
    """`name` starts with `prefix`, as a key range where the key order is bytewise.

    SQLite's LIKE is case-insensitive, so it never narrows the (attempt_id, name, step) key
    and reads every metric row of the attempts; a BINARY range on the same prefix reads only
    the matching ones, so a prefix read costs the rows it returns (bench/report_bench.py).
    PostgreSQL keeps the LIKE: under a linguistic collation a range is not a prefix match.
    """
    like = MetricRow.name.startswith(prefix, autoescape=True)
    if conn.dialect.name != "sqlite" or not prefix or ord(prefix[-1]) >= 0x10FFFF:
        return like
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return sa.and_(MetricRow.name >= prefix, MetricRow.name < upper, like)


def metric_series(conn: Connection, attempt_ids: Sequence[int], names: Sequence[str] | None,
                  prefix: str | None) -> MetricSeries:
    """attempt -> name -> [(step, value)], steps ascending; NULL values read as NaN."""
    out: MetricSeries = {a: {} for a in attempt_ids}
    if not attempt_ids:
        return out
    query = (sa.select(MetricRow.attempt_id, MetricRow.name, MetricRow.step, MetricRow.value)
             .where(MetricRow.attempt_id.in_(list(attempt_ids)))
             .order_by(MetricRow.attempt_id, MetricRow.name, MetricRow.step))
    filters: list[sa.ColumnElement[bool]] = []
    if names is not None:
        filters.append(MetricRow.name.in_(list(names)))
    if prefix is not None:
        filters.append(_name_prefix(conn, prefix))
    if filters:
        query = query.where(sa.or_(*filters))
    for attempt_id, name, step, value in conn.execute(query):
        out[attempt_id].setdefault(name, []).append(
            (step, math.nan if value is None else float(value)))
    return out


def find_attempt(conn: Connection, study_id: int, study: str, step: str, seed: int | None,
                 attempt: int | None) -> AttemptRef:
    """The attempt of a current run of `step` to show: the given seed (default the lowest)
    and attempt number (default the latest that has an artifact dir, else the latest).
    UnknownStep naming what exists otherwise."""
    rows = conn.execute(
        sa.select(RunRow.seed, AttemptRow.attempt_no, AttemptRow.id, AttemptRow.artifact_dir,
                  AttemptRow.state, RunRow.step_key)
        .join(RunRow, RunRow.id == AttemptRow.run_id)
        .where(RunRow.study_id == study_id, RunRow.superseded_at.is_(None))
    ).all()
    steps = sorted({r.step_key for r in rows})
    rows = [r for r in rows if r.step_key == step]
    if not rows:
        raise UnknownStep(f"no step {step!r} in study {study} (steps: {', '.join(steps)})")
    seeds = sorted({r.seed for r in rows})
    pick_seed = seeds[0] if seed is None else seed
    rows = [r for r in rows if r.seed == pick_seed]
    if not rows:
        raise UnknownStep(f"step {step} of {study} has no seed {seed} "
                          f"(seeds: {', '.join(map(str, seeds))})")
    if attempt is not None:
        rows = [r for r in rows if r.attempt_no == attempt]
        if not rows:
            raise UnknownStep(f"{study} {step} seed {pick_seed} has no attempt {attempt}")
    best = max(rows, key=lambda r: (r.artifact_dir is not None or attempt is not None,
                                    r.attempt_no))
    return AttemptRef(seed=pick_seed, attempt_no=best.attempt_no, attempt_id=best.id,
                      artifact_dir=best.artifact_dir, state=best.state)


def events(conn: Connection, attempt_id: int) -> list[dict[str, Any]]:
    """The attempt's events, oldest first."""
    return [
        {"id": e.id, "at": e.at, "kind": e.kind, "payload": e.payload_json or {}}
        for e in conn.execute(
            sa.select(EventRow.__table__).where(EventRow.attempt_id == attempt_id)
            .order_by(EventRow.id)
        )
    ]
