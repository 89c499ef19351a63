"""A database as framebroker wrote it at schema version 1, before Alembic: the DDL its
``metadata.create_all`` emitted on each database (hourly_counts came with version 2), and a
few rows."""

from __future__ import annotations

from sqlalchemy import Engine, text

_TABLES = {
    "schema_version": """(
        id INTEGER NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (id),
        CONSTRAINT schema_version_single_row CHECK (id = 1))""",
    "sessions": """(
        id VARCHAR(255) NOT NULL, transport VARCHAR(64) NOT NULL, pipeline JSON NOT NULL,
        state VARCHAR(16) NOT NULL, created_at {double} NOT NULL, ended_at {double},
        info JSON NOT NULL, summary JSON, PRIMARY KEY (id),
        CONSTRAINT sessions_state CHECK (state IN ('active', 'ended')))""",
    "session_snapshots": """(
        session_id VARCHAR(255) NOT NULL, snapshot JSON NOT NULL,
        updated_at {double} NOT NULL, PRIMARY KEY (session_id))""",
    "faces": """(
        face_id {serial} NOT NULL, source VARCHAR(255) NOT NULL, track_id INTEGER NOT NULL,
        filename VARCHAR(64) NOT NULL, day VARCHAR(10) NOT NULL, created_at {double} NOT NULL,
        updated_at {double} NOT NULL, quality {double} NOT NULL, score {double} NOT NULL,
        PRIMARY KEY (face_id))""",
    "daily_counts": """(
        source VARCHAR(255) NOT NULL, day VARCHAR(10) NOT NULL, line VARCHAR(255) NOT NULL,
        count_in INTEGER NOT NULL, count_out INTEGER NOT NULL, updated_at {double} NOT NULL,
        PRIMARY KEY (source, day, line))""",
    "traffic_events": """(
        id {serial} NOT NULL, source VARCHAR(255) NOT NULL, day VARCHAR(10) NOT NULL,
        started_at {double} NOT NULL, ended_at {double}, start_time VARCHAR(8) NOT NULL,
        end_time VARCHAR(8), count_in INTEGER, PRIMARY KEY (id))""",
}
_INDEXES = [
    "CREATE INDEX ix_faces_created ON faces (created_at)",
    "CREATE INDEX ix_faces_day ON faces (day)",
    "CREATE INDEX ix_sessions_state ON sessions (state)",
    "CREATE INDEX ix_sessions_created_at ON sessions (created_at)",
    "CREATE INDEX ix_traffic_events_day ON traffic_events (source, day)",
]
_ROWS = [
    "INSERT INTO schema_version (id, version) VALUES (1, 1)",
    """INSERT INTO sessions (id, transport, pipeline, state, created_at, ended_at, info, summary)
       VALUES ('done', 'rest', '["bytetrack"]', 'ended', 1.0, 2.0, '{"id": "done"}',
               '{"id": "done", "reason": "deleted"}')""",
    """INSERT INTO sessions (id, transport, pipeline, state, created_at, info)
       VALUES ('cut', 'rest', '["bytetrack"]', 'active', 3.0,
               '{"id": "cut", "stats": {"frames_in": 4}}')""",
    """INSERT INTO faces (source, track_id, filename, day, created_at, updated_at, quality,
       score) VALUES ('cam', 7, 'face_1.jpg', '2026-11-21', 5.0, 5.0, 1.0, 0.9)""",
    """INSERT INTO daily_counts VALUES ('cam', '2026-11-21', 'door', 12, 3, 6.0)""",
    """INSERT INTO traffic_events (source, day, started_at, start_time)
       VALUES ('cam', '2026-11-21', 7.0, '09:00:00')""",
]


def write_version_1(engine: Engine, *, version: int = 1) -> None:
    """Make the version-1 schema, with its rows, in the empty database of ``engine``;
    ``version`` 2 adds hourly_counts as version 2 did."""
    postgres = engine.dialect.name == "postgresql"
    words = {"double": "DOUBLE PRECISION" if postgres else "DOUBLE",
             "serial": "SERIAL" if postgres else "INTEGER"}  # fmt: skip
    with engine.begin() as conn:
        for name, columns in _TABLES.items():
            conn.execute(text(f"CREATE TABLE {name} {columns.format(**words)}"))
        for index in _INDEXES:
            conn.execute(text(index))
        for row in _ROWS:
            conn.execute(text(row))
        if version >= 2:
            conn.execute(
                text(
                    "CREATE TABLE hourly_counts (source VARCHAR(255) NOT NULL, "
                    "day VARCHAR(10) NOT NULL, hour INTEGER NOT NULL, line VARCHAR(255) NOT NULL,"
                    " count_in INTEGER NOT NULL, count_out INTEGER NOT NULL, "
                    "PRIMARY KEY (source, day, hour, line))"
                )
            )
            conn.execute(text("UPDATE schema_version SET version = 2"))
