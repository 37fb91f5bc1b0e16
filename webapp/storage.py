"""ImageStore: latent files in a blob store (folder | S3), their rows in a metadata store
(SQLite | PostgreSQL); no pixels, ever. Key hashing and page cursors live here, in neither store.

Correct with several nodes writing at once: an upload puts its file without overwriting, then
inserts its row in one transaction; a delete removes the row first, then the file. A crash
therefore leaves at worst a file without a row, which `repair()` (the `latent-gallery repair`
command, never a worker's startup) removes once it is older than a grace period, so that a
peer's upload between its file write and its row insert is never touched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import time
from pathlib import Path

from flask import abort, current_app

from .blobs import TEMP_SUFFIX, BlobStore, StorageFullError, open_blobs
from .metadata import ImageRecord, MetadataStore

__all__ = ["ImageRecord", "ImageStore", "StorageFullError", "get_record_or_404", "get_store"]

log = logging.getLogger(__name__)

DB_FILE = "gallery.sqlite3"
LATENT_DIR = "latents"
SUFFIX = ".sdz"
REPAIR_GRACE_S = 3600.0
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")  # secrets.token_urlsafe(16): 128 random bits


def hash_key(key: str) -> bytes:
    """The stored form of a delete key (keys are 192 random bits, so one SHA-256 suffices)."""
    return hashlib.sha256(key.encode()).digest()


def is_valid_id(image_id: str) -> bool:
    """Whether `image_id` has the shape of an id this store issues (names come from ids only)."""
    return bool(ID_PATTERN.match(image_id))


def blob_name(image_id: str) -> str:
    """The blob name of an id (the id is checked, so no name can escape the store)."""
    if not is_valid_id(image_id):
        raise ValueError(f"not an image id: {image_id!r}")
    return f"{image_id}{SUFFIX}"


def database_url(data: Path, url: str = "") -> str:
    """`LATENT_GALLERY_DATABASE_URL`, by default the SQLite file in the data folder."""
    return url or f"sqlite:///{Path(data).resolve() / DB_FILE}"


def storage_url(data: Path, url: str = "") -> str:
    """`LATENT_GALLERY_STORAGE_URL`, by default the `latents` folder in the data folder."""
    return url or str(Path(data) / LATENT_DIR)


class ImageStore:
    """Images: a blob store for the latent files and a metadata store for their rows."""

    def __init__(self, blobs: BlobStore, metadata: MetadataStore) -> None:
        self.blobs = blobs
        self.metadata = metadata

    @classmethod
    def open(cls, data: Path, database: str = "", storage: str = "") -> ImageStore:
        """The store of a data folder and the two URLs (empty: the data folder's defaults)."""
        return cls(
            open_blobs(storage_url(data, storage)), MetadataStore(database_url(data, database))
        )

    def prepare(self) -> None:
        """Ready the schema at startup: a SQLite database upgrades itself (the single-node
        default needs no extra step); another must already be at the newest migration."""
        if self.metadata.is_sqlite:
            self.metadata.upgrade()
        else:
            self.metadata.require_current()

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
        the delete key (shown once). The file goes first, never over another, then the row."""
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
        name = blob_name(record.id)
        self.blobs.put(name, latent)
        try:
            self.metadata.insert([(record, hash_key(key))])
        except BaseException:
            self.blobs.delete(name)
            raise
        return record, key

    def get(self, image_id: str) -> ImageRecord | None:
        """The record of an id, or None."""
        return self.metadata.get(image_id) if is_valid_id(image_id) else None

    def list_images(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[ImageRecord], str | None]:
        """Up to `limit` records, newest first, after `cursor`; and the cursor of the next page
        (None on the last). An unreadable cursor raises `ValueError`."""
        before = _decode_cursor(cursor) if cursor else None
        rows = self.metadata.page(before, limit + 1)
        next_cursor = _encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
        return [record for _, record in rows[:limit]], next_cursor

    def delete(self, image_id: str, key: str | None) -> bool:
        """Delete an image if `key` is its delete key (constant-time check); the row goes
        first, then the file. False if the key is wrong or the image is gone."""
        if not is_valid_id(image_id):
            return False
        given = hash_key(key or "")
        if not self.metadata.delete(image_id, lambda stored: hmac.compare_digest(given, stored)):
            return False
        self.blobs.delete(blob_name(image_id))
        return True

    def read_latent(self, image_id: str) -> bytes:
        """The bytes of an image's latent file (`FileNotFoundError` if it is gone)."""
        return self.blobs.get(blob_name(image_id))

    def secret_key(self) -> str:
        """The session key kept in the database, created on first use (first writer wins)."""
        return self.metadata.setting("secret_key", secrets.token_urlsafe(32))

    def repair(self, grace: float = REPAIR_GRACE_S) -> dict[str, int]:
        """Remove files without a row (and temp files) older than `grace` seconds, and rows
        without a file; counts, logged. The rows are read before the files are listed, so a
        row committed meanwhile always finds its file."""
        ids = self.metadata.ids()
        counts = {"temp_files": 0, "orphan_files": 0, "orphan_rows": 0, "young_kept": 0}
        found, oldest = set(), time.time() - grace
        for name, modified in self.blobs.names():
            image_id = name.removesuffix(SUFFIX)
            if name.endswith(SUFFIX) and image_id in ids:
                found.add(image_id)
                continue
            if modified > oldest:
                counts["young_kept"] += 1
                continue
            kind = "temp_files" if name.endswith(TEMP_SUFFIX) else "orphan_files"
            counts[kind] += 1
            log.warning("removing %s (%s)", name, kind.replace("_", " ").removesuffix("s"))
            self.blobs.delete(name)
        missing = ids - found
        if missing:
            log.warning("removing %d rows without a latent file: %s", len(missing), sorted(missing))
            self.metadata.delete_ids(missing)
        counts["orphan_rows"] = len(missing)
        log.info("storage check: %d images, repaired %s", len(found), counts)
        return counts


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


def get_store() -> ImageStore:
    """The current app's store."""
    return current_app.extensions["latent_gallery.store"]


def get_record_or_404(image_id: str) -> ImageRecord:
    """The record of an id, or a 404."""
    return get_store().get(image_id) or abort(404, "No image has this id.")
