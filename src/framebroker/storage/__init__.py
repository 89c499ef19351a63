"""Persistent storage behind the core's ``Store`` protocol; the only package that speaks SQL."""

from __future__ import annotations

from .face_files import FaceFolder

# people registers its tables on the shared metadata before any store creates the schema.
from .people import PeopleRecords, face_filename
from .sqlstore import SCHEMA_VERSION, SQLStore

__all__ = [
    "SCHEMA_VERSION",
    "FaceFolder",
    "PeopleRecords",
    "SQLStore",
    "face_filename",
    "open_store",
]


def open_store(url: str) -> SQLStore:
    """Open the store at the SQLAlchemy ``url`` (``sqlite:///path``, ``postgresql://...``).

    The schema is created or migrated on open. Raises :class:`~framebroker.errors.ConfigError`
    when the database was written by a newer framebroker.
    """
    return SQLStore(url)
