"""The schema framebroker wrote before Alembic as version 1: sessions and their snapshots,
the people counter's faces, daily counts and traffic events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    version = op.create_table(
        "schema_version",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.CheckConstraint("id = 1", name="schema_version_single_row"),
    )
    op.bulk_insert(version, [{"id": 1, "version": 1}])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("transport", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("ended_at", sa.Double, nullable=True),
        sa.Column("info", sa.JSON, nullable=False),
        sa.Column("summary", sa.JSON(none_as_null=True), nullable=True),
        sa.CheckConstraint("state IN ('active', 'ended')", name="sessions_state"),
    )
    op.create_index("ix_sessions_created_at", "sessions", ["created_at"])
    op.create_index("ix_sessions_state", "sessions", ["state"])
    op.create_table(
        "session_snapshots",
        sa.Column("session_id", sa.String(255), primary_key=True),
        sa.Column("snapshot", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "faces",
        sa.Column("face_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("track_id", sa.Integer, nullable=False),
        sa.Column("filename", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("quality", sa.Double, nullable=False),
        sa.Column("score", sa.Double, nullable=False),
    )
    op.create_index("ix_faces_day", "faces", ["day"])
    op.create_index("ix_faces_created", "faces", ["created_at"])
    op.create_table(
        "daily_counts",
        sa.Column("source", sa.String(255), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("line", sa.String(255), primary_key=True),
        sa.Column("count_in", sa.Integer, nullable=False),
        sa.Column("count_out", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "traffic_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("ended_at", sa.Double, nullable=True),
        sa.Column("start_time", sa.String(8), nullable=False),
        sa.Column("end_time", sa.String(8), nullable=True),
        sa.Column("count_in", sa.Integer, nullable=True),
    )
    op.create_index("ix_traffic_events_day", "traffic_events", ["source", "day"])


def downgrade() -> None:
    for table in (
        "traffic_events",
        "daily_counts",
        "faces",
        "session_snapshots",
        "sessions",
        "schema_version",
    ):
        op.drop_table(table)
