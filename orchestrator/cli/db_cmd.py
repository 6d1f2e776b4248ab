"""`recip db upgrade | current | downgrade`: the schema of the queue database.

`recip db upgrade` is the only migrator: other commands refuse a database that is not at
the code's head revision and name this command.
"""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.common import DbOption, JsonOption, db_url, emit_json, say

app = typer.Typer(help="Create, migrate and inspect the queue database schema.",
                  no_args_is_help=True)


@app.command("upgrade")
def upgrade(
    db: DbOption = None,
    revision: Annotated[str, typer.Option("--revision", help="Target revision.")] = "head",
) -> None:
    """Create the database schema, or migrate it to the newest revision."""
    from orchestrator.queue import migrate
    from orchestrator.queue.db import redact_url

    url = db_url(db)
    migrate.refuse_foreign_sqlite(url)  # before anything opens (and WAL-converts) the file
    before = migrate.current(url)
    migrate.upgrade(url, revision)
    after = migrate.current(url)
    if before == after:
        say(f"{redact_url(url)}: schema already at {after}")
    else:
        say(f"{redact_url(url)}: schema {before or 'none'} -> {after}")


@app.command("current")
def current(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Print the database's schema revision ('none' for an empty database)."""
    from orchestrator.queue import migrate
    from orchestrator.queue.db import redact_url

    url = db_url(db)
    rev = migrate.current(url)
    head = migrate.head()
    if as_json:
        emit_json({"db": redact_url(url), "current": rev, "head": head,
                   "up_to_date": rev == head})
        return
    typer.echo(rev or "none")
    if rev == head:
        say(f"{redact_url(url)}: up to date (head {head})")
    elif rev is None or rev in migrate.known_revisions():
        say(f"{redact_url(url)}: behind head {head}: run `recip db upgrade --db {redact_url(url)}`")
    else:
        say(f"{redact_url(url)}: revision {rev} is newer than this recip (head {head}): "
            "upgrade recip")


@app.command("downgrade")
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; `base` drops every table.")],
    db: DbOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: a downgrade deletes data.")] = False,
) -> None:
    """Migrate the schema down to REVISION (data in dropped tables and columns is lost)."""
    from orchestrator.core.errors import QueueError
    from orchestrator.queue import migrate
    from orchestrator.queue.db import redact_url

    url = db_url(db)
    if not yes:
        raise QueueError(f"downgrading {redact_url(url)} to {revision} deletes data: "
                         "pass --yes to confirm")
    before = migrate.current(url)
    migrate.downgrade(url, revision)
    say(f"{redact_url(url)}: schema {before or 'none'} -> {migrate.current(url) or 'none'}")
