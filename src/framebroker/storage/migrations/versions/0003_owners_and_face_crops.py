"""Sessions get an owner and an epoch, so that recovery ends only the sessions of an owner that
is gone; face crops may live in the database, so that every node of a cluster reads them.

Sessions recorded before this revision have no owner: the next start of any server ends those
left active (their process is gone: framebroker refuses to run on a newer schema).
``schema_version`` goes to 3 so that a framebroker from before Alembic refuses this database.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
    )
    op.add_column("sessions", sa.Column("owner", sa.String(255), nullable=True))
    op.add_column("sessions", sa.Column("epoch", sa.Integer, nullable=True))
    op.create_table(
        "face_crops",
        sa.Column(
            "face_id",
            sa.Integer,
            sa.ForeignKey("faces.face_id", ondelete="CASCADE", name="face_crops_face_id_fkey"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("jpeg", sa.LargeBinary, nullable=False),
    )
    op.execute("UPDATE schema_version SET version = 3 WHERE id = 1")


def downgrade() -> None:
    op.drop_table("face_crops")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("epoch")
        batch.drop_column("owner")
    op.drop_table("owners")
    op.execute("UPDATE schema_version SET version = 2 WHERE id = 1")
