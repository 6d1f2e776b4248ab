"""Why queued attempts are not being claimed: one line per cause, from a Snapshot alone.

Checked in this order, per study with queued attempts (the first that holds is the cause):

    no live worker        no worker heartbeat within `live_s` (none started, or all dead)
    quarantine            every live worker is quarantined (`recip workers release`)
    commit pin            the study is `code: pinned` and no live, usable worker runs that commit
    all busy              every usable worker is running an attempt (they claim when done)

Nothing is said when a usable idle worker exists: it claims at its next poll. Pure (no
database, no clock): the caller passes `now`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.core.views import Snapshot, StudyView, WorkerView

LIVE_S = 90.0
"""A worker that has not heartbeated for this long is not counted as live (idle workers
heartbeat every couple of seconds, busy ones every lease/3)."""


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def live_workers(snapshot: Snapshot, now: datetime, live_s: float = LIVE_S) -> list[WorkerView]:
    cutoff = _aware(now) - timedelta(seconds=live_s)
    return [w for w in snapshot.workers if w.stopped_at is None
            and w.last_heartbeat is not None and _aware(w.last_heartbeat) >= cutoff]


def _why(study: StudyView, queued: int, live: list[WorkerView]) -> str | None:
    n = f"{study.name}: {queued} queued attempt{'s' if queued != 1 else ''} not claimed"
    if not live:
        return f"{n}: no live worker; start one with `recip workers up`"
    usable = [w for w in live if not w.quarantined]
    if not usable:
        return (f"{n}: every live worker is quarantined ({len(live)}); see `recip workers ls`, "
                "then `recip workers release WORKER`")
    pin = study.pinned_sha
    if pin is not None:
        usable = [w for w in usable if w.code_sha and w.code_sha.startswith(pin)]
        if not usable:
            return (f"{n}: the study is pinned to commit {pin[:12]} and no live worker runs "
                    f"it; check it out on a worker box (`git checkout {pin[:12]}`) or "
                    "`recip resume` with the current code")
    if all(w.current_attempt is not None for w in usable):
        return f"{n}: all {len(usable)} usable workers are busy; they claim when done"
    return None


def reasons(snapshot: Snapshot, now: datetime, live_s: float = LIVE_S) -> list[str]:
    """One line per study whose queued attempts nobody is claiming, saying why."""
    live = live_workers(snapshot, now, live_s)
    out = []
    for study in snapshot.studies:
        queued = sum(r.state == "queued" for r in study.runs)
        if queued:
            line = _why(study, queued, live)
            if line is not None:
                out.append(line)
    return out


def quarantined(snapshot: Snapshot) -> list[str]:
    """One line per live quarantined worker, with the command that lets it back."""
    return [f"quarantined: {w.id} ({w.quarantined}); it claims nothing until "
            f"`recip workers release {w.id}`"
            for w in snapshot.workers if w.quarantined and w.stopped_at is None]
