"""Alembic's entry point: runs the migrations on the connection framebroker hands it.

framebroker has no ``alembic.ini``: :mod:`framebroker.storage.migrations` builds the
configuration in code and passes its open connection (inside its transaction, and on
PostgreSQL under an advisory lock) as ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from framebroker.storage.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "framebroker's migrations run on a connection it provides: use `framebroker db upgrade`"
    )
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
