"""Alembic migrations of the queue schema: one tree for SQLite and PostgreSQL.

Run them with `recip db upgrade` (orchestrator.queue.migrate builds the Alembic config;
no alembic.ini). Revisions never import orchestrator.queue.schema.
"""
