"""Persistent storage behind the ``Store``, ``PeopleRecords`` and ``FaceCrops`` protocols; the
only package that speaks SQL.

- :mod:`.sqlstore`: sessions (SQLite or PostgreSQL), their owners, and the database's health;
- :mod:`.people`: the people counter's counts, events and face index;
- :mod:`.face_files` / :mod:`.face_db`: face crops as files beside SQLite, or as rows of any
  other database (which several nodes share);
- :mod:`.schema` and :mod:`.migrations`: the tables, and the Alembic revisions that make them.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc

from ..errors import StoreUnavailable
from ..people.records import FaceCrops
from .face_db import SQLFaceCrops
from .face_files import FaceFolder
from .migrations import SchemaState, head, schema_state
from .people import SQLPeopleRecords, face_filename
from .sqlstore import PoolLimits, SQLStore, database_url

__all__ = [
    "FaceFolder",
    "PoolLimits",
    "SQLFaceCrops",
    "SQLPeopleRecords",
    "SQLStore",
    "SchemaState",
    "database_url",
    "face_crops_for",
    "face_filename",
    "head",
    "inspect_database",
    "open_store",
    "upgrade_database",
]


def open_store(url: str, *, migrate: bool = False, pool: PoolLimits | None = None) -> SQLStore:
    """Open the store at the SQLAlchemy ``url`` (``sqlite:///path``, ``postgresql://...``).

    An empty database gets the whole schema; an older one is upgraded only with ``migrate``.
    Raises :class:`~framebroker.errors.ConfigError` when the database is older (without
    ``migrate``) or newer than this framebroker, and
    :class:`~framebroker.errors.StoreUnavailable` when it cannot be reached.
    """
    return SQLStore(url, migrate=migrate, pool=pool)


def face_crops_for(store: SQLStore, faces_dir: Path) -> FaceCrops:
    """Where the store's face crops live: files in ``faces_dir`` beside a SQLite database
    (one machine), rows of the database otherwise (every node reads them)."""
    if store.dialect == "sqlite":
        return FaceFolder(faces_dir)
    return SQLFaceCrops(store)


def inspect_database(url: str) -> SchemaState:
    """Which revision the database at ``url`` is at, changing nothing (``db current``).

    Raises :class:`~framebroker.errors.StoreUnavailable` when it cannot be reached.
    """
    parsed = database_url(url)
    database = parsed.database or ""
    on_file = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if on_file and not Path(database).expanduser().exists():
        return SchemaState(None)  # connecting would make the file
    engine = create_engine(parsed)
    try:
        with engine.connect() as conn:
            return schema_state(conn)
    except sa_exc.OperationalError as exc:
        shown = parsed.render_as_string(hide_password=True)
        why = (str(exc.orig).strip().splitlines() or ["?"])[0]
        raise StoreUnavailable(f"cannot reach database {shown}: {why}") from None
    finally:
        engine.dispose()


def upgrade_database(url: str) -> tuple[SchemaState, str]:
    """Bring the database at ``url`` to the newest revision (``db upgrade``); returns where
    it stood and where it stands now. Raises ``ConfigError`` for a newer database."""
    before = inspect_database(url)
    SQLStore(url, migrate=True).close()
    return before, head()
