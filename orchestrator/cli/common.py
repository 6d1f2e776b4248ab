"""Shared CLI plumbing: the --db option, URL redaction, stderr narration, JSON output."""

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
    """Data on stdout as JSON."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def split_csv(value: str | None) -> list[str] | None:
    """'V1,V3' -> ['V1', 'V3']; None stays None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]
