"""The size an image was uploaded at, before `LATENT_GALLERY_MAX_SIDE` scaled it down.

Rows from before keep NULL: they were stored at the size they were uploaded at.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as table:
        table.add_column(sa.Column("source_width", sa.Integer, nullable=True))
        table.add_column(sa.Column("source_height", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as table:
        table.drop_column("source_height")
        table.drop_column("source_width")
