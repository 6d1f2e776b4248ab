"""`recip status [STUDY] [--watch] [--json]`: the dashboard, from one snapshot query.

Every refresh first reaps expired leases, so a dead worker's attempt is re-queued while
someone is looking, without a cron job.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.common import DbOption, JsonOption, complete_study, db_url, emit_json, say
from orchestrator.core.errors import UnknownStudy
from orchestrator.core.plain import plain

if TYPE_CHECKING:
    from orchestrator.core.results import StudyResults
    from orchestrator.core.views import Snapshot
    from orchestrator.queue.repo import QueueRepo


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    """The Snapshot as JSON-ready data (datetimes as ISO 8601)."""
    out: dict[str, Any] = plain(snapshot)
    return out


def take_snapshot(repo: QueueRepo, study: str | None, *, reap: bool = True,
                  results: dict[str, StudyResults] | None = None) -> Snapshot:
    """Reap expired leases, then read the dashboard (UnknownStudy for a bad name). Each
    study's results, read once for the flags, are left in `results` when it is given (the
    decision line reuses them instead of reading the study again)."""
    now = datetime.now(UTC)
    if study is not None:
        known = repo.study_names()
        if study not in known:
            raise UnknownStudy(f"no study {study!r} in {repo.label} "
                               f"(studies: {', '.join(known) or 'none'})")
    if reap:
        lost = repo.reap_expired(now)
        if lost:
            say(f"reaped {len(lost)} expired lease{'s' if len(lost) != 1 else ''}")
        snap = repo.snapshot(now, study)
        from orchestrator.cli.liveness import mark_dead_workers

        dead = mark_dead_workers(repo, snap, now)
        if dead:  # their process is gone: shown stopped, not running
            say(f"worker{'s' if len(dead) != 1 else ''} {', '.join(dead)} gone (process "
                "not running): marked stopped")
            snap = repo.snapshot(now, study)
        return with_analysis_flags(repo, snap, results)
    return with_analysis_flags(repo, repo.snapshot(now, study), results)


def with_analysis_flags(repo: QueueRepo, snapshot: Snapshot,
                        results: dict[str, StudyResults] | None = None) -> Snapshot:
    """The snapshot with the report's per-run flags (failures, divergence, throughput
    regressions, expected ranges, commit mismatches) added to each run's queue flags."""
    if not snapshot.studies:
        return snapshot  # nothing to analyse: the report modules (scipy) stay unimported
    from orchestrator.report.flags import flags_for_runs

    studies = []
    for view in snapshot.studies:
        read = repo.study_results(view.name)
        if results is not None:
            results[view.name] = read
        flags = flags_for_runs(read)
        runs = tuple(  # a copy only of the runs that get a flag (dataclass replace is slow)
            replace(run, flags=(*run.flags, *(f for f in extra if f not in run.flags)))
            if (extra := flags.get((run.step, run.seed))) else run
            for run in view.runs)
        studies.append(replace(view, runs=runs))
    return replace(snapshot, studies=tuple(studies))


def status(
    study: Annotated[str | None, typer.Argument(help="Only this study.", show_default=False,
                                                autocompletion=complete_study)] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep redrawing every 2 s.")] = False,
    json_out: JsonOption = False,
    db: DbOption = None,
    interval: Annotated[float, typer.Option(hidden=True)] = 2.0,
    frames: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Every study's runs: state, worker, iteration, budget used, val loss, heartbeat, flags."""
    if json_out and watch:
        raise typer.BadParameter("--json prints one snapshot; drop --watch", param_hint="--json")
    from orchestrator.queue.repo import QueueRepo

    with QueueRepo.open(db_url(db)) as repo:
        if json_out:
            emit_json(snapshot_json(take_snapshot(repo, study)))
            return
        from orchestrator.cli.render import live, make_console, print_renderable
        from orchestrator.cli.render.status import render_status

        if not watch:
            read: dict[str, StudyResults] = {}
            snap = take_snapshot(repo, study, results=read)
            if not snap.studies:
                say(f"no studies in {snap.db}; submit one with `recip queue submit FILE`")
                return
            print_renderable(render_status(snap), make_console(wide=True))
            from orchestrator.cli.decision_cache import study_decision

            for view in snap.studies:  # `4 of 6 comparisons decided; V4 vs V3 needs ~4 more`
                line = study_decision(read[view.name])
                if line:
                    say(f"{view.name}: {line}")
            return

        def frame() -> tuple[Any, bool]:
            snap = take_snapshot(repo, study)
            done = study is not None and all(s.done for s in snap.studies)
            return render_status(snap), done

        try:
            live(frame, interval=interval, max_frames=frames, console=make_console(wide=True))
        except KeyboardInterrupt:
            pass


def register(app: typer.Typer) -> None:
    """Add `recip status` to the root app."""
    app.command("status")(status)
