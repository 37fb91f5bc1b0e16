"""Blob stores for latent files: a local folder or an S3 bucket, behind one small protocol.

A blob is written once and never overwritten (`put` raises `BlobExistsError` if its name is
taken), so two nodes can never replace each other's file. `names()` lists every object with its
last-modified time, so that repair can leave young objects (uploads in flight) alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

TEMP_SUFFIX = ".tmp"


class StorageFullError(OSError):
    """The disk (or the database's disk) is full; nothing was written."""


class BlobExistsError(FileExistsError):
    """A blob of that name is already stored (blobs are never overwritten)."""


class BlobStore(Protocol):
    """Where latent files live. Names are plain file names (`<id>.sdz`), never paths."""

    url: str

    def put(self, name: str, data: bytes) -> None:
        """Store `data` under a new name; `BlobExistsError` if the name is taken."""

    def get(self, name: str) -> bytes:
        """The blob's bytes; `FileNotFoundError` if there is none."""

    def delete(self, name: str) -> None:
        """Remove the blob (nothing happens if it is gone already)."""

    def names(self) -> Iterator[tuple[str, float]]:
        """Every stored object's name and last-modified time (Unix seconds), temp files too."""


class FolderBlobs:
    """Blobs as files in one folder: written to a temp file, fsynced, then linked into place
    (`os.link` fails if the name exists, so nothing is ever overwritten)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.url = str(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def put(self, name: str, data: bytes) -> None:
        path = self.folder / name
        temp = self.folder / f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        linked = False
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temp, path)
            except FileExistsError:
                raise BlobExistsError(errno.EEXIST, "a blob of this name exists", name) from None
            linked = True
            _unlink(temp)
            _fsync_dir(self.folder)
        except BaseException as exc:
            _unlink(temp)
            if linked:
                _unlink(path)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(exc.errno, "the disk is full") from exc
            raise

    def get(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def delete(self, name: str) -> None:
        _unlink(self.folder / name)
        _fsync_dir(self.folder)

    def names(self) -> Iterator[tuple[str, float]]:
        for entry in os.scandir(self.folder):
            with contextlib.suppress(FileNotFoundError):
                yield entry.name, entry.stat().st_mtime


class S3Blobs:
    """Blobs as objects under `prefix` in an S3 bucket, through plain boto3: the endpoint,
    credentials and region come from the standard AWS variables (`AWS_ENDPOINT_URL`, ...), so
    AWS S3, MinIO, Ceph RGW and R2 work alike. `put` sends `If-None-Match: *`."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.client = client or boto3.session.Session().client("s3")

    def put(self, name: str, data: bytes) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.prefix + name, Body=data, IfNoneMatch="*"
            )
        except self.client.exceptions.ClientError as exc:
            if _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise BlobExistsError(errno.EEXIST, "a blob of this name exists", name) from None
            raise

    def get(self, name: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
        except self.client.exceptions.ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise FileNotFoundError(errno.ENOENT, "no such blob", name) from None
            raise
        return response["Body"].read()

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)

    def names(self) -> Iterator[tuple[str, float]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                modified: datetime = item["LastModified"]
                yield item["Key"][len(self.prefix) :], modified.timestamp()


def open_blobs(url: str) -> BlobStore:
    """The blob store of a `LATENT_GALLERY_STORAGE_URL`: `s3://bucket/prefix` or a folder."""
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"LATENT_GALLERY_STORAGE_URL={url!r}: expected s3://bucket/prefix")
        return S3Blobs(parts.netloc, parts.path)
    if "://" in url:
        raise ValueError(
            f"LATENT_GALLERY_STORAGE_URL={url!r}: expected a folder or s3://bucket/prefix"
        )
    return FolderBlobs(Path(url))


def _error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
