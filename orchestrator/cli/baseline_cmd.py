"""`recip baseline import REF --into STUDY [--step NAME]` and `recip baseline ls STUDY`.

REF is `ENTITY/PROJECT/RUN_ID` (through `wandb.Api()`, full `scan_history`) or a local W&B
run directory (offline use). The run is stored once, as step NAME of the study; `recip
report STUDY` then compares the spec's root steps against it and lists what makes the
comparison unfair (model size, budget, effective batch, tokens, data, devices, commits).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli.common import DbOption, JsonOption, db_url, emit_json, say
from orchestrator.core.errors import SpecError

app = typer.Typer(help="Import a W&B run as a baseline of a study, once.", no_args_is_help=True)


@app.command("import")
def import_cmd(
    ref: Annotated[str, typer.Argument(
        help="ENTITY/PROJECT/RUN_ID on W&B, or a local W&B run directory.", show_default=False)],
    into: Annotated[str, typer.Option("--into", help="Study to add the baseline to.",
                                      show_default=False)],
    step: Annotated[str, typer.Option("--step", help="Step name of the baseline.")] = "baseline",
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seed to file it under (default: the run's config seed, else 0).",
        show_default=False)] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Store a W&B run (config, summary, every history row) as an imported step of a study."""
    from orchestrator.core.spec import NAME_FIX, NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, step):
        raise SpecError(f"--step {step!r}: {NAME_FIX}")
    from orchestrator.queue.imports import import_run
    from orchestrator.queue.repo import QueueRepo
    from orchestrator.report.analysis import analyze
    from orchestrator.tracking import baseline
    from orchestrator.tracking.runfile import read_offline_run

    local = Path(ref).expanduser()
    with QueueRepo.open(db_url(db)) as repo:
        repo.study_results(into)  # UnknownStudy before any network
        if local.exists():
            tracked = read_offline_run(local)
        else:
            say(f"fetching {ref} from W&B (full history)")
            tracked = baseline.fetch_api_run(ref)
        imported = baseline.to_imported(tracked, seed=seed)
        outcome = import_run(repo, into, step, imported, datetime.now(UTC))
        results = repo.study_results(into)
    rep = analyze(results)
    checks = [c for c in rep.comparisons if c.kind == "baseline" and c.b == outcome.step]
    data: dict[str, Any] = {
        "study": into, "step": outcome.step, "seed": outcome.seed, "ref": imported.ref,
        "identity": imported.identity, "created": outcome.created, "metrics": outcome.metrics,
        "superseded": outcome.superseded, "run_id": outcome.run_id,
        "attempt_id": outcome.attempt_id,
        "result": {k: imported.result.get(k) for k in (
            "best_val_loss", "final_val_loss", "iters", "tokens", "train_s",
            "effective_batch_tokens")},
        "comparability": [{"comparison": c.label, "confounders": list(c.confounders),
                           "verdict": c.verdict} for c in checks],
    }
    if json_out:
        emit_json(data)
    else:
        typer.echo(_render(data))
    if outcome.created:
        say(f"imported {imported.ref} into {into} as step {outcome.step} (seed {outcome.seed}, "
            f"{outcome.metrics:,} metric rows"
            + (f", superseding {outcome.superseded} earlier import" if outcome.superseded else "")
            + ")")
    else:
        say(f"{imported.identity} is already in {into} as step {outcome.step}: nothing added")


@app.command("ls")
def ls_cmd(
    study: Annotated[str, typer.Argument(help="Study name.", show_default=False)],
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """List the imported baselines of a study."""
    from orchestrator.core.imported import IMPORTED_KEY
    from orchestrator.queue.repo import QueueRepo

    with QueueRepo.open(db_url(db)) as repo:
        results = repo.study_results(study)
    rows = []
    for a in results.attempts:
        info = a.config.get(IMPORTED_KEY)
        if isinstance(info, dict):
            rows.append({"step": a.step, "seed": a.seed, "ref": info.get("ref"),
                         "identity": info.get("identity"), "source": info.get("source"),
                         "best_val_loss": a.result.get("best_val_loss"),
                         "iters": a.result.get("iters"), "tokens": a.result.get("tokens")})
    if json_out:
        emit_json(rows)
    elif rows:
        typer.echo(_table(("step", "seed", "best_val_loss", "iters", "ref"),
                          [(str(r["step"]), str(r["seed"]), _num(r["best_val_loss"]),
                            _num(r["iters"]), str(r["ref"])) for r in rows]))
    say(f"{len(rows)} imported baseline(s) in {study}")


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "–" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [head, *rows])


def _render(data: dict[str, Any]) -> str:
    res = data["result"]
    lines = [_table(("step", "seed", "best_val_loss", "iters", "tokens", "eff. batch", "ref"),
                    [(str(data["step"]), str(data["seed"]), _num(res["best_val_loss"]),
                      _num(res["iters"]), _num(res["tokens"]),
                      _num(res["effective_batch_tokens"]), str(data["ref"]))])]
    for c in data["comparability"]:
        if c["confounders"]:
            lines.append(f"{c['comparison']}: not comparable as is:")
            lines += [f"  - {x}" for x in c["confounders"]]
        else:
            lines.append(f"{c['comparison']}: comparable (same model size, budget, batch, data)")
    return "\n".join(lines)
