"""ImageStore: latent files in `<data>/latents/`, metadata rows in SQLite; no pixels, ever.

Crash safety: a write puts the latent in a temp file in the same folder, fsyncs it, renames
it into place and fsyncs the folder, and only then inserts the row in one transaction; a
delete removes the row first, then the file. A crash therefore leaves at worst a file
without a row (or a temp file), which `repair()` removes at startup; a row never points at a
missing or half-written file (and if one does, e.g. after manual deletion, `repair()` drops it).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flask import abort, current_app

log = logging.getLogger(__name__)

LATENT_DIR = "latents"
SUFFIX = ".sdz"
TEMP_SUFFIX = ".tmp"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")  # secrets.token_urlsafe(16): 128 random bits
_FIELDS = ("id", "width", "height", "uploaded_bytes", "latent_bytes", "created_at", "method")
_COLUMNS = ", ".join(_FIELDS)
_INSERT = f"INSERT INTO images ({_COLUMNS}, delete_key_hash) VALUES ({', '.join('?' * 8)})"


class StorageFullError(OSError):
    """The disk is full; nothing was written."""


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

    @property
    def bits_per_pixel(self) -> float:
        """Stored bits per pixel of the image."""
        return self.latent_bytes * 8 / (self.width * self.height)

    @property
    def ratio(self) -> float:
        """How many times smaller the stored latent is than the upload."""
        return self.uploaded_bytes / self.latent_bytes


def hash_key(key: str) -> bytes:
    """The stored form of a delete key (keys are 192 random bits, so one SHA-256 suffices)."""
    return hashlib.sha256(key.encode()).digest()


def is_valid_id(image_id: str) -> bool:
    """Whether `image_id` has the shape of an id this store issues (paths come from ids only)."""
    return bool(ID_PATTERN.match(image_id))


class ImageStore:
    """Latent files and their rows; `db` returns the SQLite connection to use."""

    def __init__(self, data: Path, db: Callable[[], sqlite3.Connection]) -> None:
        self.folder = Path(data) / LATENT_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self._db = db

    def path_of(self, image_id: str) -> Path:
        """The latent file of an id (the id is checked, so no path can escape the folder)."""
        if not is_valid_id(image_id):
            raise ValueError(f"not an image id: {image_id!r}")
        return self.folder / f"{image_id}{SUFFIX}"

    def add(
        self,
        latent: bytes,
        *,
        width: int,
        height: int,
        uploaded_bytes: int,
        method: str,
        image_id: str | None = None,
    ) -> tuple[ImageRecord, str]:
        """Store a latent file as `image_id` (default: a new random id); returns its record and
        the delete key (shown once)."""
        record = ImageRecord(
            id=image_id or secrets.token_urlsafe(16),
            width=width,
            height=height,
            uploaded_bytes=uploaded_bytes,
            latent_bytes=len(latent),
            created_at=time.time(),
            method=method,
        )
        key = secrets.token_urlsafe(24)
        path = self.path_of(record.id)
        self._write_atomic(path, latent)
        try:
            with self._transaction() as db:
                db.execute(_INSERT, (*_row_values(record), hash_key(key)))
        except BaseException as exc:
            _unlink(path)
            full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            if full:
                raise StorageFullError(errno.ENOSPC, "the disk is full") from exc
            raise
        return record, key

    def get(self, image_id: str) -> ImageRecord | None:
        """The record of an id, or None."""
        if not is_valid_id(image_id):
            return None
        row = (
            self._db()
            .execute(f"SELECT {_COLUMNS} FROM images WHERE id = ?", (image_id,))
            .fetchone()
        )
        return _record_of(row) if row else None

    def list_images(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[ImageRecord], str | None]:
        """Up to `limit` records, newest first, after `cursor`; and the cursor of the next page
        (None on the last). An unreadable cursor raises `ValueError`."""
        before = _decode_cursor(cursor) if cursor else None
        rows = (
            self._db()
            .execute(
                f"SELECT seq, {_COLUMNS} FROM images WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (before if before is not None else 2**63 - 1, limit + 1),
            )
            .fetchall()
        )
        records = [_record_of(row) for row in rows[:limit]]
        next_cursor = _encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return records, next_cursor

    def delete(self, image_id: str, key: str | None) -> bool:
        """Delete an image if `key` is its delete key (constant-time check); the row goes
        first, then the file. False if the key is wrong or the image is gone."""
        given = hash_key(key or "")
        with self._transaction() as db:
            query = "SELECT delete_key_hash FROM images WHERE id = ?"
            row = db.execute(query, (image_id,)).fetchone()
            if row is None or not hmac.compare_digest(given, bytes(row["delete_key_hash"])):
                return False
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        _unlink(self.path_of(image_id))
        _fsync_dir(self.folder)
        return True

    def read_latent(self, image_id: str) -> bytes:
        """The bytes of an image's latent file (`FileNotFoundError` if it is gone)."""
        return self.path_of(image_id).read_bytes()

    def repair(self) -> dict[str, int]:
        """Remove temp files, files without a row and rows without a file; counts, logged."""
        ids = {row["id"] for row in self._db().execute("SELECT id FROM images")}
        counts = {"temp_files": 0, "orphan_files": 0, "orphan_rows": 0}
        on_disk = set()
        for path in self.folder.iterdir():
            image_id = path.name.removesuffix(SUFFIX)
            if path.name.endswith(SUFFIX) and image_id in ids:
                on_disk.add(image_id)
                continue
            kind = "temp_files" if path.name.endswith(TEMP_SUFFIX) else "orphan_files"
            counts[kind] += 1
            log.warning("removing %s (%s)", path, kind.replace("_", " ").removesuffix("s"))
            _unlink(path)
        missing = ids - on_disk
        if missing:
            log.warning("removing %d rows without a latent file: %s", len(missing), sorted(missing))
            with self._transaction() as db:
                db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in missing])
        counts["orphan_rows"] = len(missing)
        log.info("storage check: %d images, repaired %s", len(on_disk), counts)
        return counts

    @contextlib.contextmanager
    def _transaction(self):
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _write_atomic(self, path: Path, data: bytes) -> None:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
            _fsync_dir(self.folder)
        except BaseException as exc:
            _unlink(temp)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(exc.errno, "the disk is full") from exc
            raise


def _record_of(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(*(row[name] for name in _FIELDS))


def _row_values(record: ImageRecord) -> tuple:
    return (record.id, record.width, record.height, record.uploaded_bytes, record.latent_bytes,
            record.created_at, record.method)  # fmt: skip


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, seq = text.split(":")
        if version != "v1":
            raise ValueError
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"invalid cursor {cursor!r}") from None


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def get_store() -> ImageStore:
    """The current app's store (its queries use this request's database connection)."""
    return current_app.extensions["latent_gallery.store"]


def get_record_or_404(image_id: str) -> ImageRecord:
    """The record of an id, or a 404."""
    return get_store().get(image_id) or abort(404, "No image has this id.")
