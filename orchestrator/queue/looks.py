"""Seeds added after a look: new runs for more seeds of existing steps, and the study-level
record (`study_events`, kind `seeds_added`) the report's sequential correction reads.

A new run copies the config of the step's current run with the lowest seed and changes only
its `seed`, so overrides the study was submitted with (`--preset`, `--time`, `--set`, ...)
are kept; its hash comes from `orchestrator.core.ids`. Stored runs are never changed: a
(step, seed) that already has a current run is skipped (adding the same seeds twice adds
nothing, and records no look).

Functions take a connection inside the repo's transaction (`QueueRepo.add_seeds`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orchestrator.core import ids
from orchestrator.core.errors import QueueError
from orchestrator.core.results import SeedLook
from orchestrator.queue.schema import ATTEMPTS, EVENTS, RUNS, STUDY_EVENTS
from orchestrator.queue.types import finite_json

SEEDS_ADDED = "seeds_added"
DESIGN = "sequential_design"
"""A declared sequential design: `steps` may get seeds up to `max_seeds` (recorded by
`recip run --until-decided` at submit, before any analysis); read as a SeedLook without
seeds."""


@dataclass(frozen=True)
class SeedsAdded:
    """What `QueueRepo.add_seeds` did: the seeds it added per step (new runs, each with
    attempt 1 queued), the seeds that were already there, and the look it recorded."""

    study: str
    added: dict[str, tuple[int, ...]]
    present: dict[str, tuple[int, ...]]
    capped: tuple[str, ...] = ()
    """Steps that got fewer seeds than asked because `max_seeds` was reached."""
    look: int | None = None
    """The id of the `seeds_added` study event (None when nothing was added)."""

    @property
    def runs(self) -> int:
        return sum(len(s) for s in self.added.values())


def current_seeds(conn: Connection, study_id: int) -> dict[str, list[int]]:
    """step -> its current runs' seeds, ascending."""
    out: dict[str, list[int]] = {}
    for step, seed in conn.execute(
        sa.select(RUNS.c.step_key, RUNS.c.seed)
        .where(RUNS.c.study_id == study_id, RUNS.c.superseded_at.is_(None))
        .order_by(RUNS.c.step_key, RUNS.c.seed)
    ):
        out.setdefault(step, []).append(seed)
    return out


def choose_seeds(current: Mapping[str, Sequence[int]], counts: Mapping[str, int],
                 max_seeds: int | None = None) -> tuple[dict[str, list[int]], list[str]]:
    """The seeds `counts` asks for, chosen so the steps stay paired: each step first takes
    the study's seeds it lacks (ascending), then new seeds above the study's largest; with
    `max_seeds` no step goes past that many seeds. Returns (step -> seeds, capped steps)."""
    used = sorted({s for seeds in current.values() for s in seeds})
    top = used[-1] if used else 0
    out: dict[str, list[int]] = {}
    capped: list[str] = []
    for step, n in counts.items():
        have = set(current.get(step, ()))
        if max_seeds is not None and len(have) + n > max_seeds:
            n = max(0, max_seeds - len(have))
            capped.append(step)
        pick = [s for s in used if s not in have][:n]
        nxt = top + 1
        while len(pick) < n:
            pick.append(nxt)
            nxt += 1
        out[step] = pick
    return out, capped


def add_seeds(conn: Connection, study_id: int, study: str, now: datetime,
              seeds: Mapping[str, Sequence[int]], *, max_seeds: int | None = None,
              capped: Sequence[str] = (), source: str = "seeds add") -> SeedsAdded:
    """Insert a run (attempt 1 queued) for every (step, seed) in `seeds` without a current
    run, and one `seeds_added` study event when any was inserted."""
    bad = sorted({s for ss in seeds.values() for s in ss if s < 0})
    if bad:
        raise QueueError(f"seeds must be >= 0, got {bad}")
    current = current_seeds(conn, study_id)
    missing = [step for step in seeds if step not in current]
    if missing:
        raise QueueError(f"study {study!r} has no current run of {', '.join(missing)} to copy "
                         "the config from")
    if max_seeds is not None:
        over = [step for step, ss in seeds.items()
                if len(set(current[step]) | set(ss)) > max_seeds]
        if over:
            raise QueueError(f"adding these seeds would give {', '.join(over)} more than "
                             f"--max-seeds {max_seeds} seeds")
    added: dict[str, tuple[int, ...]] = {}
    present: dict[str, tuple[int, ...]] = {}
    rows: list[dict[str, Any]] = []
    for step, wanted in seeds.items():
        have = set(current[step])
        new = sorted(set(wanted) - have)
        present[step] = tuple(sorted(set(wanted) & have))
        if not new:
            continue
        source_run = conn.execute(
            sa.select(RUNS)
            .where(RUNS.c.study_id == study_id, RUNS.c.step_key == step,
                   RUNS.c.superseded_at.is_(None))
            .order_by(RUNS.c.seed).limit(1)
        ).one()
        for seed in new:
            config = {**source_run.config_json, "seed": seed}
            rows.append({
                "study_id": study_id, "step_key": step, "seed": seed,
                "config_hash": ids.config_hash(config), "config_json": config,
                "parent_step": source_run.parent_step, "description": source_run.description,
                "priority": source_run.priority, "max_attempts": source_run.max_attempts,
                "budget_seconds": source_run.budget_seconds, "created_at": now,
            })
        added[step] = tuple(new)
    if not rows:
        return SeedsAdded(study=study, added={}, present=present, capped=tuple(capped))
    run_ids = list(conn.execute(
        sa.insert(RUNS).returning(RUNS.c.id, sort_by_parameter_order=True), rows
    ).scalars())
    attempt_ids = list(conn.execute(
        sa.insert(ATTEMPTS).returning(ATTEMPTS.c.id, sort_by_parameter_order=True),
        [{"run_id": rid, "attempt_no": 1, "state": "queued", "priority": r["priority"],
          "created_at": now} for rid, r in zip(run_ids, rows, strict=True)],
    ).scalars())
    payload = {
        "source": source, "max_seeds": max_seeds,
        "before": {step: len(current[step]) for step in added},
        "added": {step: list(s) for step, s in added.items()},
    }
    look: int = conn.execute(
        sa.insert(STUDY_EVENTS).values(study_id=study_id, at=now, kind=SEEDS_ADDED,
                                        payload_json=finite_json(payload))
        .returning(STUDY_EVENTS.c.id)
    ).scalar_one()
    conn.execute(sa.insert(EVENTS), [
        {"attempt_id": a, "at": now, "kind": "queued",
         "payload_json": {"reason": "seeds", "look": look, "source": source}}
        for a in attempt_ids
    ])
    return SeedsAdded(study=study, added=added, present=present, capped=tuple(capped),
                      look=look)


def declare_design(conn: Connection, study_id: int, now: datetime, steps: Sequence[str],
                   max_seeds: int, *, source: str = "until-decided") -> bool:
    """Record that `steps` may get seeds up to `max_seeds` (False, nothing written, when
    the same design is already recorded)."""
    if max_seeds < 1:
        raise QueueError(f"max_seeds must be at least 1, got {max_seeds}")
    wanted = {"steps": list(steps), "max_seeds": max_seeds}
    for payload in conn.execute(
        sa.select(STUDY_EVENTS.c.payload_json)
        .where(STUDY_EVENTS.c.study_id == study_id, STUDY_EVENTS.c.kind == DESIGN)
    ).scalars():
        body = payload or {}
        if {k: body.get(k) for k in wanted} == wanted:
            return False
    conn.execute(sa.insert(STUDY_EVENTS).values(
        study_id=study_id, at=now, kind=DESIGN, payload_json={**wanted, "source": source}))
    return True


def study_looks(conn: Connection, study_id: int) -> tuple[SeedLook, ...]:
    """The study's looks in time order: a declared design is a SeedLook without seeds; one
    recorded addition that gave different steps different seeds is one SeedLook per
    distinct seed set (all with its time)."""
    out: list[SeedLook] = []
    for at, kind, payload in conn.execute(
        sa.select(STUDY_EVENTS.c.at, STUDY_EVENTS.c.kind, STUDY_EVENTS.c.payload_json)
        .where(STUDY_EVENTS.c.study_id == study_id,
               STUDY_EVENTS.c.kind.in_((SEEDS_ADDED, DESIGN)))
        .order_by(STUDY_EVENTS.c.at, STUDY_EVENTS.c.id)
    ):
        body: dict[str, Any] = payload or {}
        if kind == DESIGN:
            cap = body.get("max_seeds")
            out.append(SeedLook(at=at, steps=tuple(str(s) for s in body.get("steps") or ()),
                                seeds=(), max_seeds=int(cap) if isinstance(cap, int) else None))
            continue
        raw = body.get("added")
        added: dict[str, Any] = raw if isinstance(raw, dict) else {}
        cap = body.get("max_seeds")
        groups: dict[tuple[int, ...], list[str]] = {}
        for step, seeds in added.items():
            groups.setdefault(tuple(int(s) for s in seeds), []).append(str(step))
        for seeds, steps in groups.items():
            out.append(SeedLook(at=at, steps=tuple(steps), seeds=seeds,
                                max_seeds=int(cap) if isinstance(cap, int) else None))
    return tuple(out)
