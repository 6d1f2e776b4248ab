"""Runs that cross the queue's edge: imported baselines in, attempt directories out.

`import_run` stores an `ImportedRun` (core/imported.py) as an ordinary run of a study: one
run under the import's step name, one `succeeded` attempt by worker `import` with its
result, its `imported` event and its full metric series, in one transaction. The same
identity is stored once per study (a second import changes nothing); importing another
source run into the same (step, seed) supersedes the previous one, as a changed config does
at submit, and keeps its history.

`attempt_dirs` lists where a study's attempts wrote their files (for `recip wandb sync`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orchestrator.core.errors import QueueError
from orchestrator.core.imported import IMPORT_WORKER, IMPORTED_KEY, ImportedRun, is_imported
from orchestrator.core.states import AttemptState
from orchestrator.queue.schema import ATTEMPTS, EVENTS, METRICS, RUNS, STUDIES
from orchestrator.queue.types import finite_json

if TYPE_CHECKING:
    from orchestrator.queue.repo import QueueRepo

_BATCH = 5000
_NAME_MAX = 200


@dataclass(frozen=True)
class ImportOutcome:
    study: str
    step: str
    seed: int
    run_id: int
    attempt_id: int
    created: bool
    """False when this identity was already stored (nothing written)."""
    metrics: int
    """Metric rows written (0 when not created)."""
    superseded: int = 0
    """Runs of the same (step, seed) that this import superseded."""


@dataclass(frozen=True)
class AttemptDir:
    attempt_id: int
    step: str
    seed: int
    attempt_no: int
    state: str
    artifact_dir: str


def import_run(repo: QueueRepo, study: str, step: str, run: ImportedRun,
               now: datetime) -> ImportOutcome:
    """Store `run` into `study` as step `step` (idempotent on `run.identity`).

    Raises UnknownStudy for a study that does not exist and QueueError when `step` is a
    step of the study's spec (an imported run never shadows a trained step)."""
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: pass an aware UTC datetime")
    with repo._tx() as conn:
        repo._lock_study(conn, study)
        sid = repo._study_id(conn, study)
        spec = conn.execute(sa.select(STUDIES.c.spec_json).where(STUDIES.c.id == sid)).scalar_one()
        spec_steps = spec.get("steps") if isinstance(spec, dict) else None
        if isinstance(spec_steps, dict) and step in spec_steps:
            raise QueueError(f"step {step!r} is a step of study {study!r}'s spec; import the "
                             "baseline under another name, e.g. --step baseline")
        existing = _find(conn, sid, run.identity)
        if existing is not None:
            return ImportOutcome(study=study, step=existing[1], seed=existing[2],
                                 run_id=existing[0], attempt_id=existing[3], created=False,
                                 metrics=0)
        return _store(conn, sid, study, step, run, now)


def imported_identities(repo: QueueRepo, study: str) -> dict[str, str]:
    """identity -> step of every current imported run of `study`."""
    with repo._tx(read_only=True) as conn:
        sid = repo._study_id(conn, study)
        rows = conn.execute(
            sa.select(RUNS.c.step_key, RUNS.c.config_json)
            .where(RUNS.c.study_id == sid, RUNS.c.superseded_at.is_(None))
        ).all()
    return {str(cfg[IMPORTED_KEY].get("identity")): step for step, cfg in rows if is_imported(cfg)}


def attempt_dirs(repo: QueueRepo, study: str, steps: Sequence[str] | None = None
                 ) -> list[AttemptDir]:
    """Every attempt of `study` (superseded runs included) that recorded an artifact dir."""
    with repo._tx(read_only=True) as conn:
        sid = repo._study_id(conn, study)
        repo._check_steps(conn, sid, study, steps)
        query = (
            sa.select(ATTEMPTS.c.id, RUNS.c.step_key, RUNS.c.seed, ATTEMPTS.c.attempt_no,
                      ATTEMPTS.c.state, ATTEMPTS.c.artifact_dir)
            .join(RUNS, RUNS.c.id == ATTEMPTS.c.run_id)
            .where(RUNS.c.study_id == sid, ATTEMPTS.c.artifact_dir.is_not(None))
            .order_by(RUNS.c.id, ATTEMPTS.c.attempt_no)
        )
        if steps is not None:
            query = query.where(RUNS.c.step_key.in_(list(steps)))
        return [AttemptDir(attempt_id=r[0], step=r[1], seed=r[2], attempt_no=r[3], state=r[4],
                           artifact_dir=str(r[5])) for r in conn.execute(query)]


def _find(conn: Connection, sid: int, identity: str) -> tuple[int, str, int, int] | None:
    rows = conn.execute(
        sa.select(RUNS.c.id, RUNS.c.step_key, RUNS.c.seed, RUNS.c.config_json)
        .where(RUNS.c.study_id == sid, RUNS.c.superseded_at.is_(None))
    ).all()
    for run_id, step, seed, cfg in rows:
        if is_imported(cfg) and cfg[IMPORTED_KEY].get("identity") == identity:
            attempt = conn.execute(
                sa.select(sa.func.max(ATTEMPTS.c.id)).where(ATTEMPTS.c.run_id == run_id)
            ).scalar_one()
            return int(run_id), str(step), int(seed), int(attempt or 0)
    return None


def _store(conn: Connection, sid: int, study: str, step: str, run: ImportedRun,
           now: datetime) -> ImportOutcome:
    chash = run.config_hash
    superseded = list(conn.execute(
        sa.update(RUNS)
        .where(RUNS.c.study_id == sid, RUNS.c.step_key == step, RUNS.c.seed == run.seed,
               RUNS.c.superseded_at.is_(None))
        .values(superseded_at=now)
        .returning(RUNS.c.id)
    ).scalars())
    run_id = conn.execute(
        sa.select(RUNS.c.id).where(RUNS.c.study_id == sid, RUNS.c.step_key == step,
                                   RUNS.c.seed == run.seed, RUNS.c.config_hash == chash)
    ).scalar_one_or_none()
    if run_id is not None:  # imported before, then superseded: make it current again
        conn.execute(sa.update(RUNS).where(RUNS.c.id == run_id).values(superseded_at=None))
        attempt_id = conn.execute(
            sa.select(sa.func.max(ATTEMPTS.c.id)).where(ATTEMPTS.c.run_id == run_id)
        ).scalar_one()
        conn.execute(sa.insert(EVENTS).values(
            attempt_id=attempt_id, at=now, kind="imported",
            payload_json={"ref": run.ref, "identity": run.identity, "reactivated": True}))
        return ImportOutcome(study=study, step=step, seed=run.seed, run_id=int(run_id),
                             attempt_id=int(attempt_id), created=True, metrics=0,
                             superseded=len(superseded))
    budget = ((run.config.get("train") or {}).get("budget") or {}).get("seconds")
    run_id = conn.execute(
        sa.insert(RUNS).values(
            study_id=sid, step_key=step, seed=run.seed, config_hash=chash,
            config_json=finite_json(run.config), parent_step=None,
            description=f"imported from {run.ref}", priority=0, max_attempts=1,
            budget_seconds=float(budget) if isinstance(budget, int | float) else None,
            created_at=now)
        .returning(RUNS.c.id)
    ).scalar_one()
    res = run.result
    attempt_id = conn.execute(
        sa.insert(ATTEMPTS).values(
            run_id=run_id, attempt_no=1, state=AttemptState.SUCCEEDED.value, priority=0,
            worker_id=IMPORT_WORKER, claimed_at=run.started_at or now,
            started_at=run.started_at or now, finished_at=run.finished_at or now,
            exit_code=0, code_sha=run.code_sha, host=run.host,
            gpu=res.get("device") if isinstance(res.get("device"), str) else None,
            artifact_dir=run.artifact_dir, result_json=finite_json(res),
            iter=_int(res.get("iters")), tokens=_int(res.get("tokens")),
            train_s=_float(res.get("train_s")), val_loss=_float(res.get("final_val_loss")),
            best_val_loss=_float(res.get("best_val_loss")), lr=_float(res.get("final_lr")),
            loss=_float(res.get("final_train_loss")), created_at=now)
        .returning(ATTEMPTS.c.id)
    ).scalar_one()
    conn.execute(sa.insert(EVENTS).values(
        attempt_id=attempt_id, at=now, kind="imported",
        payload_json={"ref": run.ref, "identity": run.identity, "metrics": len(run.metrics)}))
    unique: dict[tuple[str, int], float | None] = {}
    for name, it, value in run.metrics:
        if len(name) <= _NAME_MAX:
            unique[(name, int(it))] = value if value == value else None  # NaN -> NULL
    rows = [{"attempt_id": attempt_id, "name": n, "step": s, "value": v}
            for (n, s), v in unique.items()]
    for i in range(0, len(rows), _BATCH):
        conn.execute(sa.insert(METRICS), rows[i:i + _BATCH])
    return ImportOutcome(study=study, step=step, seed=run.seed, run_id=int(run_id),
                         attempt_id=int(attempt_id), created=True, metrics=len(rows),
                         superseded=len(superseded))


def _int(v: object) -> int | None:
    f = _float(v)
    return int(f) if f is not None else None


def _float(v: object) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        f = float(v)
        return f if f == f and abs(f) != float("inf") else None
    return None
