"""The size of an image's display latent, the second, smaller latent file a large image keeps.

Rows from before keep NULL: they have none, and their display renders come from the full latent.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as table:
        table.add_column(sa.Column("display_bytes", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as table:
        table.drop_column("display_bytes")
