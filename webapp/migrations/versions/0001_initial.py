"""The schema as it was before migrations: images and settings (the session key).

A data folder from before migrations already has both tables (created at startup by
`CREATE TABLE IF NOT EXISTS`); they are kept as they are, and only missing ones are created.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "images" not in existing:
        op.create_table(
            "images",
            sa.Column(
                "seq",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                primary_key=True,
                nullable=True,  # as before migrations (NOT NULL all the same, as a key)
            ),
            sa.Column("id", sa.Text, nullable=False, unique=True),
            sa.Column("width", sa.Integer, nullable=False),
            sa.Column("height", sa.Integer, nullable=False),
            sa.Column("uploaded_bytes", sa.Integer, nullable=False),
            sa.Column("latent_bytes", sa.Integer, nullable=False),
            sa.Column("created_at", sa.Double().with_variant(sa.REAL(), "sqlite"), nullable=False),
            sa.Column("method", sa.Text, nullable=False),
            sa.Column("delete_key_hash", sa.LargeBinary, nullable=False),
            sqlite_autoincrement=True,
        )
    if "settings" not in existing:
        op.create_table(
            "settings",
            sa.Column("name", sa.Text, primary_key=True, nullable=True),
            sa.Column("value", sa.Text, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("settings")
    op.drop_table("images")
