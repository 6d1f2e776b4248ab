"""`recip wandb sync STUDY [--dry-run]`: upload a study's offline W&B runs with `wandb sync`.

Stdout: one row per offline run (step, seed, attempt, W&B run id, status, directory), or
`--json`; stderr: what was done. No network or no API key = one `error:` line, exit 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli.common import DbOption, JsonOption, db_url, emit_json, say, split_csv

if TYPE_CHECKING:
    from orchestrator.tracking.sync import SyncReport

app = typer.Typer(help="W&B: upload the offline runs of a study.", no_args_is_help=True)


@app.command("sync")
def sync_cmd(
    study: Annotated[str, typer.Argument(help="Study name (see `recip queue ls`).",
                                         show_default=False)],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List what `wandb sync` would upload; upload nothing.")] = False,
    steps: Annotated[str | None, typer.Option(
        "--steps", help="Only these steps, comma-separated.", show_default=False)] = None,
    project: Annotated[str | None, typer.Option(
        "--project", help="Upload into this W&B project (default: each run's own).",
        show_default=False)] = None,
    entity: Annotated[str | None, typer.Option(
        "--entity", help="W&B entity (default: your default entity).", show_default=False)] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds before giving up.")] = 600.0,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Upload every attempt's offline W&B run of STUDY (runs already synced are skipped)."""
    from orchestrator.queue.imports import attempt_dirs
    from orchestrator.queue.repo import QueueRepo
    from orchestrator.tracking import baseline, sync

    with QueueRepo.open(db_url(db)) as repo:
        dirs = attempt_dirs(repo, study, split_csv(steps))
    items = sync.collect([(d.attempt_id, d.step, d.seed, d.attempt_no, d.artifact_dir)
                          for d in dirs])
    if not items:
        say(f"study {study}: no offline W&B runs in {len(dirs)} attempt dir(s) "
            "(wandb mode disabled, or the runs dir is on another machine?)")
        if json_out:
            emit_json([])
        return
    pending = [i for i in items if not i.synced and i.run_file is not None]
    if pending and not dry_run:
        if not baseline.api_key_configured():
            from orchestrator.core.errors import TrackerError

            raise TrackerError(f"no W&B API key: set WANDB_API_KEY or run `wandb login`; "
                               f"{len(pending)} offline run(s) of {study} stay on disk")
        baseline.check_reachable()
    report = sync.sync(items, dry_run=dry_run, project=project, entity=entity, timeout=timeout)
    rows = _rows(report)
    if json_out:
        emit_json(rows)
    else:
        typer.echo(render_rows(rows))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    say(f"study {study}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + (" (--dry-run: nothing uploaded)" if dry_run else ""))
    if counts.get("failed"):
        raise typer.Exit(1)


def _rows(report: SyncReport) -> list[dict[str, Any]]:
    return [{"step": i.step, "seed": i.seed, "attempt": i.attempt_no,
             "attempt_id": i.attempt_id, "run_id": i.run_id,
             "status": report.status.get(i.run_dir, "?"), "run_dir": str(i.run_dir)}
            for i in report.items]


def render_rows(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the sync rows."""
    head = ("step", "seed", "att", "run id", "status", "directory")
    cells = [(str(r["step"]), str(r["seed"]), str(r["attempt"]), str(r["run_id"]),
              str(r["status"]), _short(r["run_dir"])) for r in rows]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in [head, *cells])


def _short(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path
