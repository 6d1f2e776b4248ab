"""`recip queue ...` (under construction in this commit)."""

from __future__ import annotations

import typer

app = typer.Typer(help="queue commands.", no_args_is_help=True)
