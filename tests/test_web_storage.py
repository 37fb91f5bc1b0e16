"""Storage: only latents (and their store marker), one database and the secret key on disk;
atomic writes; repair (names from ids only, ownership: tests/test_storage_backends.py)."""

from __future__ import annotations

import errno
import logging
import os
import stat
import time

from tests.conftest import data_files, png_bytes, post_images, rows, snapshot, upload, wait_idle
from webapp.cache import ByteLRU
from webapp.gallery import get_gallery
from webapp.storage import STORE_MARKER, ImageStore


def test_after_n_uploads_the_data_folder_holds_n_latents_the_db_and_the_key(app, client):
    images = [upload(client, png_bytes(seed=seed)) for seed in range(5)]
    wait_idle(app)
    latents = [f"latents/{image['id']}.sdz" for image in images]
    expected = sorted(["gallery.sqlite3", f"latents/{STORE_MARKER}", *latents])
    assert data_files(app) == expected
    assert len(rows(app)) == 5


def test_secret_key_is_private_and_persistent(make_app):
    first = make_app()
    database = get_gallery(first).settings.data / "gallery.sqlite3"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert len(first.config["SECRET_KEY"]) >= 32
    assert make_app().config["SECRET_KEY"] == first.config["SECRET_KEY"]


def test_startup_never_removes_files_repair_does_after_the_grace(make_app, caplog):
    app = make_app()
    client = app.test_client()
    kept, lost = upload(client, png_bytes(seed=1)), upload(client, png_bytes(seed=2))
    wait_idle(app)
    latents = get_gallery(app).settings.data / "latents"
    (latents / f"{lost['id']}.sdz").unlink()  # a row without its file
    orphan = latents / "AAAAAAAAAAAAAAAAAAAAAA.sdz"
    orphan.write_bytes(b"no row")  # a file without a row: maybe a peer's upload in flight
    temp = latents / ".BBBBBBBBBBBBBBBBBBBBBB.sdz.1234abcd.tmp"
    temp.write_bytes(b"half")  # a crashed write

    app = make_app()  # a worker's start touches nothing
    assert orphan.exists() and temp.exists()
    store: ImageStore = get_gallery(app).store
    with caplog.at_level(logging.INFO, logger="webapp.storage"):
        young = store.repair()
    assert young == {"temp_files": 0, "orphan_files": 0, "orphan_rows": 1, "young_kept": 2}
    an_hour_ago = time.time() - 3601
    os.utime(temp, (an_hour_ago, an_hour_ago))
    assert store.repair() == {
        "temp_files": 1, "orphan_files": 0, "orphan_rows": 0, "young_kept": 1
    }  # fmt: skip
    assert "'orphan_rows': 1" in caplog.text
    assert store.repair(grace=0)["orphan_files"] == 1
    assert data_files(app) == sorted(
        ["gallery.sqlite3", f"latents/{STORE_MARKER}", f"latents/{kept['id']}.sdz"]
    )
    assert [row[1] for row in rows(app)] == [kept["id"]]
    assert app.test_client().get(f"/api/images/{lost['id']}").status_code == 404


def test_disk_full_is_507_and_writes_nothing(app, client, monkeypatch):
    upload(client)
    before = snapshot(app)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    response = post_images(client, (png_bytes(seed=3), "a.png"))
    monkeypatch.undo()
    assert response.status_code == 507
    assert "disk is full" in response.get_json()["error"]["message"]
    assert snapshot(app) == before


def test_uploads_never_touch_a_temp_file(client, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an upload was spooled to a temp file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(f"tempfile.{name}", refuse)
        monkeypatch.setattr(f"werkzeug.formparser.{name}", refuse, raising=False)
    big = png_bytes(1024, 768)  # ~2.4 MB: werkzeug's default spools parts over 500 KB
    assert post_images(client, (big, "big.png")).status_code == 201


def test_byte_lru_evicts_least_recently_used_by_bytes():
    cache = ByteLRU(10)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # "a" is now the most recent
    cache.put("c", b"1234")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"1234", None, b"1234")
    assert cache.bytes == 8
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None and len(cache) == 2
