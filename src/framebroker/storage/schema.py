"""Every table framebroker keeps, as the newest migration leaves them.

The migrations (:mod:`.migrations`) make and change the schema; these definitions are what
the code reads and writes, and a test checks that a database migrated to the newest revision
has exactly these tables, columns and indexes, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)

__all__ = [
    "ACTIVE",
    "ENDED",
    "daily_counts",
    "face_crops",
    "faces",
    "hourly_counts",
    "metadata",
    "owners",
    "schema_version",
    "session_snapshots",
    "sessions",
    "source_fences",
    "traffic_events",
]

ACTIVE: Final = "active"
ENDED: Final = "ended"

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    # framebroker before Alembic read its schema's version here, and refuses a newer one: the
    # migrations keep it in step so that an older framebroker never writes to a newer schema.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
    CheckConstraint("id = 1", name="schema_version_single_row"),
)

owners = Table(
    "owners",
    metadata,
    # One row per server process identity; each start takes the next epoch (core/store.py).
    Column("id", String(255), primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("started_at", Double, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("transport", String(64), nullable=False),
    Column("pipeline", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("ended_at", Double, nullable=True),
    Column("info", JSON, nullable=False),
    # none_as_null: an active session has no summary, stored as SQL NULL, not JSON "null".
    Column("summary", JSON(none_as_null=True), nullable=True),
    # Who runs it (NULL: recorded before sessions had owners, or by a store never begun).
    Column("owner", String(255), nullable=True),
    Column("epoch", Integer, nullable=True),
    CheckConstraint(f"state IN ('{ACTIVE}', '{ENDED}')", name="sessions_state"),
    Index("ix_sessions_created_at", "created_at"),
    Index("ix_sessions_state", "state"),
)

session_snapshots = Table(
    "session_snapshots",
    metadata,
    # No foreign key to ``sessions``: a snapshot may be saved before the background write of
    # the session's start has landed.
    Column("session_id", String(255), primary_key=True),
    Column("snapshot", JSON, nullable=False),
    Column("updated_at", Double, nullable=False),
)

faces = Table(
    "faces",
    metadata,
    Column("face_id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(255), nullable=False),
    Column("track_id", Integer, nullable=False),
    Column("filename", String(64), nullable=False),
    Column("day", String(10), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("quality", Double, nullable=False),
    Column("score", Double, nullable=False),
    Index("ix_faces_day", "day"),
    Index("ix_faces_created", "created_at"),
)

face_crops = Table(
    "face_crops",
    metadata,
    # Crops kept in the database (any database but SQLite): a crop goes with its face's row.
    Column(
        "face_id",
        Integer,
        ForeignKey("faces.face_id", ondelete="CASCADE", name="face_crops_face_id_fkey"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("jpeg", LargeBinary, nullable=False),
)

daily_counts = Table(
    "daily_counts",
    metadata,
    Column("source", String(255), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("line", String(255), primary_key=True),
    Column("count_in", Integer, nullable=False),
    Column("count_out", Integer, nullable=False),
    Column("updated_at", Double, nullable=False),
)

hourly_counts = Table(
    "hourly_counts",
    metadata,
    Column("source", String(255), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("hour", Integer, primary_key=True),  # 0..23, local time of the source's zone
    Column("line", String(255), primary_key=True),
    Column("count_in", Integer, nullable=False),
    Column("count_out", Integer, nullable=False),
)

source_fences = Table(
    "source_fences",
    metadata,
    # Each start of a source takes the next fence; its counts are saved under it, and a save
    # under an older one (a holder the source was taken from) is refused.
    Column("source", String(255), primary_key=True),
    Column("fence", Integer, nullable=False),
    Column("claimed_at", Double, nullable=False),
)

traffic_events = Table(
    "traffic_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(255), nullable=False),
    Column("day", String(10), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("ended_at", Double, nullable=True),
    Column("start_time", String(8), nullable=False),
    Column("end_time", String(8), nullable=True),
    Column("count_in", Integer, nullable=True),
    Index("ix_traffic_events_day", "source", "day"),
)
