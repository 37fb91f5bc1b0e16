"""Image metadata on SQLAlchemy Core: one code path for SQLite and PostgreSQL (psycopg 3).

The schema belongs to the Alembic migrations in `webapp/migrations/` (`latent-gallery db
upgrade`); the tables below only describe it for queries. Rows hold what a page needs and the
delete key's hash; the `settings` table holds the shared session key. Write transactions on
SQLite take the write lock when they begin (`BEGIN IMMEDIATE`), as PostgreSQL's row locks do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from codec.measures import bits_per_pixel

from .blobs import StorageFullError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DISK_FULL_SQLSTATE = "53100"
MIGRATION_LOCK = 0x6C67_6D69  # PostgreSQL advisory lock key of `upgrade` ("lgmi")

schema = sa.MetaData()
images = sa.Table(
    "images",
    schema,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("id", sa.Text, nullable=False, unique=True),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("uploaded_bytes", sa.Integer, nullable=False),
    sa.Column("latent_bytes", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double().with_variant(sa.REAL(), "sqlite"), nullable=False),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("delete_key_hash", sa.LargeBinary, nullable=False),
    sa.Column("source_width", sa.Integer, nullable=True),
    sa.Column("source_height", sa.Integer, nullable=True),
    sa.Column("display_bytes", sa.Integer, nullable=True),
    sqlite_autoincrement=True,
)
settings = sa.Table(
    "settings",
    schema,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class ImageRecord:
    """One stored image's metadata."""

    id: str
    width: int
    height: int
    uploaded_bytes: int
    latent_bytes: int
    created_at: float
    method: str
    source_width: int | None = None
    source_height: int | None = None
    """The size it was uploaded at, when it was stored smaller (`MAX_SIDE`); else None."""
    display_bytes: int | None = None
    """The size of its display latent (large images keep one beside the full latent)."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as stored."""
        return self.width, self.height

    @property
    def source_size(self) -> tuple[int, int]:
        """(width, height) as uploaded."""
        return (self.source_width or self.width), (self.source_height or self.height)

    @property
    def stored_bytes(self) -> int:
        """Bytes kept for the image: its latent and its display latent."""
        return self.latent_bytes + (self.display_bytes or 0)

    @property
    def bits_per_pixel(self) -> float:
        """Stored bits per pixel of the image."""
        return bits_per_pixel(self.stored_bytes, self.width, self.height)

    @property
    def ratio(self) -> float:
        """How many times smaller what is stored is than the upload."""
        return self.uploaded_bytes / self.stored_bytes


_RECORD_COLUMNS = [images.c[f.name] for f in fields(ImageRecord)]


def engine_url(url: str) -> str:
    """A `LATENT_GALLERY_DATABASE_URL` as SQLAlchemy wants it: `postgresql://` (and
    `postgres://`) go through psycopg 3."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


class MetadataStore:
    """The images and settings tables of one database."""

    def __init__(self, url: str) -> None:
        try:
            self.url = sa.make_url(engine_url(url))
        except sa.exc.ArgumentError:
            raise ValueError(f"LATENT_GALLERY_DATABASE_URL={url!r} is not a database URL") from None
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(
                self.url, connect_args={"timeout": 10, "check_same_thread": False}
            )
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        elif self.url.get_backend_name() == "postgresql":
            self.engine = sa.create_engine(self.url, pool_pre_ping=True)
        else:
            raise ValueError(
                f"LATENT_GALLERY_DATABASE_URL: {self.url.get_backend_name()!r} is not supported "
                "(sqlite:///path or postgresql://user:password@host/database)"
            )

    # Schema

    def upgrade(self) -> None:
        """Run the Alembic migrations up to the newest (a SQLite file is kept mode 0600).
        Nodes upgrading at once take turns: SQLite's write lock, or a PostgreSQL advisory lock."""
        with self._write() as connection:
            if not self.is_sqlite:
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        if self.is_sqlite and self.url.database and self.url.database != ":memory:":
            os.chmod(self.url.database, 0o600)

    def revision(self) -> str | None:
        """The schema revision the database is at (None before the first migration)."""
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def require_current(self) -> None:
        """Raise `RuntimeError` unless the schema is at the newest migration."""
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        current = self.revision()
        if current != head:
            raise RuntimeError(
                f"the database schema is at revision {current}, this code needs {head}: "
                "run `latent-gallery db upgrade` (LATENT_GALLERY_DATABASE_URL)"
            )

    # Images

    def insert(self, rows: list[tuple[ImageRecord, bytes]]) -> None:
        """Insert (record, delete key hash) rows in one transaction, in order."""
        values = [{**_values(record), "delete_key_hash": key_hash} for record, key_hash in rows]
        with self._write() as connection:
            connection.execute(images.insert(), values)

    def get(self, image_id: str) -> ImageRecord | None:
        """The record of an id, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(*_RECORD_COLUMNS).where(images.c.id == image_id)
            ).first()
        return ImageRecord(*row) if row else None

    def neighbours(self, image_id: str) -> tuple[str | None, str | None]:
        """The ids of the images just newer and just older than an id in gallery order (by
        `seq`), None at either end (both None for an unknown id)."""
        seq = sa.select(images.c.seq).where(images.c.id == image_id).scalar_subquery()
        newer = sa.select(images.c.id).where(images.c.seq > seq).order_by(images.c.seq)
        older = sa.select(images.c.id).where(images.c.seq < seq).order_by(images.c.seq.desc())
        with self.engine.connect() as connection:
            return connection.scalar(newer.limit(1)), connection.scalar(older.limit(1))

    def page(self, before: int | None, limit: int) -> list[tuple[int, ImageRecord]]:
        """Up to `limit` (seq, record) pairs with seq below `before`, newest first."""
        query = sa.select(images.c.seq, *_RECORD_COLUMNS).order_by(images.c.seq.desc())
        if before is not None:
            query = query.where(images.c.seq < before)
        with self.engine.connect() as connection:
            rows = connection.execute(query.limit(limit)).all()
        return [(row[0], ImageRecord(*row[1:])) for row in rows]

    def rows(self) -> Iterator[tuple[ImageRecord, bytes]]:
        """Every (record, delete key hash), oldest first."""
        query = sa.select(*_RECORD_COLUMNS, images.c.delete_key_hash).order_by(images.c.seq)
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                yield ImageRecord(*row[:-1]), bytes(row[-1])

    def delete(self, image_id: str, allowed: Callable[[bytes], bool]) -> bool:
        """Delete the row of an id if `allowed(its delete key hash)`; whether it was deleted."""
        with self._write() as connection:
            stored = connection.scalar(
                sa.select(images.c.delete_key_hash).where(images.c.id == image_id).with_for_update()
            )
            if stored is None or not allowed(bytes(stored)):
                return False
            connection.execute(images.delete().where(images.c.id == image_id))
        return True

    def ids(self) -> set[str]:
        """Every stored image id."""
        with self.engine.connect() as connection:
            return set(connection.scalars(sa.select(images.c.id)))

    def delete_ids(self, ids: set[str]) -> None:
        """Delete the rows of these ids, unconditionally."""
        with self._write() as connection:
            connection.execute(images.delete().where(images.c.id.in_(sorted(ids))))

    # Settings

    def settings(self) -> dict[str, str]:
        """Every name and value of the settings table."""
        with self.engine.connect() as connection:
            return dict(connection.execute(sa.select(settings.c.name, settings.c.value)).all())

    def setting(self, name: str, default: str) -> str:
        """The value of a setting, set to `default` first if it has none (first writer wins,
        also across nodes)."""
        with contextlib.suppress(sa.exc.IntegrityError), self._write() as connection:
            query = sa.select(settings.c.value).where(settings.c.name == name)
            if connection.scalar(query) is None:
                connection.execute(settings.insert().values(name=name, value=default))
        return self.settings()[name]

    def close(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction; a full disk becomes `StorageFullError`."""
        try:
            with self.engine.connect() as connection:
                connection.execution_options(write=True)
                with connection.begin():
                    yield connection
        except sa.exc.OperationalError as exc:
            if _disk_full(exc.orig):
                raise StorageFullError(errno.ENOSPC, "the disk is full") from exc
            raise


def _values(record: ImageRecord) -> dict[str, Any]:
    return dict(zip((f.name for f in fields(ImageRecord)), astuple(record), strict=True))


def _disk_full(error: BaseException | None) -> bool:
    return (
        getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or getattr(error, "sqlstate", None) == DISK_FULL_SQLSTATE
    )


def alembic_config() -> Config:
    """Alembic's configuration of this project's migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _sqlite_connect(connection: sqlite3.Connection, _record: Any) -> None:
    """No implicit transactions (begun in `_sqlite_begin`); the rollback journal, so that the
    data folder holds only the database file between transactions."""
    connection.isolation_level = None
    connection.execute("PRAGMA journal_mode=DELETE")
    connection.execute("PRAGMA synchronous=FULL")


def _sqlite_begin(connection: sa.Connection) -> None:
    write = connection.get_execution_options().get("write")
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
