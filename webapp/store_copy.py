"""`copy-store`: copy a gallery's latent files and rows to another blob store and/or database
(folder -> S3 and back, SQLite -> PostgreSQL), as pict-rs does.

Resumable: a file the target already holds with the same SHA-256 and a row whose id it already
has are skipped, so a second run after a crash finishes the job. Concurrent: files are copied by
a thread pool. Rows are inserted in their original order (newest stays newest). Verified at the
end: every image copied has its row in the target and a file with the source's checksum.
The store marker is not copied: the target gets its own, with the target database's store id.
Run it while the source takes no writes (a stopped gallery, or before switching the URLs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from .blobs import BlobExistsError
from .metadata import ImageRecord
from .storage import ImageStore, blob_names_of

ROW_BATCH = 500


class StoreCopyError(RuntimeError):
    """The copy cannot go on, or its result does not verify."""


@dataclass
class StoreCopyReport:
    """What a copy did."""

    images: int = 0
    files_copied: int = 0
    files_present: int = 0
    rows_copied: int = 0
    rows_present: int = 0
    missing: int = 0

    def summary(self) -> str:
        """One line for the command's output."""
        return (
            f"{self.images} images copied and verified: {self.files_copied} files copied, "
            f"{self.files_present} already there; {self.rows_copied} rows copied, "
            f"{self.rows_present} already there; {self.missing} without a file skipped"
        )


def copy_store(
    source: ImageStore, target: ImageStore, *, workers: int = 8, skip_missing: bool = False
) -> StoreCopyReport:
    """Copy every image of `source` (file and row) into `target`, verify, then give the target
    its store marker if it has none (it now holds the database's latents, so repair accepts it)."""
    same_blobs = source.blobs.url == target.blobs.url
    same_rows = _database(source) == _database(target)
    if same_blobs and same_rows:
        raise StoreCopyError("the source and the target are the same store")
    target.metadata.upgrade()
    rows = list(source.metadata.rows())
    report = StoreCopyReport()
    with ThreadPoolExecutor(workers) as pool:
        copies = pool.map(lambda row: _copy_file(source, target, row[0], same_blobs), rows)
        checksums = dict(_progress(copies, len(rows), "files"))
    missing = [record.id for record, _ in rows if checksums[record.id] is None]
    if missing and not skip_missing:
        raise StoreCopyError(
            f"{len(missing)} images have no latent file in {source.blobs.url} "
            f"(e.g. {missing[0]}); --skip-missing leaves them out"
        )
    report.missing = len(missing)
    report.files_copied = sum(entry[0] for entry in checksums.values() if entry)
    if not same_rows:
        _copy_rows(source, target, [row for row in rows if checksums[row[0].id]], report)
    records = {record.id: record for record, _ in rows}
    expected = {
        image_id: (records[image_id], entry[1]) for image_id, entry in checksums.items() if entry
    }
    with ThreadPoolExecutor(workers) as pool:
        _verify(target, expected, pool)
    target.claim()
    report.images = len(expected)
    report.files_present = report.images - report.files_copied
    return report


def _copy_file(
    source: ImageStore, target: ImageStore, record: ImageRecord, same: bool
) -> tuple[str, tuple[bool, str] | None]:
    """(id, (whether any file was copied, SHA-256 of its files)), or (id, None) if the source
    lacks one of its files."""
    names = blob_names_of(record)
    try:
        files = [source.blobs.get(name) for name in names]
    except FileNotFoundError:
        return record.id, None
    checksum = _checksum(files)
    if same:
        return record.id, (False, checksum)
    copied = False
    for name, data in zip(names, files, strict=True):
        try:
            target.blobs.put(name, data)
            copied = True
        except BlobExistsError:
            if target.blobs.get(name) != data:
                raise StoreCopyError(
                    f"{name} differs in {target.blobs.url} from {source.blobs.url}"
                ) from None
    return record.id, (copied, checksum)


def _checksum(files: list[bytes]) -> str:
    """The SHA-256 of an image's files, in `blob_names_of` order."""
    digest = hashlib.sha256()
    for data in files:
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def _copy_rows(
    source: ImageStore,
    target: ImageStore,
    rows: list[tuple[ImageRecord, bytes]],
    report: StoreCopyReport,
) -> None:
    """Insert the rows the target lacks, oldest first, and the settings (the session key)."""
    present = target.metadata.ids()
    new = [row for row in rows if row[0].id not in present]
    report.rows_present = len(rows) - len(new)
    for start in _progress(range(0, len(new), ROW_BATCH), len(new), "rows", ROW_BATCH):
        target.metadata.insert(new[start : start + ROW_BATCH])
    report.rows_copied = len(new)
    for name, value in source.metadata.settings().items():
        target.metadata.setting(name, value)


def _verify(
    target: ImageStore, expected: dict[str, tuple[ImageRecord, str]], pool: ThreadPoolExecutor
) -> None:
    """Counts and checksums: every id has its row and files with the expected SHA-256."""
    lacking = set(expected) - target.metadata.ids()
    if lacking:
        raise StoreCopyError(f"{len(lacking)} rows missing in the target, e.g. {min(lacking)}")

    def checksum(image_id: str) -> tuple[str, str | None]:
        try:
            names = blob_names_of(expected[image_id][0])
            return image_id, _checksum([target.blobs.get(name) for name in names])
        except FileNotFoundError:
            return image_id, None

    found = dict(_progress(pool.map(checksum, expected), len(expected), "verified"))
    wrong = sorted(image_id for image_id, value in found.items() if value != expected[image_id][1])
    if wrong:
        raise StoreCopyError(f"{len(wrong)} files missing or different in the target: {wrong[0]}")


def _database(store: ImageStore) -> str:
    return store.metadata.url.render_as_string(hide_password=False)


def _progress(items: Iterable, total: int, unit: str, step: int = 1) -> Iterable:
    """`items` with a progress bar on stderr (when it is a terminal)."""
    bar = tqdm(total=total, unit=unit, disable=None, leave=False)
    with bar:
        for item in items:
            yield item
            bar.update(min(step, total - bar.n))
