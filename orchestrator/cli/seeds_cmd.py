"""`recip seeds add STUDY [--steps V1,V2] [--count N | --seeds 4,5]`: more seeds for a study.

Each added seed is a new run of the step (its config with only the seed changed, so the
overrides the study was submitted with stay) with attempt 1 queued; the addition is recorded
as a look, and the report analyses comparisons whose sample grew after a look with a
sequential correction. Seeds already present are skipped; stored runs never change.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.common import DbOption, JsonOption, db_url, emit_json, say, split_csv
from orchestrator.core.errors import RecipError

if TYPE_CHECKING:
    from orchestrator.cli.workers_cmd import DriveResult
    from orchestrator.queue.looks import SeedsAdded
    from orchestrator.queue.repo import QueueRepo
    from workers.pool import PoolConfig

app = typer.Typer(help="Add seeds to a study's steps (recorded as a look).", no_args_is_help=True)


def describe_added(out: SeedsAdded) -> list[str]:
    """What an addition did, as narration lines."""
    if not out.added:
        present = sorted({s for seeds in out.present.values() for s in seeds})
        lines = [f"nothing new: study {out.study} already has "
                 + (f"seeds {', '.join(map(str, present))} of these steps" if present
                    else "as many seeds as --max-seeds allows")]
    else:
        groups: dict[tuple[int, ...], list[str]] = {}
        for step, seeds in out.added.items():
            groups.setdefault(seeds, []).append(step)
        parts = [f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} to "
                 f"{', '.join(steps)}" for seeds, steps in groups.items()]
        lines = [f"study {out.study}: added {'; '.join(parts)} ({out.runs} runs queued, "
                 "recorded as a look: the report corrects for it)"]
    if out.capped:
        lines.append(f"at the --max-seeds cap: {', '.join(out.capped)}")
    return lines


@app.command("add")
def add(
    study: Annotated[str, typer.Argument(help="Study name.", show_default=False)],
    steps: Annotated[str | None, typer.Option(
        "--steps", help="Steps to add seeds to, comma-separated (default: every step).",
        show_default=False)] = None,
    count: Annotated[int | None, typer.Option(
        "--count", help="How many more seeds per step (the next seeds the steps lack, "
        "shared between them so comparisons stay paired).", show_default=False)] = None,
    seeds: Annotated[str | None, typer.Option(
        "--seeds", help="Exactly these seeds, comma-separated (e.g. 4,5); present ones are "
        "skipped.", show_default=False)] = None,
    max_seeds: Annotated[int | None, typer.Option(
        "--max-seeds", help="No step gets more than this many seeds in all.",
        show_default=False)] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Add seeds to a study's steps as new queued runs; run them with `recip workers up`."""
    from orchestrator.cli.submit import parse_seeds
    from orchestrator.queue.repo import QueueRepo

    if (count is None) == (seeds is None):
        raise RecipError("give one of --count N or --seeds 4,5, e.g. "
                         f"`recip seeds add {study} --count 2`")
    if count is not None and count < 1:
        raise RecipError(f"--count must be at least 1, got {count}")
    if max_seeds is not None and max_seeds < 1:
        raise RecipError(f"--max-seeds must be at least 1, got {max_seeds}")
    wanted = parse_seeds(seeds)
    if wanted is not None and (not wanted or len(set(wanted)) != len(wanted)
                               or min(wanted) < 0):
        raise RecipError(f"--seeds must be distinct integers >= 0, got {seeds!r}")
    step_list = split_csv(steps)
    with QueueRepo.open(db_url(db)) as repo:
        if step_list is None:  # every step with runs, in spec order
            results = repo.study_results(study)
            have = {a.step for a in results.attempts}
            step_list = [s for s in results.steps if s in have]
        if not step_list:
            raise RecipError(f"--steps is empty; name steps of {study}, e.g. --steps V1,V2")
        out = repo.add_seeds(
            study, datetime.now(UTC), max_seeds=max_seeds,
            counts={s: count for s in step_list} if count is not None else None,
            seeds={s: list(wanted) for s in step_list} if wanted is not None else None)
    if json_out:
        emit_json({"study": out.study, "added": {k: list(v) for k, v in out.added.items()},
                   "present": {k: list(v) for k, v in out.present.items()},
                   "capped": list(out.capped), "look": out.look, "runs": out.runs})
    for line in describe_added(out):
        say(line)
    if out.added:
        say("run them with `recip workers up --until-empty` (or `recip run FILE`)")


# --- the composition behind `recip run FILE --until-decided` and the status line --------


def run_until_decided(repo: QueueRepo, study: str, config: PoolConfig, first: DriveResult, *,
                      max_seeds: int, interval: float) -> DriveResult:
    """After `recip run`'s first round: analyse, queue more seeds for the open comparisons
    that fit under `max_seeds`, run the workers until the queue is empty, repeat; say why
    it stopped. Returns the last round's DriveResult (`first` when none ran)."""
    import sys

    from orchestrator.cli.decide import hours_per_seed, until_decided
    from orchestrator.cli.render.status import render_status
    from orchestrator.cli.workers_cmd import drive
    from orchestrator.report.analysis import analyze
    from workers.pool import WorkerPool

    last = [first]

    def analyse() -> Any:
        return analyze(repo.study_results(study))

    def steps() -> list[str]:
        return sorted({a.step for a in repo.study_results(study).attempts})

    def add(counts: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        out = repo.add_seeds(study, datetime.now(UTC), counts=counts, max_seeds=max_seeds,
                             source="until-decided")
        return out.added

    def run_round() -> bool:
        pool = WorkerPool(config)
        try:
            pool.start()
            last[0] = drive(pool, repo, study=study, interval=interval,
                            render=lambda snap, p: render_status(snap),
                            live=sys.stdout.isatty())
        finally:
            pool.shutdown()
        return not last[0].stopped_by_signal

    stop = until_decided(analyse=analyse, steps=steps, add=add, run_round=run_round,
                         cap=max_seeds, hours=lambda: hours_per_seed(repo.study_results(study)),
                         say=say)
    rounds = f" after {stop.rounds} added round{'s' if stop.rounds != 1 else ''}"
    say(f"--until-decided stopped{rounds}: {stop.reason}")
    return last[0]
