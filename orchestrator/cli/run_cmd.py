"""`recip run FILE` (submit + local workers + live dashboard + report) and `recip logs`.

`run` exits 0 only when every run of the study succeeded. A missing SQLite database is
created (the embedded default needs nothing but the install); a server database must
already be at head (`recip db upgrade`).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.common import (
    DatasetOption,
    DbOption,
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
    say,
    split_csv,
)
from orchestrator.cli.workers_cmd import (
    DEFAULT_RUNS_DIR,
    AddressOption,
    CpuWorkersOption,
    GpusOption,
    GraceOption,
    LeaseOption,
    RunsDirOption,
)
from orchestrator.core.errors import RecipError

if TYPE_CHECKING:
    pass


def register(app: typer.Typer) -> None:
    """Add `recip run` and `recip logs` to the root app."""
    app.command("run")(run)
    app.command("logs")(logs)


def run(
    file: Annotated[Path, typer.Argument(help="Study spec (YAML), e.g. ablations/smoke.yaml.",
                                         show_default=False)],
    steps: StepsOption = None,
    no_check: NoCheckOption = False,
    preset: PresetOption = None,
    dataset: DatasetOption = None,
    tokenizer: TokenizerOption = None,
    time_s: TimeOption = None,
    max_iters: MaxItersOption = None,
    seeds: SeedsOption = None,
    sets: SetOption = None,
    gpus: GpusOption = None,
    cpu_workers: CpuWorkersOption = None,
    address: AddressOption = None,
    db: DbOption = None,
    runs_dir: RunsDirOption = Path(DEFAULT_RUNS_DIR),
    lease: LeaseOption = 30.0,
    grace: GraceOption = 120.0,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip the final report.")
                         ] = False,
    until_decided: Annotated[bool, typer.Option(
        "--until-decided", help="After each round, add seeds only to the steps of comparisons "
        "still inconclusive whose seeds_needed fits under --max-seeds; stop when all are "
        "decided or the cap is reached (each addition is a recorded look).")] = False,
    max_seeds: Annotated[int, typer.Option(
        "--max-seeds", help="Seeds per step --until-decided may grow to.", min=2)] = 8,
    other_studies: Annotated[bool, typer.Option(
        "--other-studies", help="Let the workers also run other studies' queued attempts "
        "(default: only this study's).")] = False,
    interval: Annotated[float, typer.Option(hidden=True)] = 2.0,
) -> None:
    """Submit a study, run it on local workers with a live dashboard, then report it."""
    from orchestrator.cli import submit as pipeline
    from orchestrator.cli.render import check_progress, make_console, print_renderable
    from orchestrator.cli.render.status import render_status
    from orchestrator.cli.workers_cmd import (
        absolute_db_url,
        drive,
        open_repo,
        pidfile,
        pool_config,
    )
    from workers.pool import WorkerPool

    ov = pipeline.overrides(preset=preset, dataset=dataset, tokenizer=tokenizer, time=time_s,
                            max_iters=max_iters, seeds=seeds, sets=sets)
    step_list = split_csv(steps)
    plan = pipeline.build_plan(file, steps=step_list, overrides=ov)
    url = absolute_db_url(db_url(db))
    pipeline.ensure_database_ready(url)  # fails on a database not at head before the checks
    if not no_check:
        with check_progress(plan) as progress:
            params = pipeline.check_plan_or_raise(plan, str(file), step_list, progress=progress)
        warning = pipeline.slow_here_warning(plan, params, has_gpu=pipeline.has_gpu())
        if warning:
            say(warning)
    with open_repo(url) as repo:
        result = repo.submit(plan, datetime.now(UTC))
        if until_decided:  # the design is declared before any analysis: look 0 spends too
            repo.declare_design(plan.name, datetime.now(UTC), max_seeds, steps=plan.steps)
        for line in pipeline.describe_submit(result, len(plan.runs)):
            say(line)
        config = pool_config(db=url, runs_dir=runs_dir, gpus=gpus, cpu_workers=cpu_workers,
                             address=address, until_empty=True,
                             study=None if other_studies else plan.name, lease=lease,
                             grace=grace)
        with pidfile(config.runs_dir, url, f"run {plan.name}"):
            pool = WorkerPool(config)
            try:
                slots = pool.start()
                say(f"{len(slots)} worker{'' if len(slots) == 1 else 's'} ({', '.join(s.name for s in slots)}); "
                    f"runs in {config.runs_dir}; Ctrl-C stops cleanly")
                started = time.monotonic()
                outcome = drive(pool, repo, study=plan.name, interval=interval,
                                render=lambda snap, p: render_status(snap),
                                live=sys.stdout.isatty())
            finally:
                pool.shutdown()
            if until_decided and not outcome.stopped_by_signal:
                from orchestrator.cli.seeds_cmd import run_until_decided

                outcome = run_until_decided(repo, plan.name, config, outcome,
                                            max_seeds=max_seeds, interval=interval)
        from orchestrator.cli.status_cmd import take_snapshot

        snap = take_snapshot(repo, plan.name)
    if not sys.stdout.isatty():
        print_renderable(render_status(snap), make_console(wide=True))
    runs = [r for s in snap.studies for r in s.runs]
    bad = [r for r in runs if r.state != "succeeded"]
    say(f"study {plan.name}: {len(runs) - len(bad)}/{len(runs)} runs succeeded in "
        f"{time.monotonic() - started:.0f}s")
    if not no_report and not outcome.stopped_by_signal:
        _report(plan.name, url)
    if outcome.stopped_by_signal:
        say(f"stopped: unfinished attempts are back in the queue; `recip run {file}` or "
            "`recip workers up` continues them")
        raise typer.Exit(130)
    if bad:
        for r in bad:
            say(f"  {r.step} seed {r.seed}: {r.state}"
                + (f" ({r.failure_kind})" if r.failure_kind else "")
                + (f": {r.error}" if r.error else ""))
        raise typer.Exit(1)


def _report(study: str, url: str) -> None:
    try:
        from orchestrator.cli.report_cmd import Format, report
    except ImportError:
        return
    try:
        report(study=study, fmt=Format.table, plot=None, out=None, metric=None, db=url)
    except RecipError as e:
        say(f"report: {e.message}")


def logs(
    study: StudyArgument,
    step: Annotated[str, typer.Argument(help="Step name, e.g. V1.")],
    seed: Annotated[int | None, typer.Option(help="Seed (default: the lowest).",
                                             show_default=False)] = None,
    attempt: Annotated[int | None, typer.Option(
        help="Attempt number (default: the latest that ran).", show_default=False)] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing until the attempt ends.")] = False,
    db: DbOption = None,
) -> None:
    """Print an attempt's stdout.log (the trainer's output)."""
    from orchestrator.cli.workers_cmd import open_repo
    from orchestrator.core.states import TERMINAL
    from workers.train.artifacts import LOG

    ended = {s.value for s in TERMINAL} | {"queued"}
    with open_repo(db_url(db)) as repo:
        ref = repo.find_attempt(study, step, seed, attempt)
        pick_seed, no, attempt_id, artifact_dir, state = (
            ref.seed, ref.attempt_no, ref.attempt_id, ref.artifact_dir, ref.state)
        if artifact_dir is None:
            say(f"{study} {step} seed {pick_seed} attempt {no} is {state} and has not run yet")
            return
        path = Path(artifact_dir) / LOG
        say(f"{path} (attempt {no}, {state})")
        offset = 0
        while True:
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                if not follow:
                    raise RecipError(f"no log at {path}: the attempt ran on another host, or "
                                     "its directory was moved") from None
                chunk = b""
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
                offset += len(chunk)
            if not follow:
                return
            now_state = repo.attempt(attempt_id).state
            if now_state in ended and not chunk:
                return
            time.sleep(1.0)
