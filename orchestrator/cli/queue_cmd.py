"""`recip queue submit | ls | cancel`: put a study in the queue, list studies, cancel one.

`submit` is also the library entry of `recip run`: `build_plan`, `check_plan_or_raise` and
`describe_submit` are the steps it composes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.common import (
    DbOption,
    JsonOption,
    SetOption,
    db_url,
    emit_json,
    say,
    split_csv,
)
from orchestrator.core.errors import SpecError, UnknownStudy

if TYPE_CHECKING:
    from orchestrator.core.plan import StudyPlan
    from orchestrator.core.resolve import Overrides
    from orchestrator.queue.types import SubmitResult

app = typer.Typer(help="Submit studies to the queue, list them, cancel them.",
                  no_args_is_help=True)

StepsOption = Annotated[str | None, typer.Option(
    "--steps", help="Only these steps, comma-separated (e.g. V1,V3).", show_default=False)]


def parse_seeds(value: str | None) -> tuple[int, ...] | None:
    """'1,2' -> (1, 2); SpecError naming --seeds otherwise."""
    parts = split_csv(value)
    if parts is None:
        return None
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise SpecError(f"expected comma-separated integers, e.g. --seeds 1,2, got {value!r}",
                        path="--seeds") from None


def build_plan(file: Path, *, steps: Sequence[str] | None = None,
               overrides: Overrides | None = None) -> StudyPlan:
    """Load, validate and resolve a spec file against the model presets."""
    from models.presets import PRESETS, TOKENIZER_VOCAB
    from orchestrator.core.loader import load_spec
    from orchestrator.core.resolve import resolve

    spec = load_spec(file)
    return resolve(spec, presets=PRESETS, vocab=TOKENIZER_VOCAB, overrides=overrides,
                   steps=steps, source=str(file))


def _total(params: Mapping[str, int]) -> int:
    return int(params["total"]) if "total" in params else sum(params.values())


def check_datasets(plan: StudyPlan, file: str) -> None:
    """SpecError for a `text:PATH` dataset whose file does not exist on this machine."""
    seen: set[str] = set()
    steps = plan.spec.get("steps") if isinstance(plan.spec.get("steps"), dict) else {}
    for r in plan.runs:
        data = r.config.get("data")
        dataset = data.get("dataset") if isinstance(data, dict) else None
        if not isinstance(dataset, str) or not dataset.startswith("text:") or dataset in seen:
            continue
        seen.add(dataset)
        path = Path(dataset[len("text:"):]).expanduser()
        if not path.is_file():
            body = steps.get(r.step) if isinstance(steps, dict) else None
            where = ("steps." + r.step if isinstance(body, dict) and body.get("data")
                     else "defaults") + ".data.dataset"
            raise SpecError(f"dataset {dataset!r}: no such file {path}; fix the path (or pass "
                            "--no-check when only the workers have it)", file=file, path=where)


def check_plan_or_raise(plan: StudyPlan, file: str,
                        steps: Sequence[str] | None = None) -> dict[str, int]:
    """Dry-run every step's model (workers.check); SpecError on the first failing step or a
    missing `text:` dataset file.

    Warnings go to stderr; returns the total parameter count per step."""
    from orchestrator.core.resolve import check_error_location
    from workers.check import check_plan

    check_datasets(plan, file)

    checks = check_plan(plan, steps)
    for c in checks:
        for w in c.warnings:
            say(f"warning: {c.step}: {w}")
        if c.identical_to and not c.intended_control:
            say(f"warning: {c.step} builds the same model as {c.identical_to}; "
                "any difference between them comes from training settings, not the model")
    for c in checks:
        if not c.ok:
            at = c.error_at
            if at is None:
                raise SpecError(c.error or "the model check failed", file=file,
                                path=f"steps.{c.step}")
            path, message = check_error_location(
                plan.spec, c.step, line=c.error or at.message, part=at.part, message=at.message,
                slot=at.slot, knob=at.knob)
            raise SpecError(message, file=file, path=path)
    return {c.step: _total(c.params) for c in checks if c.params}


def describe_submit(result: SubmitResult, total_runs: int) -> list[str]:
    """What a submit did, as narration lines."""
    if not result.changed:
        return [f"nothing new: study {result.study} already has these {total_runs} runs"]
    head = (f"study {result.study}: created with {len(result.new_runs)} runs"
            if result.study_created else
            f"study {result.study}: {len(result.new_runs)} new runs, "
            f"{result.unchanged_runs} unchanged")
    lines = [f"{head}; {result.queued_attempts} attempts queued"]
    if result.changed_steps and not result.study_created:
        lines.append(
            f"changed since the last submit: {', '.join(result.changed_steps)} (new runs; the "
            "old runs keep their history"
            + (f", {result.cancelled_attempts} of their queued attempts cancelled"
               if result.cancelled_attempts else "") + ")")
    return lines


def plan_json(plan: StudyPlan) -> dict[str, Any]:
    """The plan as JSON: study, spec hash and one entry per run with its resolved config."""
    return {"study": plan.name, "spec_hash": plan.spec_hash, "overrides": plan.overrides,
            "runs": [{"step": r.step, "seed": r.seed, "parent": r.parent,
                      "config_hash": r.config_hash, "budget_seconds": r.budget_seconds,
                      "config": r.config} for r in plan.runs]}


@app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(help="Study spec (YAML), e.g. ablations/smoke.yaml.",
                                         show_default=False)],
    plan_only: Annotated[bool, typer.Option(
        "--plan", help="Print the plan (runs, config hashes, budget, GPU-hours); queue nothing.")
    ] = False,
    steps: StepsOption = None,
    no_check: Annotated[bool, typer.Option(
        "--no-check", help="Skip the CPU dry-run of every step's model.")] = False,
    preset: Annotated[str | None, typer.Option(
        help="Model size preset for every step (replaces the spec's sizes).",
        show_default=False)] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Dataset for every step (kjv, text:PATH, hf:NAME).", show_default=False)] = None,
    time: Annotated[float | None, typer.Option(
        "--time", help="Training budget in seconds for every step (replaces the spec's budget).",
        show_default=False)] = None,
    max_iters: Annotated[int | None, typer.Option(
        "--max-iters", help="Iteration budget for every step (replaces the spec's budget).",
        show_default=False)] = None,
    seeds: Annotated[str | None, typer.Option(
        help="Seeds for every step, comma-separated (e.g. 1,2).", show_default=False)] = None,
    sets: SetOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Validate a study spec, dry-run its models, and queue its runs (idempotent)."""
    from orchestrator.cli import render
    from orchestrator.core.resolve import Overrides, parse_set

    overrides = Overrides(preset=preset, dataset=dataset, time=time, max_iters=max_iters,
                          seeds=parse_seeds(seeds),
                          sets=tuple(parse_set(a) for a in sets or ()))
    step_list = split_csv(steps)
    plan = build_plan(file, steps=step_list, overrides=overrides)
    params = None if no_check else check_plan_or_raise(plan, str(file), step_list)
    gpu = render.fmt_gpu_hours(plan.runs)
    if plan_only:
        if json_out:
            emit_json(plan_json(plan))
        else:
            render.print_renderable(render.render_plan(plan, params))
        say(f"{len(plan.runs)} runs, {gpu}. Nothing queued (--plan).")
        return

    from orchestrator.cli.run_cmd import ensure_database
    from orchestrator.queue.repo import QueueRepo

    url = db_url(db)
    ensure_database(url)  # the embedded default: a missing SQLite file is created at head
    with QueueRepo.open(url) as repo:
        result = repo.submit(plan, datetime.now(UTC))
    if json_out:
        emit_json({**plan_json(plan), "queued_attempts": result.queued_attempts,
                   "new_runs": len(result.new_runs), "unchanged_runs": result.unchanged_runs,
                   "changed_steps": list(result.changed_steps)})
    elif result.changed:
        render.print_renderable(render.render_plan(plan, params))
    for line in describe_submit(result, len(plan.runs)):
        say(line)
    if result.changed:
        say(f"{gpu} in total; watch with `recip status {plan.name} --watch`")


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
    from orchestrator.cli import render

    render.print_renderable(render.render_studies(snap))


@app.command("cancel")
def cancel(
    study: Annotated[str, typer.Argument(help="Study name.", show_default=False)],
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

