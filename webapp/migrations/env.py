"""Alembic environment: migrations run on the connection `MetadataStore.upgrade` passes in."""

from alembic import context

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
