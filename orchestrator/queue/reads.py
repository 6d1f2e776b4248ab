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
from orchestrator.core.results import (
    AttemptResult,
    MetricSeries,
    MetricSummaries,
    SeriesSummary,
    StudyResults,
)
from orchestrator.core.states import LEASED as _LEASED
from orchestrator.core.states import values
from orchestrator.core.views import RunView, Snapshot, StudyView, WorkerView
from orchestrator.queue.looks import study_looks
from orchestrator.queue.schema import ATTEMPTS, EVENTS, METRICS, RUNS, STUDIES, WORKERS
from orchestrator.queue.types import AttemptRef

LEASED = values(_LEASED)
RECENT_WORKERS = timedelta(minutes=10)
_ERROR_MAX = 300

_ATTEMPT_VIEW = (
    ATTEMPTS.c.run_id, ATTEMPTS.c.id, ATTEMPTS.c.attempt_no, ATTEMPTS.c.state,
    ATTEMPTS.c.failure_kind, ATTEMPTS.c.worker_id, ATTEMPTS.c.iter, ATTEMPTS.c.tokens,
    ATTEMPTS.c.train_s, ATTEMPTS.c.fraction, ATTEMPTS.c.loss, ATTEMPTS.c.val_loss,
    ATTEMPTS.c.best_val_loss, ATTEMPTS.c.heartbeat_at, ATTEMPTS.c.lease_expires_at,
    ATTEMPTS.c.finished_at, ATTEMPTS.c.error_type, ATTEMPTS.c.error_message,
    ATTEMPTS.c.code_sha, ATTEMPTS.c.code_dirty, ATTEMPTS.c.phase, ATTEMPTS.c.eval_s,
)

# what an AttemptResult carries: not env_json (the largest JSON column, which no reader of
# results uses), so a study read decodes one JSON document per attempt less
_ATTEMPT_RESULT = (
    ATTEMPTS.c.id, ATTEMPTS.c.run_id, ATTEMPTS.c.attempt_no, ATTEMPTS.c.state,
    ATTEMPTS.c.result_json, ATTEMPTS.c.failure_kind, ATTEMPTS.c.error_type,
    ATTEMPTS.c.error_message, ATTEMPTS.c.code_sha, ATTEMPTS.c.code_dirty, ATTEMPTS.c.diff_hash,
    ATTEMPTS.c.gpu, ATTEMPTS.c.host, ATTEMPTS.c.started_at, ATTEMPTS.c.finished_at,
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
    studies_q = sa.select(STUDIES.c.id, STUDIES.c.name, STUDIES.c.description,
                          STUDIES.c.created_at, STUDIES.c.spec_json, STUDIES.c.code_policy,
                          STUDIES.c.pinned_sha).order_by(STUDIES.c.created_at, STUDIES.c.id)
    runs_q = (sa.select(RUNS.c.id, RUNS.c.study_id, RUNS.c.step_key, RUNS.c.seed,
                        RUNS.c.config_hash, RUNS.c.budget_seconds)
              .where(RUNS.c.superseded_at.is_(None)))
    first_q = sa.select(RUNS.c.study_id, RUNS.c.step_key, sa.func.min(RUNS.c.id)).group_by(
        RUNS.c.study_id, RUNS.c.step_key)
    if study is not None:
        studies_q = studies_q.where(STUDIES.c.name == study)
        study_ids = sa.select(STUDIES.c.id).where(STUDIES.c.name == study).scalar_subquery()
        runs_q = runs_q.where(RUNS.c.study_id == study_ids)
        first_q = first_q.where(RUNS.c.study_id == study_ids)
    studies = conn.execute(studies_q).all()
    runs = conn.execute(runs_q).all()
    first: dict[int, dict[str, int]] = {}
    for sid, step, rid in conn.execute(first_q):
        first.setdefault(sid, {})[step] = rid

    latest: dict[int, Any] = {}
    counts: dict[int, int] = {}
    for row in conn.execute(
        sa.select(*_ATTEMPT_VIEW)
        .where(ATTEMPTS.c.run_id.in_(runs_q.with_only_columns(RUNS.c.id)))
        .order_by(ATTEMPTS.c.run_id, ATTEMPTS.c.attempt_no)
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
        sa.select(WORKERS)
        .where(sa.or_(WORKERS.c.stopped_at.is_(None), WORKERS.c.stopped_at > now - RECENT_WORKERS))
        .order_by(WORKERS.c.id)
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
        sa.select(STUDIES.c.name.label("study"), RUNS.c.step_key, RUNS.c.seed, RUNS.c.config_hash,
                  RUNS.c.config_json, *_ATTEMPT_RESULT)
        .join(RUNS, RUNS.c.id == ATTEMPTS.c.run_id)
        .join(STUDIES, STUDIES.c.id == RUNS.c.study_id)
        .where(where)
        .order_by(ATTEMPTS.c.run_id, ATTEMPTS.c.attempt_no)
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
    s = conn.execute(sa.select(STUDIES).where(STUDIES.c.id == study_id)).one()
    first = dict(conn.execute(
        sa.select(RUNS.c.step_key, sa.func.min(RUNS.c.id))
        .where(RUNS.c.study_id == study_id).group_by(RUNS.c.step_key)
    ).all())
    order = _step_order(s.spec_json, first)
    listed = list(s.spec_json.get("steps") or {}) if isinstance(s.spec_json.get("steps"), dict) else []
    steps = listed + sorted((k for k in first if k not in listed), key=lambda k: order[k])
    attempts = attempt_results(
        conn, sa.and_(RUNS.c.study_id == study_id, RUNS.c.superseded_at.is_(None))
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
        sa.select(EVENTS.c.payload_json)
        .join(ATTEMPTS, ATTEMPTS.c.id == EVENTS.c.attempt_id)
        .join(RUNS, RUNS.c.id == ATTEMPTS.c.run_id)
        .where(RUNS.c.study_id == study_id, RUNS.c.superseded_at.is_(None),
               ATTEMPTS.c.attempt_no == 1, EVENTS.c.kind == "queued")
        .order_by(EVENTS.c.id.desc()).limit(1)
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
    like = METRICS.c.name.startswith(prefix, autoescape=True)
    if conn.dialect.name != "sqlite" or not prefix or ord(prefix[-1]) >= 0x10FFFF:
        return like
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return sa.and_(METRICS.c.name >= prefix, METRICS.c.name < upper, like)


def metric_series(conn: Connection, attempt_ids: Sequence[int], names: Sequence[str] | None,
                  prefix: str | Sequence[str] | None) -> MetricSeries:
    """attempt -> name -> [(step, value)], steps ascending; NULL values read as NaN.

    Metrics named in `names` or starting with any of `prefix`. PostgreSQL reads them in one
    statement (a LIKE cannot narrow its index under a linguistic collation, so each extra
    statement is another pass over the attempts' rows: 3 prefixes were 3 scans, ~250 ms of
    `recip report` at 1M rows). SQLite reads each name list and prefix as its own key range
    (an OR of ranges falls back to reading every row of the attempts) and merges them."""
    out: MetricSeries = {a: {} for a in attempt_ids}
    if not attempt_ids:
        return out
    prefixes = [prefix] if isinstance(prefix, str) else list(prefix or ())
    filters: list[sa.ColumnElement[bool]] = []
    if names is not None:
        filters.append(METRICS.c.name.in_(list(names)))
    filters.extend(_name_prefix(conn, p) for p in prefixes)
    query = (sa.select(METRICS.c.attempt_id, METRICS.c.name, METRICS.c.step, METRICS.c.value)
             .where(METRICS.c.attempt_id.in_(list(attempt_ids)))
             .order_by(METRICS.c.attempt_id, METRICS.c.name, METRICS.c.step))
    if conn.dialect.name == "sqlite" and len(filters) > 1:
        parts = [query.where(f) for f in filters]
    else:
        parts = [query.where(sa.or_(*filters)) if filters else query]
    source: dict[tuple[int, str], int] = {}   # a series comes from the first part that has it
    for i, part in enumerate(parts):
        for attempt_id, name, step, value in conn.execute(part):
            if source.setdefault((attempt_id, name), i) != i:
                continue
            out[attempt_id].setdefault(name, []).append(
                (step, math.nan if value is None else float(value)))
    return out


FINITE_MAX = 1.7976931348623157e308


def metric_summaries(conn: Connection, attempt_ids: Sequence[int],
                     prefixes: Sequence[str]) -> MetricSummaries:
    """attempt -> name -> SeriesSummary (finite points: count, largest |value|, the last)
    of the metrics starting with any of `prefixes`, aggregated in the database.

    `core.results.summarise` is the definition; this is the same in SQL, so the report
    moves one row per series instead of every point (3.8k instead of 45k rows at 1M metric
    rows, bench/report_bench.py). Finite = not NULL (SQLite's NaN), not NaN (PostgreSQL
    sorts NaN above every number, so the BETWEEN drops it) and not infinite. The last
    point: PostgreSQL takes it in the same pass (`array_agg(value ORDER BY step DESC)[1]`);
    SQLite looks it up by its key, one prefix range at a time."""
    out: MetricSummaries = {a: {} for a in attempt_ids}
    if not attempt_ids or not prefixes:
        return out
    finite = sa.and_(METRICS.c.value.is_not(None),
                     METRICS.c.value.between(-FINITE_MAX, FINITE_MAX))
    ids = METRICS.c.attempt_id.in_(list(attempt_ids))
    group = (METRICS.c.attempt_id, METRICS.c.name)
    n = sa.func.count().label("n")
    max_abs = sa.func.max(sa.func.abs(METRICS.c.value)).label("max_abs")
    last_step = sa.func.max(METRICS.c.step).label("last_step")
    queries: list[sa.Select[Any]] = []
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import aggregate_order_by

        last = sa.func.array_agg(aggregate_order_by(METRICS.c.value, METRICS.c.step.desc()))
        where = sa.and_(ids, finite, sa.or_(*(_name_prefix(conn, p) for p in prefixes)))
        queries.append(sa.select(*group, n, max_abs, last_step, last[1])
                       .where(where).group_by(*group))
    else:
        for p in prefixes:
            g = (sa.select(*group, n, max_abs, last_step)
                 .where(sa.and_(ids, finite, _name_prefix(conn, p))).group_by(*group)
                 .subquery())
            at = METRICS.alias("last")
            queries.append(
                sa.select(g.c.attempt_id, g.c.name, g.c.n, g.c.max_abs, g.c.last_step,
                          at.c.value)
                .join(at, sa.and_(at.c.attempt_id == g.c.attempt_id, at.c.name == g.c.name,
                                  at.c.step == g.c.last_step)))
    for query in queries:
        for attempt_id, name, count, biggest, step, value in conn.execute(query):
            out[attempt_id].setdefault(name, SeriesSummary(
                n=int(count), max_abs=float(biggest), last_step=int(step), last=float(value)))
    return out


def find_attempt(conn: Connection, study_id: int, study: str, step: str, seed: int | None,
                 attempt: int | None) -> AttemptRef:
    """The attempt of a current run of `step` to show: the given seed (default the lowest)
    and attempt number (default the latest that has an artifact dir, else the latest).
    UnknownStep naming what exists otherwise."""
    rows = conn.execute(
        sa.select(RUNS.c.seed, ATTEMPTS.c.attempt_no, ATTEMPTS.c.id, ATTEMPTS.c.artifact_dir,
                  ATTEMPTS.c.state, RUNS.c.step_key)
        .join(RUNS, RUNS.c.id == ATTEMPTS.c.run_id)
        .where(RUNS.c.study_id == study_id, RUNS.c.superseded_at.is_(None))
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
            sa.select(EVENTS).where(EVENTS.c.attempt_id == attempt_id)
            .order_by(EVENTS.c.id)
        )
    ]
