"""A source's counts are fenced: each start of a ``--source`` takes the next fence of that
source, and a save of its counts under an older fence is refused. In a cluster the node that
took a source over therefore cannot have its counts overwritten by the holder it replaced, a
node cut off from Redis that was still committing when the lease ran out.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "source_fences",
        sa.Column("source", sa.String(255), primary_key=True),
        sa.Column("fence", sa.Integer, nullable=False),
        sa.Column("claimed_at", sa.Double, nullable=False),
    )
    op.execute("UPDATE schema_version SET version = 4 WHERE id = 1")


def downgrade() -> None:
    op.drop_table("source_fences")
    op.execute("UPDATE schema_version SET version = 3 WHERE id = 1")
