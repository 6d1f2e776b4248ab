"""Shared CLI plumbing: the --db option, the override options of `queue submit` and `run`
(declared once here), URL redaction, stderr narration, JSON output."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer

from orchestrator.queue.redact import redact_text
from orchestrator.queue.redact import redact_url as redact_url  # re-exported for the commands

DEFAULT_DB_URL = "sqlite:///recip.db"

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (sqlite:///path.db or postgresql+psycopg://user@host/db). "
        f"Default: $RECIP_DB_URL, else {DEFAULT_DB_URL}.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override one config value for every step, e.g. --set train.eval_batches=4 "
        "(repeatable; SECTION is model, data, train or optimizer; part of each run's identity).",
        show_default=False,
    ),
]

StepsOption = Annotated[str | None, typer.Option(
    "--steps", help="Only these steps, comma-separated (e.g. V1,V3).", show_default=False)]
NoCheckOption = Annotated[bool, typer.Option(
    "--no-check", help="Skip the CPU dry-run of every step's model and the dataset checks.")]
PresetOption = Annotated[str | None, typer.Option(
    "--preset", help="Model size preset for every step (replaces the spec's sizes and applies "
    "the preset's run-scale train settings: batch, grad_accum, evals).", show_default=False)]
DatasetOption = Annotated[str | None, typer.Option(
    "--dataset", help="Dataset for every step (kjv, text:PATH, hf:NAME).", show_default=False)]
TokenizerOption = Annotated[str | None, typer.Option(
    "--tokenizer", help="Tokenizer for every step (gpt2 or byte).", show_default=False)]
TimeOption = Annotated[float | None, typer.Option(
    "--time", help="Training budget in seconds for every step (replaces the spec's budget).",
    show_default=False)]
MaxItersOption = Annotated[int | None, typer.Option(
    "--max-iters", help="Iteration budget for every step (replaces the spec's budget).",
    show_default=False)]
SeedsOption = Annotated[str | None, typer.Option(
    "--seeds", help="Seeds for every step, comma-separated (e.g. 1,2).", show_default=False)]


def complete_study(incomplete: str) -> list[str]:
    """Shell completion of a study name from the default database ($RECIP_DB_URL or the
    embedded SQLite file); nothing when that database cannot be read."""
    from orchestrator.queue.db import parse_url, sqlite_path

    url = db_url(None)
    try:
        parsed = parse_url(url)
        if parsed.get_backend_name() == "sqlite" and not sqlite_path(parsed).exists():
            return []  # never create the database from a <TAB>
        from orchestrator.queue.repo import QueueRepo

        with QueueRepo.open(url) as repo:
            names = repo.study_names()
    except Exception:  # noqa: BLE001 - completion must never print a traceback into the shell
        return []
    return [n for n in names if n.startswith(incomplete)]


StudyArgument = Annotated[str, typer.Argument(
    help="Study name (see `recip queue ls`).", show_default=False, autocompletion=complete_study)]


def db_url(given: str | None) -> str:
    """The database URL from --db, else $RECIP_DB_URL, else the embedded SQLite default."""
    return given or os.environ.get("RECIP_DB_URL") or DEFAULT_DB_URL


def redact(text: str) -> str:
    """Hide credentials in any URL inside `text` (orchestrator.queue.redact)."""
    return redact_text(text)


def say(message: str) -> None:
    """Narration for humans: stderr, so stdout stays data."""
    typer.echo(redact(message), err=True)


def emit_json(data: Any) -> None:
    """Data on stdout as JSON, keys sorted: indented on a terminal, one compact line into a
    pipe or file (json's C encoder only runs without `indent`: 3x faster at 1,000 runs, and
    what `jq` reads anyway)."""
    if sys.stdout.isatty():
        text = json.dumps(data, indent=2, sort_keys=True, default=str)
    else:
        text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    sys.stdout.write(text + "\n")


def split_csv(value: str | None) -> list[str] | None:
    """'V1,V3' -> ['V1', 'V3']; None stays None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]
