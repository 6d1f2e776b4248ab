"""`recip queue submit | ls | cancel`: put a study in the queue, list studies, cancel one.

The submit steps themselves (plan, check, describe) live in `orchestrator.cli.submit`, which
`recip run` composes too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.common import (
    DatasetOption,
    DbOption,
    JsonOption,
    MaxItersOption,
    NoCheckOption,
    PresetOption,
    SeedsOption,
    SetOption,
    StepsOption,
    StudyArgument,
    TimeOption,
    TokenizerOption,
    db_url,
    emit_json,
    say,
    split_csv,
)
from orchestrator.cli.submit import build_plan, plan_json
from orchestrator.core.errors import UnknownStudy

if TYPE_CHECKING:
    from orchestrator.core.plan import StudyPlan

__all__ = ["app", "build_plan", "plan_json"]

app = typer.Typer(help="Submit studies to the queue, list them, cancel them.",
                  no_args_is_help=True)


@app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(help="Study spec (YAML), e.g. ablations/smoke.yaml.",
                                         show_default=False)],
    plan_only: Annotated[bool, typer.Option(
        "--plan", help="Print the plan (runs, config hashes, budget, GPU-hours); queue nothing.")
    ] = False,
    steps: StepsOption = None,
    no_check: NoCheckOption = False,
    preset: PresetOption = None,
    dataset: DatasetOption = None,
    tokenizer: TokenizerOption = None,
    time: TimeOption = None,
    max_iters: MaxItersOption = None,
    seeds: SeedsOption = None,
    sets: SetOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Validate a study spec, dry-run its models, and queue its runs (idempotent)."""
    from orchestrator.cli import submit as pipeline
    from orchestrator.cli.format import fmt_gpu_hours

    ov = pipeline.overrides(preset=preset, dataset=dataset, tokenizer=tokenizer, time=time,
                            max_iters=max_iters, seeds=seeds, sets=sets)
    step_list = split_csv(steps)
    plan = build_plan(file, steps=step_list, overrides=ov)
    url = db_url(db)
    if not plan_only:  # a database that is not at head fails before the checks spend seconds
        pipeline.ensure_database_ready(url)
    params = None
    if not no_check:
        from orchestrator.cli.render import check_progress

        with check_progress(plan) as progress:
            params = pipeline.check_plan_or_raise(plan, str(file), step_list, progress=progress,
                                                  queueing=not plan_only)
        warning = pipeline.slow_here_warning(plan, params, has_gpu=pipeline.has_gpu())
        if warning:
            say(warning)
    gpu = fmt_gpu_hours(plan.runs)
    if plan_only:
        if json_out:
            emit_json(plan_json(plan))
        else:
            print_plan(plan, params)
        say(f"{len(plan.runs)} run{'' if len(plan.runs) == 1 else 's'}, {gpu}. "
            "Nothing queued (--plan).")
        return

    from orchestrator.queue.repo import QueueRepo

    with QueueRepo.open(url) as repo:
        result = repo.submit(plan, datetime.now(UTC))
    if json_out:
        emit_json({**plan_json(plan), "queued_attempts": result.queued_attempts,
                   "new_runs": len(result.new_runs), "unchanged_runs": result.unchanged_runs,
                   "changed_steps": list(result.changed_steps)})
    elif result.changed:
        print_plan(plan, params)
    for line in pipeline.describe_submit(result, len(plan.runs)):
        say(line)
    if result.changed:
        say(f"{gpu} in total; watch with `recip status {plan.name} --watch`")


def print_plan(plan: StudyPlan, params: dict[str, int] | None) -> None:
    """The plan table on stdout (rich is imported here, so `--json` never loads it)."""
    from orchestrator.cli.render import print_renderable
    from orchestrator.cli.render.plan import render_plan

    print_renderable(render_plan(plan, params))


@app.command("ls")
def ls(json_out: JsonOption = False, db: DbOption = None) -> None:
    """List the studies in the queue with their runs by state."""
    from orchestrator.queue.repo import QueueRepo

    with QueueRepo.open(db_url(db)) as repo:
        snap = repo.snapshot(datetime.now(UTC))
    if json_out:
        emit_json([{"study": s.name, "description": s.description,
                    "created_at": s.created_at.isoformat() if s.created_at else None,
                    "runs": sum(s.counts.values()), "counts": dict(s.counts)}
                   for s in snap.studies])
        return
    if not snap.studies:
        say(f"no studies in {snap.db}; submit one with `recip queue submit FILE`")
        return
    from orchestrator.cli.render import print_renderable
    from orchestrator.cli.render.status import render_studies

    print_renderable(render_studies(snap))


@app.command("cancel")
def cancel(
    study: StudyArgument,
    steps: StepsOption = None,
    db: DbOption = None,
) -> None:
    """Cancel a study's queued and running attempts (running workers are fenced out)."""
    from orchestrator.queue.repo import QueueRepo

    with QueueRepo.open(db_url(db)) as repo:
        known = repo.study_names()
        if study not in known:
            raise UnknownStudy(f"no study {study!r} in {repo.label} "
                               f"(studies: {', '.join(known) or 'none'})")
        n = repo.cancel(study, datetime.now(UTC), split_csv(steps))
    which = f" (steps {steps})" if steps else ""
    say(f"study {study}{which}: {n} attempt{'s' if n != 1 else ''} cancelled")

