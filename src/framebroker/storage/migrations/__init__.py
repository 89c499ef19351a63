"""The schema's history as Alembic revisions, run from code on a connection framebroker opens.

``versions/`` holds one module per revision: ``0001`` and ``0002`` are the schema versions 1
and 2 of framebroker before Alembic, ``0003`` adds owners and face crops. A database made
before Alembic has a ``schema_version`` table and no ``alembic_version``: it is read as the
revision of its version, and stamped with it before it is upgraded.

Adding a revision: copy the newest module in ``versions/``, give it the next number as
``revision`` and the newest as ``down_revision``, write ``upgrade`` and ``downgrade``, change
:mod:`..schema` to match, and run ``tests/storage/test_migrations.py`` (it checks that the
migrated schema equals :mod:`..schema` on SQLite and PostgreSQL).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select

from ..schema import schema_version

__all__ = ["LEGACY_REVISIONS", "SchemaState", "head", "schema_state", "upgrade"]

HERE: Final = Path(__file__).resolve().parent

LEGACY_REVISIONS: Final = {1: "0001", 2: "0002"}
"""The revision each ``schema_version`` of framebroker before Alembic corresponds to."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this framebroker knows."""
    found = _scripts().get_current_head()
    assert found is not None, "no migrations shipped"
    return found


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a database stands: ``revision`` is ``None`` for an empty database; ``legacy``
    is the ``schema_version`` of a database made before Alembic (not stamped yet)."""

    revision: str | None
    legacy: int | None = None

    @property
    def status(self) -> Literal["empty", "current", "older", "newer"]:
        if self.revision is None and self.legacy is None:
            return "empty"
        if self.revision == head():
            return "current"
        if self.revision is not None and _known(self.revision):
            return "older"
        return "newer"

    def describe(self) -> str:
        """One line, e.g. ``0002 (schema version 2, from before Alembic)``."""
        if self.revision is None and self.legacy is None:
            return "empty"
        if self.legacy is not None:
            shown = self.revision or "unknown"
            return f"{shown} (schema version {self.legacy}, from before Alembic)"
        return str(self.revision)


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an id it has never seen
        return False


def schema_state(conn: Connection) -> SchemaState:
    """Read which revision the database at ``conn`` is at; changes nothing."""
    found = MigrationContext.configure(conn).get_current_revision()
    if found is not None:
        return SchemaState(found)
    if not inspect(conn).has_table(schema_version.name):
        return SchemaState(None)
    version = conn.execute(
        select(schema_version.c.version).where(schema_version.c.id == 1)
    ).scalar_one_or_none()
    if version is None:
        return SchemaState(None)
    return SchemaState(LEGACY_REVISIONS.get(int(version)), legacy=int(version))


def upgrade(conn: Connection, target: str = "head") -> None:
    """Run every revision from where the database stands up to ``target``, on ``conn`` (in
    the caller's transaction). A database from before Alembic is stamped with its version's
    revision first. Raises ``ValueError`` for a database newer than this code."""
    state = schema_state(conn)
    if state.status == "newer":
        raise ValueError(f"database is at {state.describe()}, newer than {head()}")
    config = _config(conn)
    if state.legacy is not None:
        assert state.revision is not None
        command.stamp(config, state.revision)
    command.upgrade(config, target)
    logging.getLogger(__name__).debug("database upgraded from %s", state.describe())
