"""Alembic environment: batch mode, our own version table, a connection handed in.

`orchestrator.queue.migrate` opens the connection (under its lock) and passes it in
`config.attributes["connection"]`; `target_metadata` is passed the same way only for
autogenerate, so revisions never depend on the live schema module.
"""

from __future__ import annotations

from alembic import context

from orchestrator.queue.db import make_engine
from orchestrator.queue.migrate import VERSION_TABLE

config = context.config


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=config.attributes.get("target_metadata"),
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
