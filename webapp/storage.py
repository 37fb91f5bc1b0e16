"""ImageStore: latent files in a blob store (folder | S3), their rows in a metadata store
(SQLite | PostgreSQL); no pixels, ever. Key hashing and page cursors live here, in neither store.

Correct with several nodes writing at once: an upload puts its file without overwriting, then
inserts its row in one transaction; a delete removes the row first, then the file. A crash
therefore leaves at worst a file without a row, which `repair()` (the `latent-gallery repair`
command, never a worker's startup) removes once it is older than a grace period, so that a
peer's upload between its file write and its row insert is never touched.

Repair deletes, so it works only on a blob store that proves to be this database's: one holding
the store marker (`.latent-gallery-store`) with the store id kept in the database's settings.
`prepare()` writes that marker where there is none and the blob store is provably ours: empty
with a database without images (a new gallery), or holding a latent of one of its images (a
gallery from before markers). A folder or prefix of another program, an empty one under a
database with images, or another database's store is never marked, and repair refuses it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from .blobs import TEMP_SUFFIX, BlobExistsError, BlobStore, StorageFullError, open_blobs
from .metadata import ImageRecord, MetadataStore

__all__ = [
    "ImageRecord",
    "ImageStore",
    "StorageFullError",
    "StoreOwnershipError",
]

log = logging.getLogger(__name__)

DB_FILE = "gallery.sqlite3"
LATENT_DIR = "latents"
SUFFIX = ".sdz"
DISPLAY_SUFFIX = ".display" + SUFFIX  # an image's display latent, beside its latent
REPAIR_GRACE_S = 3600.0
STORE_MARKER = ".latent-gallery-store"  # next to the latents; holds the database's store id
STORE_ID_SETTING = "store_id"
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16): 128 random bits


def hash_key(key: str) -> bytes:
    """The stored form of a delete key (keys are 192 random bits, so one SHA-256 suffices)."""
    return hashlib.sha256(key.encode()).digest()


def is_valid_id(image_id: str) -> bool:
    """Whether `image_id` has the shape of an id this store issues (names come from ids only)."""
    return bool(ID_PATTERN.fullmatch(image_id))


def blob_name(image_id: str, display: bool = False) -> str:
    """The blob name of an id's latent or `display` latent (the id is checked, so no name can
    escape the store)."""
    if not is_valid_id(image_id):
        raise ValueError(f"not an image id: {image_id!r}")
    return image_id + (DISPLAY_SUFFIX if display else SUFFIX)


def blob_names_of(record: ImageRecord) -> list[str]:
    """The blob names an image's files take: its latent, and its display latent if it has one."""
    displays = (False,) if record.display_bytes is None else (False, True)
    return [blob_name(record.id, display) for display in displays]


def image_id_of(name: str) -> str:
    """The image id a latent or display latent blob name belongs to."""
    return name.removesuffix(DISPLAY_SUFFIX).removesuffix(SUFFIX)


def database_url(data: Path, url: str = "") -> str:
    """`LATENT_GALLERY_DATABASE_URL`, by default the SQLite file in the data folder."""
    return url or f"sqlite:///{Path(data).resolve() / DB_FILE}"


def storage_url(data: Path, url: str = "") -> str:
    """`LATENT_GALLERY_STORAGE_URL`, by default the `latents` folder in the data folder."""
    return url or str(Path(data) / LATENT_DIR)


class StoreOwnershipError(RuntimeError):
    """The blob store holds no store marker matching this database, so it may not be ours."""


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
        default needs no extra step); another must already be at the newest migration. Then
        mark the blob store as this database's if it provably is (`claim`)."""
        if self.metadata.is_sqlite:
            self.metadata.upgrade()
        else:
            self.metadata.require_current()
        self.claim()

    def claim(self) -> None:
        """Write the store marker (this database's store id) if the blob store has none and is
        provably ours (see the module's docstring); otherwise leave it for repair to refuse."""
        if self._marker() is not None or not self._provably_ours():
            return
        with contextlib.suppress(BlobExistsError):  # a peer marked it at the same time
            self.blobs.put(STORE_MARKER, self.store_id().encode())
            log.info("marked %s as this database's store", self.blobs.url)

    def store_id(self) -> str:
        """The random id of this database's blob store, created on first use (first writer
        wins); the store marker holds it."""
        return self.metadata.setting(STORE_ID_SETTING, secrets.token_urlsafe(16))

    def add(
        self,
        latent: bytes,
        *,
        width: int,
        height: int,
        uploaded_bytes: int,
        method: str,
        image_id: str | None = None,
        source_size: tuple[int, int] | None = None,
        display: bytes | None = None,
    ) -> tuple[ImageRecord, str]:
        """Store a latent file (and a `display` latent file) as `image_id` (default: a new
        random id) of an image uploaded at `source_size` (if not its stored size); returns its
        record and the delete key (shown once). The files go first, never over others, then
        the row."""
        source = source_size if source_size != (width, height) else None
        record = ImageRecord(
            id=image_id or secrets.token_urlsafe(16),
            width=width,
            height=height,
            uploaded_bytes=uploaded_bytes,
            latent_bytes=len(latent),
            created_at=time.time(),
            method=method,
            source_width=source[0] if source else None,
            source_height=source[1] if source else None,
            display_bytes=len(display) if display is not None else None,
        )
        key = secrets.token_urlsafe(24)
        written = []
        try:
            for name, data in zip(blob_names_of(record), (latent, display), strict=False):
                self.blobs.put(name, data)
                written.append(name)
            self.metadata.insert([(record, hash_key(key))])
        except BaseException:
            for name in written:
                self.blobs.delete(name)
            raise
        return record, key

    def get(self, image_id: str) -> ImageRecord | None:
        """The record of an id, or None."""
        return self.metadata.get(image_id) if is_valid_id(image_id) else None

    def neighbours(self, image_id: str) -> tuple[str | None, str | None]:
        """The ids of the images just newer and just older than an id in gallery order (the
        gallery's previous and next), None at either end."""
        return self.metadata.neighbours(image_id) if is_valid_id(image_id) else (None, None)

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
        first, then the files. False if the key is wrong or the image is gone."""
        if not is_valid_id(image_id):
            return False
        given = hash_key(key or "")
        if not self.metadata.delete(image_id, lambda stored: hmac.compare_digest(given, stored)):
            return False
        for display in (False, True):
            self.blobs.delete(blob_name(image_id, display))
        return True

    def read_latent(self, image_id: str, display: bool = False) -> bytes:
        """The bytes of an image's latent file, or of its `display` latent file
        (`FileNotFoundError` if it is gone)."""
        return self.blobs.get(blob_name(image_id, display))

    def secret_key(self) -> str:
        """The session key kept in the database, created on first use (first writer wins)."""
        return self.metadata.setting("secret_key", secrets.token_urlsafe(32))

    def repair(self, grace: float = REPAIR_GRACE_S) -> dict[str, int]:
        """Remove files without a row (and temp files) older than `grace` seconds, and rows
        without a file; counts, logged. The rows are read before the files are listed, so a
        row committed meanwhile always finds its file. `StoreOwnershipError` (nothing removed)
        unless the blob store holds this database's store marker."""
        problem = self._ownership_problem()
        if problem:
            raise StoreOwnershipError(f"refusing to repair: {problem}")
        ids = self.metadata.ids()
        counts = {"temp_files": 0, "orphan_files": 0, "orphan_rows": 0, "young_kept": 0}
        found, oldest = set(), time.time() - grace
        for name, modified in self.blob_names():
            image_id = image_id_of(name)
            if name.endswith(SUFFIX) and image_id in ids:
                if not name.endswith(DISPLAY_SUFFIX):
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

    def blob_names(self) -> Iterator[tuple[str, float]]:
        """`blobs.names()` without the store marker: the latent files and temp files."""
        return ((name, modified) for name, modified in self.blobs.names() if name != STORE_MARKER)

    def _marker(self) -> str | None:
        """The store id in the blob store's marker, or None if it has none."""
        try:
            return self.blobs.get(STORE_MARKER).decode(errors="replace").strip()
        except FileNotFoundError:
            return None

    def _recorded_id(self) -> str | None:
        """This database's store id, or None if it has none yet (never creates one)."""
        return self.metadata.settings().get(STORE_ID_SETTING)

    def _provably_ours(self) -> bool:
        """Whether the blob store is empty under a database without images, or holds a latent
        of one of the database's images (random ids: no other program names files so)."""
        ids = self.metadata.ids()
        names = (name for name, _ in self.blob_names())
        if not ids:
            return next(names, None) is None
        return any(name.removesuffix(SUFFIX) in ids for name in names if name.endswith(SUFFIX))

    def _ownership_problem(self) -> str | None:
        """Why the blob store may not be this database's, or None if its marker says it is."""
        marker = self._marker()
        if marker is not None and marker == self._recorded_id():
            return None
        why = "it has none" if marker is None else "its marker is another database's"
        return f"{self.blobs.url} has no Latent Gallery store marker matching this database ({why})"


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
