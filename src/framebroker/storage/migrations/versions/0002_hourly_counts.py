"""Schema version 2: the people counter's crossings per hour of each day, for the console's
chart.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "hourly_counts",
        sa.Column("source", sa.String(255), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("hour", sa.Integer, primary_key=True),
        sa.Column("line", sa.String(255), primary_key=True),
        sa.Column("count_in", sa.Integer, nullable=False),
        sa.Column("count_out", sa.Integer, nullable=False),
    )
    op.execute("UPDATE schema_version SET version = 2 WHERE id = 1")


def downgrade() -> None:
    op.drop_table("hourly_counts")
    op.execute("UPDATE schema_version SET version = 1 WHERE id = 1")
